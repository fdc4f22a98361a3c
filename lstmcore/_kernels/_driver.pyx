"""The sequence driver: everything sequence-level, once, for every cell; a cell is only its element-wise step.

Forward, for one direction of one layer (a cell described by a ``CellKernel``, see ``_driver.pxd``):

    pre[t]   = x_t W^T + b                                  one product for all steps, into the input blocks
    per step t, on a persistent team of threads (each owns a slice of the hidden units of every block and vector):
      stage 0: pre[t, blocks] += carried_{t-1}[vectors] M^T  for each stage-0 recurrent weight M (packed once per call)
               step(stage 0)                                 element-wise: activations, new carried row, output
      stage 1: pre[t, blocks] += V_t[vectors] M^T            (two-stage cells: V_t written by stage 0, e.g. f * h)
               step(stage 1)
      a barrier: every thread's slice of the carried row is complete before the next step's product reads all of it
Backward (BPTT), the same in reverse:
      step backward(last stage) -> d_pre; [d_V = d_pre M for stage-1 weights; step backward(stage 0)];
      d_carried_{t-1} = (what the step passed straight through) + d_pre[t, blocks] M    for stage-0 weights
    then one product each for dW = d_pre^T x, every dM = d_pre[blocks]^T input[vectors], dx = d_pre W, and the
    bias reduction db = sum_t d_pre (by the team, per unit, in a fixed order).

Lengths: a padded step (t >= lengths[b]) copies the carried row, writes a zero output and, in BPTT, a zero delta, so
the state's gradient passes through it; the reverse direction starts at each sequence's last real step. Carried rows
are kept for all steps, ``carried`` (T+1, B, S): forward slot 0 initial, slot t+1 after step t; reverse: slot T
initial, slot t after step t.

Threads: the team size is the BLAS's thread count (``threadpoolctl.threadpool_limits``, ``OPENBLAS_NUM_THREADS``),
capped by the CPUs and by the work of a step (``MIN_STEP_FLOPS_PER_THREAD``). For a given team size every number is
computed by the same thread in the same order: results are bitwise reproducible.
"""
cimport cython
from cython cimport floating
from libc.string cimport memcmp, memcpy, memset

import threading

import numpy as np
cimport numpy as cnp

cnp.import_array()

from scipy.linalg.cython_blas cimport sgemm
from lstmcore._kernels._blas cimport small_gemm, small_gemm_set, small_gemm_at, small_gemm_at_scratch, pack_panels


cdef extern from "lstmcore_team.h" nogil:
    ctypedef void (*lc_team_fn)(void *ctx, int tid, int nthreads) noexcept nogil
    int lc_team_run(int n, lc_team_fn fn, void *ctx)
    void lc_team_barrier()
    int lc_blas_threads(const void *fn)
    int lc_cpu_count()
    int LC_TEAM_MAX


#: A team member gets at least this many floating-point operations of the per-step recurrence (else the barrier
#: costs more than the split saves; measured on 2 cores, see docs/kernels.md).
MIN_STEP_FLOPS_PER_THREAD = 200_000
#: Hidden units are split between threads in multiples of this (whole vector panels of the small GEMM).
cdef Py_ssize_t UNIT_ALIGN = 8
#: Rows of the input projection and of dx per block of the small GEMM (the block of A stays in cache while every
#: panel of the weights passes).
cdef Py_ssize_t ROW_BLOCK = 256
#: Free workspaces kept per dtype for the next calls.
MAX_POOLED_WORKSPACES = 16


cdef class CellKernel:
    """The C-level description of a cell (``desc``, see ``_driver.pxd``). Subclass it in Cython; the driver checks
    ``desc`` before each call, so an inconsistent description raises instead of corrupting memory."""

    @property
    def description(self):
        """The description as a dict (for tests and error messages)."""
        d = self.desc
        return dict(n_blocks=d.n_blocks, n_input_blocks=d.n_input_blocks, n_carried=d.n_carried,
                    state_vectors=tuple(d.state_vector[k] for k in range(min(d.n_states, MAX_VECTORS))),
                    n_cache=d.n_cache, n_stage_input=d.n_stage_input, n_params=d.n_params, n_mask=d.n_mask,
                    n_stages=d.n_stages,
                    whole_rows=bool(d.whole_rows),
                    recurrent=tuple(dict(stage=d.recurrent[k].stage, first_block=d.recurrent[k].first_block,
                                         n_blocks=d.recurrent[k].n_blocks, first_vector=d.recurrent[k].first_vector,
                                         n_vectors=d.recurrent[k].n_vectors)
                                    for k in range(min(max(d.n_recurrent, 0), MAX_RECURRENT))))


# -- the plan of a call: where every block's packed weights lie --------------------------------------------------------
cdef struct Plan:
    Py_ssize_t H, G, S, C, V, P, GIH, M
    Py_ssize_t proj                             # P' of a projection r_t = out_t W_proj^T (0: none); the carried row
                                                # is then [r (proj wide) | the cell's vectors], see _column
    int block_stage[MAX_BLOCKS]                 # the stage whose weights add into the block; -1: none
    Py_ssize_t block_k0[MAX_BLOCKS]             # forward: the block's product reads input columns k0 .. k0+K-1
    Py_ssize_t block_K[MAX_BLOCKS]
    Py_ssize_t block_offset[MAX_BLOCKS]         # its packed (K x H) operand in packed_fwd
    Py_ssize_t vector_k0[2][MAX_VECTORS]        # backward: input vector q gets d_pre columns k0 .. k0+K-1 times M
    Py_ssize_t vector_K[2][MAX_VECTORS]         # 0: no weight reads the vector
    Py_ssize_t vector_offset[2][MAX_VECTORS]
    Py_ssize_t packed_fwd, packed_bwd           # sizes
    Py_ssize_t step_flops                       # of the recurrent products of one step, forward


cdef inline int _check(bint ok, str message) except -1:
    if not ok:
        raise ValueError(message)
    return 0


cdef inline Py_ssize_t _column(const Plan *p, int stage, Py_ssize_t q) noexcept nogil:
    """The first column of input vector q of a stage's recurrent weights in its row (with a projection, vector 0 of
    the carried row is r, at columns 0 .. proj-1, and the cell's own vectors follow it)."""
    if stage == 1 or p.proj == 0:
        return q * p.H
    return 0 if q == 0 else p.proj + q * p.H


cdef inline Py_ssize_t _width(const Plan *p, int stage, Py_ssize_t q) noexcept nogil:
    """The width of input vector q of a stage's recurrent weights: H, or proj for the projection r."""
    return p.proj if stage == 0 and q == 0 and p.proj > 0 else p.H


cdef inline Py_ssize_t _weight_columns(const Plan *p, const RecurrentWeight *w) noexcept nogil:
    """The columns of a recurrent weight: the widths of the vectors it reads."""
    cdef Py_ssize_t last = w.first_vector + w.n_vectors - 1
    return _column(p, w.stage, last) + _width(p, w.stage, last) - _column(p, w.stage, w.first_vector)


cdef struct PlanCacheEntry:
    bint used
    CellDesc desc
    Py_ssize_t H, B, proj
    Plan plan

#: The last plans made, reused while the description and shape match (checking and laying out a plan on every call
#: was a tenth of a one-step call). Only touched with the GIL held, which is never released in between.
cdef enum:
    PLAN_CACHE_SIZE = 8
cdef PlanCacheEntry _plan_cache[PLAN_CACHE_SIZE]
cdef int _plan_cache_next = 0


cdef Plan _plan(const CellDesc *d, Py_ssize_t H, Py_ssize_t B, Py_ssize_t proj=0) except *:
    """``_build_plan``'s plan, from the cache when an identical description (byte for byte) had one for this shape."""
    global _plan_cache_next
    cdef int i
    for i in range(PLAN_CACHE_SIZE):
        if (_plan_cache[i].used and _plan_cache[i].H == H and _plan_cache[i].B == B and _plan_cache[i].proj == proj
                and memcmp(&_plan_cache[i].desc, d, sizeof(CellDesc)) == 0):
            return _plan_cache[i].plan
    cdef Plan plan = _build_plan(d, H, B, proj)  # raises for a bad description: nothing cached
    i = _plan_cache_next
    _plan_cache_next = (i + 1) % PLAN_CACHE_SIZE
    memcpy(&_plan_cache[i].desc, d, sizeof(CellDesc))  # every byte, padding included, as memcmp compares
    _plan_cache[i].used, _plan_cache[i].plan = True, plan
    _plan_cache[i].H, _plan_cache[i].B, _plan_cache[i].proj = H, B, proj
    return plan


cdef Plan _build_plan(const CellDesc *d, Py_ssize_t H, Py_ssize_t B, Py_ssize_t proj=0) except *:
    """Check a cell's description (every number the kernels index with) and lay out its packed weights; ``proj``
    > 0 for a projected output."""
    cdef Plan p
    cdef Py_ssize_t k, b, q, s, lo, hi, n_inputs
    cdef const RecurrentWeight *w
    _check(1 <= d.n_blocks <= MAX_BLOCKS, f"cell: n_blocks must be 1 .. {MAX_BLOCKS}")
    _check(1 <= d.n_input_blocks <= d.n_blocks, "cell: n_input_blocks must be 1 .. n_blocks")
    _check(1 <= d.n_carried <= MAX_VECTORS, f"cell: n_carried must be 1 .. {MAX_VECTORS}")
    _check(1 <= d.n_states <= d.n_carried, "cell: n_states must be 1 .. n_carried")
    cdef bint seen[MAX_VECTORS]
    for k in range(MAX_VECTORS):
        seen[k] = False
    for k in range(d.n_states):
        q = d.state_vector[k]
        _check(0 <= q < d.n_carried and not seen[q], "cell: state_vector must name distinct carried vectors")
        seen[q] = True
    _check(d.n_cache >= 0 and d.n_params >= 0 and d.n_stage_input >= 0 and d.n_mask >= 0, "cell: negative sizes")
    _check(d.n_stages in (1, 2) and (d.n_stages == 2) == (d.n_stage_input > 0),
           "cell: n_stages must be 1, or 2 with n_stage_input > 0")
    _check(0 <= d.n_recurrent <= MAX_RECURRENT, f"cell: n_recurrent must be 0 .. {MAX_RECURRENT}")
    _check(proj == 0 or (d.n_stages == 1 and not d.whole_rows),
           "a projection needs a one-stage cell whose step splits units (not whole_rows)")
    p.proj = proj
    p.H, p.G, p.S = H, d.n_blocks * H, proj + d.n_carried * H
    p.C, p.V, p.P, p.GIH = d.n_cache * H, d.n_stage_input * H, d.n_params * H, d.n_input_blocks * H
    p.M = d.n_mask * H
    for b in range(MAX_BLOCKS):
        p.block_stage[b], p.block_k0[b], p.block_K[b], p.block_offset[b] = -1, 0, 0, 0
    for s in range(2):
        for q in range(MAX_VECTORS):
            p.vector_k0[s][q], p.vector_K[s][q], p.vector_offset[s][q] = 0, 0, 0
    for k in range(d.n_recurrent):
        w = &d.recurrent[k]
        n_inputs = d.n_carried if w.stage == 0 else d.n_stage_input
        _check(w.stage in (0, 1) and w.stage < d.n_stages, f"cell: recurrent[{k}].stage must be 0 .. n_stages-1")
        _check(w.n_blocks >= 1 and 0 <= w.first_block and w.first_block + w.n_blocks <= d.n_blocks,
               f"cell: recurrent[{k}] blocks out of range")
        _check(w.n_vectors >= 1 and 0 <= w.first_vector and w.first_vector + w.n_vectors <= n_inputs,
               f"cell: recurrent[{k}] vectors out of range of its stage's input")
        _check(proj == 0 or w.stage == 1 or w.first_vector > 0 or w.n_vectors == 1,
               f"cell: with a projection, recurrent[{k}] reads the projected vector 0 alone")
        for b in range(w.first_block, w.first_block + w.n_blocks):
            _check(p.block_stage[b] in (-1, w.stage), f"cell: block {b} gets weights of both stages")
            lo = _column(&p, w.stage, w.first_vector)
            hi = lo + _weight_columns(&p, w)
            if p.block_stage[b] >= 0:
                lo, hi = min(lo, p.block_k0[b]), max(hi, p.block_k0[b] + p.block_K[b])
            p.block_stage[b], p.block_k0[b], p.block_K[b] = w.stage, lo, hi - lo
        for q in range(w.first_vector, w.first_vector + w.n_vectors):
            lo, hi = w.first_block * H, (w.first_block + w.n_blocks) * H
            if p.vector_K[w.stage][q] > 0:
                lo = min(lo, p.vector_k0[w.stage][q])
                hi = max(hi, p.vector_k0[w.stage][q] + p.vector_K[w.stage][q])
            p.vector_k0[w.stage][q], p.vector_K[w.stage][q] = lo, hi - lo
    p.packed_fwd, p.packed_bwd, p.step_flops = 0, 0, 0
    for b in range(d.n_blocks):
        p.block_offset[b] = p.packed_fwd
        p.packed_fwd += p.block_K[b] * H
        p.step_flops += 2 * B * p.block_K[b] * H
    for s in range(2):
        for q in range(MAX_VECTORS):
            p.vector_offset[s][q] = p.packed_bwd
            p.packed_bwd += p.vector_K[s][q] * _width(&p, s, q)
    p.step_flops += 2 * B * proj * H
    return p


# -- one call: what the team members share -----------------------------------------------------------------------------
cdef struct Run:
    const CellDesc *cell
    Plan plan
    Py_ssize_t T, B
    bint reverse
    const int *lengths
    void *pre                   # (T, B, G)
    void *carried               # (T+1, B, S)
    void *cache                 # (T, B, C)
    void *stage_input           # (T, B, V)
    void *out                   # (T, B, ld_out)
    Py_ssize_t ld_out
    const void *params          # (P,)
    const void *mask            # (T, B, M)
    const void *weight[MAX_RECURRENT]
    Py_ssize_t ld_weight[MAX_RECURRENT]
    void *packed_fwd
    void *packed_bwd
    int packed_threads          # the team size that packed them (each thread packs the panels of its own units)
    # backward
    const void *d_out           # (T, B, ld_d_out)
    Py_ssize_t ld_d_out
    void *d_pre                 # (T, B, G)
    void *d_state               # (B, S)
    void *d_stage_input         # (B, V)
    void *d_params              # (threads, P) when whole_rows, else (P,)
    void *db                    # (GIH,)
    # the large products, done by the team on the small GEMM: input projection, dx, dW and dR
    Py_ssize_t n_inputs         # I
    const void *x               # (T, B, I)
    const void *W               # (GIH, I)
    const void *b               # (GIH,)
    void *packed_in             # W^T panels of each thread's units (GIH * I)
    void *packed_dx             # W panels of each thread's input columns (GIH * I)
    void *dW
    void *dx                    # NULL: no input gradient
    bint accumulate_dx
    void *d_weight[MAX_RECURRENT]
    # a projection r_t = out_t W_proj^T (plan.proj > 0): ``out``/``d_out`` above are then the cell's own output and
    # its gradient, (T, B, H) workspace buffers, and these the layer's
    const void *W_proj          # (proj, H)
    void *packed_proj_fwd       # W_proj^T panels of each thread's columns of r (H * proj)
    void *packed_proj_bwd       # W_proj panels of each thread's units (proj * H)
    void *proj_out              # (T, B, ld_proj_out)
    Py_ssize_t ld_proj_out
    const void *d_proj_out      # (T, B, ld_d_proj_out)
    Py_ssize_t ld_d_proj_out
    void *d_r                   # (T, B, proj): dE/dr_t of the real steps, for dW_proj
    void *d_W_proj              # (proj, H)
    void *weight_scratch        # (threads, weight_scratch_size): each thread's chunks of the dW, dR products
    Py_ssize_t weight_scratch_size


cdef inline void _split(Py_ssize_t total, Py_ssize_t align, int tid, int nt, Py_ssize_t *lo,
                        Py_ssize_t *hi) noexcept nogil:
    """This thread's share [lo, hi) of 0 .. total-1, in whole multiples of ``align`` (except the end)."""
    cdef Py_ssize_t pieces = (total + align - 1) // align
    cdef Py_ssize_t per = pieces // nt, extra = pieces % nt
    cdef Py_ssize_t first = tid * per + (tid if tid < extra else extra)
    cdef Py_ssize_t count = per + (1 if tid < extra else 0)
    lo[0] = min(first * align, total)
    hi[0] = min((first + count) * align, total)


cdef inline bint _padded(const Run *run, Py_ssize_t t, Py_ssize_t r) noexcept nogil:
    return run.lengths != NULL and t >= run.lengths[r]


cdef void _pack(const Run *run, Py_ssize_t u0, Py_ssize_t n, Py_ssize_t c0, Py_ssize_t nc, floating *packed_fwd,
                floating *packed_bwd) noexcept nogil:
    """This thread's panels of every recurrent weight, for its units [u0, u0 + n) (and its columns [c0, c0 + nc) of
    the projection r): the forward's M^T, the backward's M; and of the projection's W_proj^T and W_proj."""
    cdef const CellDesc *d = run.cell
    cdef const Plan *p = &run.plan
    cdef Py_ssize_t H = p.H, k, b, q, K, ld, lo, width
    cdef const RecurrentWeight *w
    cdef floating *dest
    cdef const floating *M
    cdef const floating *W_proj = <const floating *> run.W_proj
    if p.proj > 0 and nc > 0:  # operand element (c, j) = W_proj[c0 + j, c]
        pack_panels(H, 0, H, nc, W_proj + c0 * H, 1, H, <floating *> run.packed_proj_fwd + H * c0)
    if p.proj > 0 and n > 0:   # operand element (i, j) = W_proj[i, u0 + j]
        pack_panels(p.proj, 0, p.proj, n, W_proj + u0, H, 1, <floating *> run.packed_proj_bwd + p.proj * u0)
    for b in range(d.n_blocks):
        K = p.block_K[b]
        if K == 0 or n <= 0:
            continue
        dest = packed_fwd + p.block_offset[b] + K * u0
        memset(dest, 0, K * n * sizeof(floating))
        for k in range(d.n_recurrent):
            w = &d.recurrent[k]
            if w.first_block <= b < w.first_block + w.n_blocks:
                M, ld = <const floating *> run.weight[k], run.ld_weight[k]
                # operand element (c, j) = M[(b - first_block) H + u0 + j, c]
                pack_panels(K, _column(p, w.stage, w.first_vector) - p.block_k0[b], ld, n,
                            M + ((b - w.first_block) * H + u0) * ld, 1, ld, dest)
    for k in range(d.n_recurrent):
        w = &d.recurrent[k]
        M, ld = <const floating *> run.weight[k], run.ld_weight[k]
        for q in range(w.first_vector, w.first_vector + w.n_vectors):
            K = p.vector_K[w.stage][q]
            lo, width = _share(p, w.stage, q, u0, n, c0, nc)
            if width <= 0:
                continue
            dest = packed_bwd + p.vector_offset[w.stage][q] + K * lo
            if k == _first_weight_of(d, w.stage, q):
                memset(dest, 0, K * width * sizeof(floating))
            # operand element (i, j) = M[i - first_block H, column of q in M + lo + j]
            pack_panels(K, w.first_block * H - p.vector_k0[w.stage][q], w.n_blocks * H, width,
                        M + _column(p, w.stage, q) - _column(p, w.stage, w.first_vector) + lo, ld, 1, dest)


cdef inline (Py_ssize_t, Py_ssize_t) _share(const Plan *p, int stage, Py_ssize_t q, Py_ssize_t u0, Py_ssize_t n,
                                            Py_ssize_t c0, Py_ssize_t nc) noexcept nogil:
    """A thread's share (first, count) of input vector q: its units, or its columns of the projection r."""
    if stage == 0 and q == 0 and p.proj > 0:
        return c0, nc
    return u0, n


cdef inline Py_ssize_t _first_weight_of(const CellDesc *d, int stage, Py_ssize_t q) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(d.n_recurrent):
        if d.recurrent[k].stage == stage and d.recurrent[k].first_vector <= q < \
                d.recurrent[k].first_vector + d.recurrent[k].n_vectors:
            return k
    return -1


cdef inline cell_step _step_of(const CellDesc *d, bint backward, floating *tag) noexcept nogil:
    if floating is float:
        return d.backward_f if backward else d.forward_f
    else:
        return d.backward_d if backward else d.forward_d


cdef void _view(const Run *run, StepView *v, int stage, Py_ssize_t t, Py_ssize_t r, Py_ssize_t u0, Py_ssize_t n,
                floating *d_params, floating *tag) noexcept nogil:
    """Point ``v`` at row r of step t, units [u0, u0 + n), for stage ``stage`` (rows is left to the caller)."""
    cdef const Plan *p = &run.plan
    cdef Py_ssize_t B = run.B, row = t * B + r
    cdef Py_ssize_t prev = t + 1 if run.reverse else t
    cdef Py_ssize_t nxt = t if run.reverse else t + 1
    v.stage, v.unit0, v.units, v.hidden = stage, u0, n, p.H
    v.ld_pre, v.ld_state, v.ld_cache, v.ld_stage_input = p.G, p.S, p.C, p.V
    v.ld_out, v.ld_d_out = run.ld_out, run.ld_d_out
    v.pre = <floating *> run.pre + row * p.G + u0
    v.prev = <floating *> run.carried + (prev * B + r) * p.S + p.proj + u0  # the cell's vectors follow r
    v.next = <floating *> run.carried + (nxt * B + r) * p.S + p.proj + u0
    v.cache = <floating *> run.cache + row * p.C + u0 if p.C > 0 else NULL
    v.stage_input = <floating *> run.stage_input + row * p.V + u0 if p.V > 0 else NULL
    v.params = <const floating *> run.params + u0 if run.params != NULL else NULL
    v.mask = <const floating *> run.mask + row * p.M + u0 if run.mask != NULL else NULL
    v.ld_mask = p.M
    v.out = <floating *> run.out + row * run.ld_out + u0 if run.out != NULL else NULL
    v.d_out = <const floating *> run.d_out + row * run.ld_d_out + u0 if run.d_out != NULL else NULL
    v.d_pre = <floating *> run.d_pre + row * p.G + u0 if run.d_pre != NULL else NULL
    v.d_state = <floating *> run.d_state + r * p.S + p.proj + u0 if run.d_state != NULL else NULL
    v.d_stage_input = <floating *> run.d_stage_input + r * p.V + u0 if run.d_stage_input != NULL and p.V > 0 \
        else NULL
    v.d_params = d_params + u0 if d_params != NULL else NULL


cdef inline Py_ssize_t _real_run_end(const Run *run, Py_ssize_t t, Py_ssize_t r, Py_ssize_t r1) noexcept nogil:
    """The end of the run of rows from r (a real one) that are all at a real step t."""
    r += 1
    while r < r1 and not _padded(run, t, r):
        r += 1
    return r


cdef void _forward_rows(const Run *run, int stage, Py_ssize_t t, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t u0,
                        Py_ssize_t u1, floating *tag) noexcept nogil:
    """The step's forward at stage ``stage`` of step t, rows [r0, r1), units [u0, u1); padded rows carried over."""
    cdef const CellDesc *d = run.cell
    cdef const Plan *p = &run.plan
    cdef Py_ssize_t n = u1 - u0, r, e, q
    cdef StepView v
    cdef cell_step step = _step_of(d, False, tag)
    r = r0
    while r < r1 and n > 0:
        if _padded(run, t, r):
            _view(run, &v, stage, t, r, u0, n, <floating *> NULL, tag)
            if stage == 0 and d.n_stages == 2:
                for q in range(d.n_stage_input):
                    memset(<floating *> v.stage_input + q * p.H, 0, n * sizeof(floating))
            if stage == d.n_stages - 1:
                for q in range(d.n_carried):
                    memcpy(<floating *> v.next + q * p.H, <floating *> v.prev + q * p.H, n * sizeof(floating))
                memset(v.out, 0, n * sizeof(floating))
            r += 1
            continue
        e = _real_run_end(run, t, r, r1)
        _view(run, &v, stage, t, r, u0, n, <floating *> NULL, tag)
        v.rows = e - r
        step(d, &v)
        r = e


cdef void _forward_team(Run *run, int tid, int nt, floating *tag) noexcept nogil:
    cdef const CellDesc *d = run.cell
    cdef const Plan *p = &run.plan
    cdef Py_ssize_t T = run.T, B = run.B, H = p.H, u0, u1, r0, r1, c0, c1, n, i, t, b, prev
    cdef int s
    cdef const floating *inp
    cdef Py_ssize_t lda
    cdef floating *pre_t
    cdef floating *packed = <floating *> run.packed_fwd
    _split(H, UNIT_ALIGN, tid, nt, &u0, &u1)
    _split(B, 1, tid, nt, &r0, &r1)
    _split(p.proj, UNIT_ALIGN, tid, nt, &c0, &c1)
    n = u1 - u0
    _pack(run, u0, n, c0, c1 - c0, packed, <floating *> run.packed_bwd)
    if tid == 0:
        run.packed_threads = nt
    _input_projection(run, u0, n, tag)
    for i in range(T):
        t = T - 1 - i if run.reverse else i
        prev = t + 1 if run.reverse else t
        pre_t = <floating *> run.pre + t * B * p.G
        for s in range(d.n_stages):
            if s == 0:
                inp, lda = <const floating *> run.carried + prev * B * p.S, p.S
            else:
                inp, lda = <const floating *> run.stage_input + t * B * p.V, p.V
            if n > 0:
                for b in range(d.n_blocks):
                    if p.block_stage[b] == s:
                        small_gemm(B, n, p.block_K[b], inp + p.block_k0[b], lda,
                                   packed + p.block_offset[b] + p.block_K[b] * u0, pre_t + b * H + u0, p.G)
            if d.whole_rows:
                lc_team_barrier()
                _forward_rows(run, s, t, r0, r1, 0, H, tag)
            else:
                _forward_rows(run, s, t, 0, B, u0, u1, tag)
            lc_team_barrier()
        if p.proj > 0:
            _project(run, t, c0, c1 - c0, tag)
            lc_team_barrier()


cdef void _project(const Run *run, Py_ssize_t t, Py_ssize_t c0, Py_ssize_t nc, floating *tag) noexcept nogil:
    """r_t = out_t W_proj^T in this thread's columns [c0, c0 + nc) of r, into the carried row and the layer's output;
    a padded row carries r over and outputs zero."""
    cdef const Plan *p = &run.plan
    cdef Py_ssize_t B = run.B, S = p.S, r, e, q
    cdef Py_ssize_t prev = t + 1 if run.reverse else t
    cdef Py_ssize_t nxt = t if run.reverse else t + 1
    cdef const floating *r_prev = <const floating *> run.carried + prev * B * S + c0
    cdef floating *r_next = <floating *> run.carried + nxt * B * S + c0
    cdef floating *out = <floating *> run.proj_out + t * B * run.ld_proj_out + c0
    if nc <= 0:
        return
    r = 0
    while r < B:
        if _padded(run, t, r):
            memcpy(r_next + r * S, r_prev + r * S, nc * sizeof(floating))
            memset(out + r * run.ld_proj_out, 0, nc * sizeof(floating))
            r += 1
            continue
        e = _real_run_end(run, t, r, B)
        for q in range(r, e):
            memset(r_next + q * S, 0, nc * sizeof(floating))
        small_gemm(e - r, nc, p.H, <const floating *> run.out + (t * B + r) * run.ld_out, run.ld_out,
                   <const floating *> run.packed_proj_fwd + p.H * c0, r_next + r * S, S)
        for q in range(r, e):
            memcpy(out + q * run.ld_proj_out, r_next + q * S, nc * sizeof(floating))
        r = e


cdef void _backward_rows(const Run *run, int stage, Py_ssize_t t, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t u0,
                         Py_ssize_t u1, floating *d_params, floating *tag) noexcept nogil:
    """The step's backward at stage ``stage`` of step t, rows [r0, r1), units [u0, u1); padded rows get zero deltas
    (the state's gradient passes through them unchanged)."""
    cdef const CellDesc *d = run.cell
    cdef const Plan *p = &run.plan
    cdef Py_ssize_t n = u1 - u0, r, e, b
    cdef StepView v
    cdef cell_step step = _step_of(d, True, tag)
    r = r0
    while r < r1 and n > 0:
        if _padded(run, t, r):
            if stage == d.n_stages - 1:
                _view(run, &v, stage, t, r, u0, n, d_params, tag)
                for b in range(d.n_blocks):
                    memset(<floating *> v.d_pre + b * p.H, 0, n * sizeof(floating))
            r += 1
            continue
        e = _real_run_end(run, t, r, r1)
        _view(run, &v, stage, t, r, u0, n, d_params, tag)
        v.rows = e - r
        step(d, &v)
        r = e


cdef void _recurrent_delta(const Run *run, int stage, Py_ssize_t t, Py_ssize_t u0, Py_ssize_t n, Py_ssize_t c0,
                           Py_ssize_t nc, floating *target, Py_ssize_t ld, bint overwrite) noexcept nogil:
    """target[:, vector q, this thread's share] (+)= d_pre[t] (the blocks that read q) @ M, for every input vector q
    of ``stage``."""
    cdef const Plan *p = &run.plan
    cdef Py_ssize_t B = run.B, q, r, K, lo, width
    cdef const floating *d_pre = <const floating *> run.d_pre + t * B * p.G
    cdef const floating *packed = <const floating *> run.packed_bwd
    cdef floating *dest
    for q in range(MAX_VECTORS):
        K = p.vector_K[stage][q]
        lo, width = _share(p, stage, q, u0, n, c0, nc)
        if K == 0 or width <= 0:
            continue
        dest = target + _column(p, stage, q) + lo
        if overwrite:
            for r in range(B):
                memset(dest + r * ld, 0, width * sizeof(floating))
        small_gemm(B, width, K, d_pre + p.vector_k0[stage][q], p.G, packed + p.vector_offset[stage][q] + K * lo,
                   dest, ld)


cdef void _project_backward(const Run *run, Py_ssize_t t, Py_ssize_t u0, Py_ssize_t n, Py_ssize_t c0,
                            Py_ssize_t nc, floating *tag) noexcept nogil:
    """dE/dr_t = d_proj_out_t + (the carried r's gradient, consumed) in this thread's columns of r (zero at a padded
    row, whose r passes its gradient on unchanged); then dE/dout_t = dE/dr_t W_proj in its units, for the step."""
    cdef const Plan *p = &run.plan
    cdef Py_ssize_t B = run.B, S = p.S, P = p.proj, r, j
    cdef floating *d_r = <floating *> run.d_r + t * B * P
    cdef floating *d_state = <floating *> run.d_state
    cdef const floating *d_out = <const floating *> run.d_proj_out + t * B * run.ld_d_proj_out
    cdef floating *d_hidden = <floating *> run.d_out + t * B * run.ld_d_out
    for r in range(B):
        if _padded(run, t, r):
            memset(d_r + r * P + c0, 0, nc * sizeof(floating))
            continue
        for j in range(c0, c0 + nc):
            d_r[r * P + j] = d_out[r * run.ld_d_proj_out + j] + d_state[r * S + j]
            d_state[r * S + j] = 0
    lc_team_barrier()
    if n <= 0:
        return
    for r in range(B):
        memset(d_hidden + r * run.ld_d_out + u0, 0, n * sizeof(floating))
    small_gemm(B, n, P, d_r, P, <const floating *> run.packed_proj_bwd + P * u0, d_hidden + u0, run.ld_d_out)


cdef void _backward_team(Run *run, int tid, int nt, floating *tag) noexcept nogil:
    cdef const CellDesc *d = run.cell
    cdef const Plan *p = &run.plan
    cdef Py_ssize_t T = run.T, B = run.B, H = p.H, u0, u1, r0, r1, c0, c1, n, i, t, j, r, q, k
    cdef int s
    cdef floating *d_params = NULL
    cdef floating *mine
    cdef floating *db = <floating *> run.db
    cdef const floating *d_pre = <const floating *> run.d_pre
    _split(H, UNIT_ALIGN, tid, nt, &u0, &u1)
    _split(B, 1, tid, nt, &r0, &r1)
    _split(p.proj, UNIT_ALIGN, tid, nt, &c0, &c1)
    n = u1 - u0
    if nt != run.packed_threads:  # the system gave this team fewer threads than the forward's
        _pack(run, u0, n, c0, c1 - c0, <floating *> run.packed_fwd, <floating *> run.packed_bwd)
    if p.P > 0:
        d_params = <floating *> run.d_params + (tid * p.P if d.whole_rows else 0)
        if d.whole_rows:
            memset(d_params, 0, p.P * sizeof(floating))
        elif n > 0:
            for q in range(d.n_params):
                memset(d_params + q * H + u0, 0, n * sizeof(floating))
    for i in range(T):
        t = i if run.reverse else T - 1 - i
        if p.proj > 0:
            _project_backward(run, t, u0, n, c0, c1 - c0, tag)
        for s in range(d.n_stages - 1, -1, -1):
            if s == 0 and d.n_stages == 2:  # dE/dV_t from the stage-1 deltas
                _recurrent_delta(run, 1, t, u0, n, 0, 0, <floating *> run.d_stage_input, p.V, True)
                if d.whole_rows:
                    lc_team_barrier()
            if d.whole_rows:
                _backward_rows(run, s, t, r0, r1, 0, H, d_params, tag)
            else:
                _backward_rows(run, s, t, 0, B, u0, u1, d_params, tag)
            lc_team_barrier()
        _recurrent_delta(run, 0, t, u0, n, c0, c1 - c0, <floating *> run.d_state, p.S, False)
        if d.whole_rows:
            lc_team_barrier()
    lc_team_barrier()
    # the bias and the step's parameters: each thread sums its own units, in a fixed order
    if n > 0:
        for k in range(d.n_input_blocks):
            memset(db + k * H + u0, 0, n * sizeof(floating))
        for r in range(T * B):
            for k in range(d.n_input_blocks):
                for j in range(u0, u1):
                    db[k * H + j] += d_pre[r * p.G + k * H + j]
    if d.whole_rows and p.P > 0:
        mine = <floating *> run.d_params
        for q in range(d.n_params):
            for j in range(u0, u1):
                for k in range(1, nt):
                    mine[q * H + j] += mine[k * p.P + q * H + j]
    _input_gradient(run, tid, nt, tag)
    _weight_gradients(run, u0, n, c0, c1 - c0, <floating *> run.weight_scratch + tid * run.weight_scratch_size)


cdef void _forward_team_f(void *ctx, int tid, int nt) noexcept nogil:
    _forward_team(<Run *> ctx, tid, nt, <float *> NULL)

cdef void _forward_team_d(void *ctx, int tid, int nt) noexcept nogil:
    _forward_team(<Run *> ctx, tid, nt, <double *> NULL)

cdef void _backward_team_f(void *ctx, int tid, int nt) noexcept nogil:
    _backward_team(<Run *> ctx, tid, nt, <float *> NULL)

cdef void _backward_team_d(void *ctx, int tid, int nt) noexcept nogil:
    _backward_team(<Run *> ctx, tid, nt, <double *> NULL)


cdef void _input_projection(const Run *run, Py_ssize_t u0, Py_ssize_t n, floating *tag) noexcept nogil:
    """pre = b + x W^T in this thread's units of the input blocks (the product writes the bias with it), zero in its
    units of the others: one product for all steps, on the small GEMM with W^T packed per thread, ROW_BLOCK rows of x
    at a time."""
    cdef const CellDesc *d = run.cell
    cdef const Plan *p = &run.plan
    cdef Py_ssize_t I = run.n_inputs, H = p.H, TB = run.T * run.B, r, k, m0
    cdef floating *pre = <floating *> run.pre
    cdef const floating *x = <const floating *> run.x
    cdef const floating *W = <const floating *> run.W
    cdef const floating *b = <const floating *> run.b
    cdef floating *packed = <floating *> run.packed_in
    if n <= 0:
        return
    for k in range(d.n_input_blocks):
        pack_panels(I, 0, I, n, W + (k * H + u0) * I, 1, I, packed + k * H * I + I * u0)
    if d.n_blocks > d.n_input_blocks:
        for r in range(TB):
            for k in range(d.n_input_blocks, d.n_blocks):
                memset(pre + r * p.G + k * H + u0, 0, n * sizeof(floating))
    m0 = 0
    while m0 < TB:
        for k in range(d.n_input_blocks):
            small_gemm_set(min(ROW_BLOCK, TB - m0), n, I, x + m0 * I, I, packed + k * H * I + I * u0, b + k * H + u0,
                           pre + m0 * p.G + k * H + u0, p.G)
        m0 += ROW_BLOCK


cdef void _input_gradient(const Run *run, int tid, int nt, floating *tag) noexcept nogil:
    """dx (+)= d_pre W for this thread's share of the input columns, on the small GEMM."""
    cdef const Plan *p = &run.plan
    cdef Py_ssize_t I = run.n_inputs, TB = run.T * run.B, i0, i1, m, m0
    cdef floating *dx = <floating *> run.dx
    cdef floating *packed = <floating *> run.packed_dx
    _split(I, UNIT_ALIGN, tid, nt, &i0, &i1)
    if dx == NULL or i1 <= i0:
        return
    pack_panels(p.GIH, 0, p.GIH, i1 - i0, <const floating *> run.W + i0, I, 1, packed + p.GIH * i0)
    m0 = 0
    while m0 < TB:
        if run.accumulate_dx:
            small_gemm(min(ROW_BLOCK, TB - m0), i1 - i0, p.GIH, <const floating *> run.d_pre + m0 * p.G, p.G,
                       packed + p.GIH * i0, dx + m0 * I + i0, I)
        else:
            small_gemm_set(min(ROW_BLOCK, TB - m0), i1 - i0, p.GIH, <const floating *> run.d_pre + m0 * p.G, p.G,
                           packed + p.GIH * i0, <const floating *> NULL, dx + m0 * I + i0, I)
        m0 += ROW_BLOCK


cdef void _weight_gradients(const Run *run, Py_ssize_t u0, Py_ssize_t n, Py_ssize_t c0, Py_ssize_t nc,
                            floating *scratch) noexcept nogil:
    """dW = d_pre^T x and dM = d_pre[blocks]^T input[vectors] for every recurrent weight M: the rows of this thread's
    units [u0, u0 + n) of every block; dW_proj = d_r^T out, its rows [c0, c0 + nc). One product over all steps each
    (the small GEMM with A transposed)."""
    cdef const CellDesc *d = run.cell
    cdef const Plan *p = &run.plan
    cdef Py_ssize_t TB = run.T * run.B, H = p.H, I = run.n_inputs, k, b, ld, r
    cdef const floating *d_pre = <const floating *> run.d_pre
    cdef const floating *inp
    cdef floating *C
    cdef Py_ssize_t lda
    cdef const RecurrentWeight *w
    if p.proj > 0 and nc > 0:
        C = <floating *> run.d_W_proj + c0 * H
        memset(C, 0, nc * H * sizeof(floating))
        small_gemm_at(nc, H, TB, <const floating *> run.d_r + c0, p.proj, <const floating *> run.out, run.ld_out, C, H,
                      scratch)
    if n <= 0:
        return
    for k in range(d.n_input_blocks):
        C = <floating *> run.dW + (k * H + u0) * I
        memset(C, 0, n * I * sizeof(floating))
        small_gemm_at(n, I, TB, d_pre + k * H + u0, p.G, <const floating *> run.x, I, C, I, scratch)
    for k in range(d.n_recurrent):
        w = &d.recurrent[k]
        if w.stage == 0:  # step t read the carried row of slot t (forward) or t + 1 (reverse)
            inp, lda = <const floating *> run.carried + (run.B * p.S if run.reverse else 0), p.S
        else:
            inp, lda = <const floating *> run.stage_input, p.V
        ld = _weight_columns(p, w)
        for b in range(w.first_block, w.first_block + w.n_blocks):
            C = <floating *> run.d_weight[k] + ((b - w.first_block) * H + u0) * ld
            memset(C, 0, n * ld * sizeof(floating))
            small_gemm_at(n, ld, TB, d_pre + b * H + u0, p.G, inp + _column(p, w.stage, w.first_vector), lda, C, ld,
                          scratch)


# -- workspaces ---------------------------------------------------------------------------------------------------------
class Workspace:
    """The buffers of one call (pre-activations, carried rows, the step's cache, packed weights, deltas), kept for the
    next call of any shape: a buffer is grown when too small, never allocated afresh while large enough."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.buffers = {}

    def take(self, name, size):
        """A flat buffer of at least ``size`` elements (contents undefined: every call writes what it reads)."""
        buf = self.buffers.get(name)
        if buf is None or buf.shape[0] < size:
            buf = self.buffers[name] = np.empty(max(size, 1), dtype=self.dtype)
        return buf

    def nbytes(self):
        return sum(b.nbytes for b in self.buffers.values())


_pool_lock = threading.Lock()
_pool = {}


def _acquire(dtype):
    with _pool_lock:
        free = _pool.get(np.dtype(dtype))
        if free:
            return free.pop()
    return Workspace(dtype)


def _release(workspace):
    with _pool_lock:
        free = _pool.setdefault(workspace.dtype, [])
        if len(free) < MAX_POOLED_WORKSPACES:
            free.append(workspace)


def release_workspaces():
    """Drop the pooled workspaces (their memory returns to the system once no forward's tape holds them)."""
    with _pool_lock:
        _pool.clear()


def pooled_workspaces():
    """The free workspaces in the pool: {dtype: count} (for tests)."""
    with _pool_lock:
        return {str(k): len(v) for k, v in _pool.items()}


def _fill_pool(value):
    """Fill every pooled buffer with ``value`` (tests: a call must not read what an earlier one left)."""
    with _pool_lock:
        for free in _pool.values():
            for ws in free:
                for buf in ws.buffers.values():
                    buf[...] = value


# -- threads ------------------------------------------------------------------------------------------------------------
def blas_threads():
    """The thread count of SciPy's BLAS (whose setting the team follows), as threadpoolctl.threadpool_limits and
    OPENBLAS_NUM_THREADS set it; 0 when it cannot be asked."""
    return lc_blas_threads(<const void *> sgemm)


def team_size(Py_ssize_t step_flops, Py_ssize_t hidden, Py_ssize_t batch=0, bint whole_rows=False):
    """The threads of the recurrence for a step of ``step_flops`` recurrent FLOPs: the BLAS's thread count (1 if
    unknown), capped by the CPUs, by MIN_STEP_FLOPS_PER_THREAD, and by the units (or rows) there are to split."""
    cdef int n = max(1, min(lc_blas_threads(<const void *> sgemm), lc_cpu_count(), LC_TEAM_MAX))
    n = min(n, max(1, step_flops // MIN_STEP_FLOPS_PER_THREAD))
    n = min(n, batch if whole_rows else (hidden + UNIT_ALIGN - 1) // UNIT_ALIGN)
    return max(1, n)


# -- the layer's own copies -------------------------------------------------------------------------------------------
cdef extern from "lstmcore_finite.h" nogil:
    int lc_all_finite_f(const float *p, Py_ssize_t n)
    int lc_all_finite_d(const double *p, Py_ssize_t n)


def frozen_copy(cnp.ndarray array, bint check_finite):
    """A C-contiguous, read-only copy of a float32 or float64 ``array``, or None when ``check_finite`` and it holds NaN
    or Inf (the caller raises, naming the argument): the layer's one compiled pass for each array a forward keeps."""
    cdef int kind = cnp.PyArray_TYPE(array)
    if kind != cnp.NPY_FLOAT32 and kind != cnp.NPY_FLOAT64:
        raise TypeError(f"frozen_copy takes float32 or float64 arrays, got {array.dtype}")
    cdef cnp.ndarray copy = cnp.PyArray_NewCopy(array, cnp.NPY_CORDER)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(copy)
    cdef bint finite = True
    if check_finite:
        with nogil:
            if kind == cnp.NPY_FLOAT32:
                finite = lc_all_finite_f(<const float *> cnp.PyArray_DATA(copy), n)
            else:
                finite = lc_all_finite_d(<const double *> cnp.PyArray_DATA(copy), n)
    if not finite:
        return None
    cnp.PyArray_CLEARFLAGS(copy, cnp.NPY_ARRAY_WRITEABLE)
    return copy


# -- the Python boundary -------------------------------------------------------------------------------------------------
cdef class Tape:
    """What a forward keeps for its backward: its inputs (referenced), a copy of ``lengths``, and its workspace."""
    cdef readonly CellKernel kernel
    cdef readonly bint reverse
    cdef readonly int threads
    cdef readonly Py_ssize_t T, B, H, input_size, proj
    cdef readonly object dtype
    cdef readonly object masks
    cdef object x, W, weights, params, lengths, workspace, projection
    cdef bint busy

    def workspace_buffers(self):
        """The workspace's buffers (for tests: a second call of the same shape must get the same ones)."""
        return tuple(self.workspace.buffers.values())

    def __reduce__(self):
        # A copy would hand the same pooled workspace back twice, and two later calls would share its buffers.
        raise TypeError("a Tape belongs to the one forward that made it and cannot be copied or pickled")

    def __copy__(self):
        self.__reduce__()

    def __deepcopy__(self, memo):
        self.__reduce__()

    def __dealloc__(self):
        if self.workspace is not None:
            try:
                _release(self.workspace)
            except Exception:  # interpreter shutdown
                pass


cdef Py_ssize_t _row_stride(object arr, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, Py_ssize_t itemsize,
                            str name) except -1:
    """Row stride (in elements) of a (T, B, H) view whose rows are contiguous and evenly spaced in memory (size-1 axes
    may have any stride)."""
    if tuple(arr.shape)[:3] != (T, B, H):
        raise ValueError(f"{name} has shape {tuple(arr.shape[:3])}, expected {(T, B, H)}")
    st = arr.strides
    row = st[1] if B > 1 else (st[0] // B if T > 1 else H * itemsize)
    if (H > 1 and st[2] != itemsize) or row % itemsize or row < H * itemsize or (T > 1 and st[0] != B * row):
        raise ValueError(f"{name} must have contiguous rows evenly spaced in memory")
    return row // itemsize


cdef Py_ssize_t _weight_scratch_size(const CellDesc *d, const Plan *p, Py_ssize_t I) noexcept:
    """The scratch of one thread's weight-gradient products: rows at most H (or proj for dW_proj), columns as many as
    the widest (I, H for dW_proj, or a recurrent weight's)."""
    cdef Py_ssize_t k, widest = max(I, p.H)
    for k in range(d.n_recurrent):
        widest = max(widest, _weight_columns(p, &d.recurrent[k]))
    return small_gemm_at_scratch(max(p.H, p.proj), widest)


cdef int _take_forward_buffers(Run *run, ws, Py_ssize_t T, Py_ssize_t B) except -1:
    cdef const Plan *p = &run.plan
    _pointer_of(ws.take("pre", T * B * p.G), &run.pre)
    _pointer_of(ws.take("carried", (T + 1) * B * p.S), &run.carried)
    _pointer_of(ws.take("cache", T * B * p.C), &run.cache)
    _pointer_of(ws.take("stage_input", T * B * p.V), &run.stage_input)
    _pointer_of(ws.take("packed_fwd", p.packed_fwd), &run.packed_fwd)
    _pointer_of(ws.take("packed_bwd", p.packed_bwd), &run.packed_bwd)
    if p.proj > 0:  # the cell's own output, which the projection reads
        _pointer_of(ws.take("hidden_out", T * B * p.H), &run.out)
        run.ld_out = p.H
        _pointer_of(ws.take("packed_proj_fwd", p.proj * p.H), &run.packed_proj_fwd)
        _pointer_of(ws.take("packed_proj_bwd", p.proj * p.H), &run.packed_proj_bwd)
    return 0


cdef Py_ssize_t _projection_size(projection, Py_ssize_t H, dtype) except -1:
    """P' of a projection matrix (P', H), 0 for None."""
    if projection is None:
        return 0
    if not (isinstance(projection, np.ndarray) and projection.dtype == dtype and projection.ndim == 2
            and projection.shape[0] >= 1 and projection.shape[1] == H and projection.flags.c_contiguous):
        raise ValueError(f"projection must be a C-contiguous {np.dtype(dtype).name} array of shape (P, {H}), P >= 1")
    return projection.shape[0]


cdef inline tuple _state_columns(const Plan *p, const CellDesc *d, Py_ssize_t k):
    """(first column, width) of public state k in the carried row (with a projection, vector 0's is r)."""
    cdef Py_ssize_t q = d.state_vector[k]
    return _column(p, 0, q), _width(p, 0, q)


cdef void _fill_run(Run *run, CellKernel kernel, Plan plan, Py_ssize_t T, Py_ssize_t B, bint reverse,
                    const int *lengths):
    memset(run, 0, sizeof(Run))
    run.cell = &kernel.desc
    run.plan = plan
    run.T, run.B, run.reverse, run.lengths = T, B, reverse, lengths


cdef _matrix_pointers(Run *run, tuple weights, const CellDesc *d, Py_ssize_t H, dtype):
    """Check the recurrent weights against the description and store their pointers; returns the arrays."""
    cdef Py_ssize_t k
    cdef const float[:, ::1] mf
    cdef const double[:, ::1] md
    if len(weights) != d.n_recurrent:
        raise ValueError(f"the cell has {d.n_recurrent} recurrent weight matrices, got {len(weights)}")
    arrays = []
    for k in range(d.n_recurrent):
        shape = (d.recurrent[k].n_blocks * H, _weight_columns(&run.plan, &d.recurrent[k]))
        arr = weights[k]
        if not (isinstance(arr, np.ndarray) and arr.dtype == dtype and tuple(arr.shape) == shape and arr.flags.c_contiguous):
            raise ValueError(f"recurrent weight {k} must be a C-contiguous {np.dtype(dtype).name} array of shape {shape}")
        if dtype == np.float32:
            mf = arr
            run.weight[k] = &mf[0, 0]
        else:
            md = arr
            run.weight[k] = &md[0, 0]
        run.ld_weight[k] = shape[1]
        arrays.append(arr)
    return tuple(arrays)


cdef inline int _pointer_of(cnp.ndarray arr, void **ptr) except -1:
    """The data pointer of a C-contiguous float32/float64 array (checked by the caller, or a workspace buffer)."""
    ptr[0] = cnp.PyArray_DATA(arr)
    return 0


def forward(CellKernel kernel, bint reverse, const floating[:, :, ::1] x, const floating[:, ::1] W,
            const floating[::1] b, tuple weights, const floating[::1] params, const int[::1] lengths,
            tuple states, floating[:, :, :] out, int threads=0, projection=None, masks=None):
    """Run one direction of one layer over a whole sequence: fills ``out`` (T, B, H, rows contiguous) and returns
    ``(final_states, tape)``. ``weights`` are the cell's recurrent matrices, ``params`` its per-unit vectors (None when
    it has none), ``states`` the initial public states, each (B, H). ``threads`` > 0 forces the team size.

    ``projection`` (P', H), for a one-stage cell whose output is its carried vector 0: the output becomes
    r_t = out_t projection^T (``out`` is (T, B, P')), and r replaces vector 0 as the input of the recurrent weights
    (a weight reading vector 0 then has P' columns for it) and as its public state ((B, P')); the cell's own vector 0
    starts at zero.

    ``masks`` (T, B, n_mask*H), C-contiguous, for a cell that reads masks (``n_mask`` > 0): row b of step t is the
    step's ``mask``; referenced, not copied (the backward reads it too)."""
    cdef const CellDesc *d = &kernel.desc
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H, k, r, q, col, width
    dtype = np.float32 if floating is float else np.float64
    _check(T >= 1 and B >= 1 and I >= 1, "empty sequence, batch or input")
    _check(1 <= d.n_blocks <= MAX_BLOCKS and 1 <= d.n_input_blocks <= d.n_blocks,
           f"cell: n_blocks must be 1 .. {MAX_BLOCKS} and n_input_blocks 1 .. n_blocks (is the description filled?)")
    _check(W.shape[0] % d.n_input_blocks == 0, "W rows must be n_input_blocks*H")
    H = W.shape[0] // d.n_input_blocks
    cdef Plan plan = _plan(d, H, B, _projection_size(projection, H, dtype))
    _check(H >= 1 and W.shape[1] == I and b.shape[0] == plan.GIH, "W, b shapes")
    _check((params is None) == (plan.P == 0) and (params is None or params.shape[0] == plan.P),
           f"the cell takes {d.n_params} parameter vectors of H = {H}")
    _check(lengths is None or lengths.shape[0] == B, "lengths shape")
    if lengths is not None:
        for r in range(B):
            _check(0 <= lengths[r] <= T, "lengths out of range")
    if (masks is None) != (plan.M == 0) or (masks is not None and not (
            isinstance(masks, np.ndarray) and masks.dtype == dtype and tuple(masks.shape) == (T, B, plan.M)
            and masks.flags.c_contiguous)):
        raise ValueError(f"masks must be None for a cell without masks, else a C-contiguous {np.dtype(dtype).name} "
                         f"array of shape (T, B, n_mask*H) = {(T, B, plan.M)}")
    if len(states) != d.n_states:
        raise ValueError(f"the cell has {d.n_states} states, got {len(states)}")
    for k in range(d.n_states):
        st, (col, width) = states[k], _state_columns(&plan, d, k)
        if not (isinstance(st, np.ndarray) and st.dtype == dtype and tuple(st.shape) == (B, width)):
            raise ValueError(f"state {k} must be a {np.dtype(dtype).name} array of shape {(B, width)}")
    _check((d.forward_f != NULL) if floating is float else (d.forward_d != NULL), "the cell has no forward step")
    cdef Py_ssize_t ld = _row_stride(out, T, B, plan.proj or H, sizeof(floating), "out")

    cdef Run run
    _fill_run(&run, kernel, plan, T, B, reverse, NULL)
    tape = Tape()
    tape.kernel, tape.reverse, tape.T, tape.B, tape.input_size, tape.H = kernel, reverse, T, B, I, H
    tape.dtype = dtype
    tape.x, tape.W, tape.params = x, W, params
    tape.projection, tape.proj, tape.masks = projection, plan.proj, masks
    cdef const floating[:, :, ::1] mask_view = masks
    run.mask = &mask_view[0, 0, 0] if masks is not None else NULL
    tape.weights = _matrix_pointers(&run, weights, d, H, dtype)
    tape.lengths = None if lengths is None else np.array(lengths, dtype=np.int32)  # immune to later changes
    cdef const int[::1] lens = tape.lengths
    run.lengths = &lens[0] if lengths is not None else NULL
    ws = tape.workspace = _acquire(dtype)
    _take_forward_buffers(&run, ws, T, B)
    slots = ws.take("carried", (T + 1) * B * plan.S)[:(T + 1) * B * plan.S].reshape(T + 1, B, plan.S)
    init = T if reverse else 0
    slots[init] = 0
    for k in range(d.n_states):
        col, width = _state_columns(&plan, d, k)
        slots[init, :, col:col + width] = states[k]
    cdef const floating[:, ::1] W_proj = projection
    if plan.proj > 0:
        run.proj_out, run.ld_proj_out, run.W_proj = &out[0, 0, 0], ld, &W_proj[0, 0]
    else:
        run.out, run.ld_out = &out[0, 0, 0], ld
    run.params = &params[0] if params is not None else NULL
    run.n_inputs, run.x, run.W, run.b = I, &x[0, 0, 0], &W[0, 0], &b[0]
    _pointer_of(ws.take("packed_in", plan.GIH * I), &run.packed_in)
    cdef int nt = threads if threads > 0 else team_size(plan.step_flops, H, B, d.whole_rows)
    with nogil:
        if floating is float:
            nt = lc_team_run(nt, _forward_team_f, &run)
        else:
            nt = lc_team_run(nt, _forward_team_d, &run)
    tape.threads = nt
    final = 0 if reverse else T
    finals = []
    for k in range(d.n_states):
        col, width = _state_columns(&plan, d, k)
        finals.append(slots[final, :, col:col + width].copy())
    return tuple(finals), tape


def backward(Tape tape, const floating[:, :, :] d_out, tuple d_states, floating[:, ::1] dW, floating[::1] db,
             tuple d_weights, floating[::1] d_params, floating[:, :, ::1] dx, bint accumulate_dx,
             floating[:, ::1] d_projection=None):
    """BPTT through the forward that made ``tape``: writes dW, db, every d_weights[k], d_params, d_projection (for a
    projected forward), and dx (added to with ``accumulate_dx``; skipped when None); returns the gradients of the
    initial states. ``d_out`` and ``d_states`` are the gradients of the output and of the final states, shaped as the
    forward's."""
    cdef const CellDesc *d = &tape.kernel.desc
    cdef Py_ssize_t T = tape.T, B = tape.B, I = tape.input_size, H = tape.H, k, q, col, width
    dtype = np.float32 if floating is float else np.float64
    if dtype != tape.dtype:
        raise ValueError(f"the forward ran in {np.dtype(tape.dtype).name}")
    cdef Plan plan = _plan(d, H, B, tape.proj)
    cdef Py_ssize_t ld = _row_stride(d_out, T, B, plan.proj or H, sizeof(floating), "d_out")
    if len(d_states) != d.n_states:
        raise ValueError(f"the cell has {d.n_states} states, got {len(d_states)}")
    for k in range(d.n_states):
        st, (col, width) = d_states[k], _state_columns(&plan, d, k)
        if not (isinstance(st, np.ndarray) and st.dtype == dtype and tuple(st.shape) == (B, width)):
            raise ValueError(f"the gradient of state {k} must be a {np.dtype(dtype).name} array of shape "
                             f"{(B, width)}")
    _check((d_projection is None) == (plan.proj == 0) and
           (d_projection is None or (d_projection.shape[0] == plan.proj and d_projection.shape[1] == H)),
           f"d_projection must be None without a projection, else of shape (P, H) = {(plan.proj, H)}")
    _check(tuple(dW.shape)[:2] == (plan.GIH, I) and db.shape[0] == plan.GIH, "dW, db shapes")
    _check((d_params is None) == (plan.P == 0) and (d_params is None or d_params.shape[0] == plan.P),
           "d_params shape")
    _check(dx is None or tuple(dx.shape)[:3] == (T, B, I), "dx shape")
    _check((d.backward_f != NULL) if floating is float else (d.backward_d != NULL), "the cell has no backward step")
    cdef Run run
    _fill_run(&run, tape.kernel, plan, T, B, tape.reverse, NULL)
    _matrix_pointers(&run, tape.weights, d, H, dtype)
    cdef floating *d_weight[MAX_RECURRENT]
    if len(d_weights) != d.n_recurrent:
        raise ValueError(f"the cell has {d.n_recurrent} recurrent weight matrices")
    cdef void *ptr
    for k in range(d.n_recurrent):
        shape = (d.recurrent[k].n_blocks * H, _weight_columns(&plan, &d.recurrent[k]))
        arr = d_weights[k]
        if not (isinstance(arr, np.ndarray) and arr.dtype == dtype and tuple(arr.shape) == shape and arr.flags.c_contiguous and arr.flags.writeable):
            raise ValueError(f"d_weights[{k}] must be a writable contiguous {np.dtype(dtype).name} array of shape {shape}")
        _pointer_of(arr, &ptr)
        d_weight[k] = <floating *> ptr
    if tape.busy:
        raise RuntimeError("this forward's backward is already running in another thread")
    cdef const floating[:, :, ::1] x = tape.x
    cdef const floating[:, ::1] W = tape.W
    cdef const floating[::1] params = tape.params
    cdef const int[::1] lens = tape.lengths
    run.lengths = &lens[0] if lens is not None else NULL
    run.params = &params[0] if params is not None else NULL
    cdef const floating[:, :, ::1] mask_view = tape.masks
    run.mask = &mask_view[0, 0, 0] if tape.masks is not None else NULL
    ws = tape.workspace
    _take_forward_buffers(&run, ws, T, B)
    _pointer_of(ws.take("d_pre", T * B * plan.G), &run.d_pre)
    d_state = ws.take("d_state", B * plan.S)
    rows = d_state[:B * plan.S].reshape(B, plan.S)  # (a workspace buffer may be longer)
    rows[...] = 0
    for k in range(d.n_states):
        col, width = _state_columns(&plan, d, k)
        rows[:, col:col + width] = d_states[k]
    _pointer_of(d_state, &run.d_state)
    _pointer_of(ws.take("d_stage_input", B * plan.V), &run.d_stage_input)
    cdef int nt = tape.threads  # the forward packed each thread's panels for its own units
    run.packed_threads = nt
    run.d_params = NULL
    if d.whole_rows and plan.P > 0:  # one copy per thread, summed at the end
        _pointer_of(ws.take("d_params", plan.P * nt), &run.d_params)
    elif plan.P > 0:  # each thread writes its own units
        run.d_params = &d_params[0]
    run.db = &db[0]
    cdef const floating[:, ::1] W_proj = tape.projection
    if plan.proj > 0:
        run.d_proj_out, run.ld_d_proj_out, run.W_proj = &d_out[0, 0, 0], ld, &W_proj[0, 0]
        run.d_W_proj = &d_projection[0, 0]
        _pointer_of(ws.take("d_hidden", T * B * H), &run.d_out)
        run.ld_d_out = H
        _pointer_of(ws.take("d_r", T * B * plan.proj), &run.d_r)
    else:
        run.d_out, run.ld_d_out = &d_out[0, 0, 0], ld
    run.n_inputs, run.x, run.W = I, &x[0, 0, 0], &W[0, 0]
    run.dW, run.dx, run.accumulate_dx = &dW[0, 0], &dx[0, 0, 0] if dx is not None else NULL, accumulate_dx
    for k in range(d.n_recurrent):
        run.d_weight[k] = d_weight[k]
    _pointer_of(ws.take("packed_dx", plan.GIH * I), &run.packed_dx)
    run.weight_scratch_size = _weight_scratch_size(d, &plan, I)
    _pointer_of(ws.take("weight_scratch", run.weight_scratch_size * nt), &run.weight_scratch)
    tape.busy = True
    try:
        with nogil:
            if floating is float:
                lc_team_run(nt, _backward_team_f, &run)
            else:
                lc_team_run(nt, _backward_team_d, &run)
    finally:
        tape.busy = False
    if d.whole_rows and plan.P > 0:
        memcpy(&d_params[0], run.d_params, plan.P * sizeof(floating))
    d_initial = []
    for k in range(d.n_states):
        col, width = _state_columns(&plan, d, k)
        d_initial.append(rows[:, col:col + width].copy())
    return tuple(d_initial)
