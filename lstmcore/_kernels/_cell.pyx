"""The gated-cell kernel family: forward and full BPTT over a whole time-major sequence, GIL released throughout.

One spec covers vanilla, peephole, coupled (CIFG), the gate-removal and activation variants of "LSTM: A Search Space
Odyssey" and any new combination of them. Per step (cuDNN recipe): the input projection of all steps is one GEMM before
the loop, the recurrence is one GEMM (GEMV when B == 1) per step, gates and cell are a fused element-wise pass per batch row.

Memory layout (row-major, time-major):
    x       (T, B, I)            W (G*H, I), R (G*H, H), b (G*H), p (P*H)   blocks: present gates of (i, f, o), then z
    states  (T+1, B, H)          forward: slot 0 initial, slot t+1 after step t; reverse: slot T initial, slot t after t
    gates   (T, B, G*H)          activations of every block (pre-activations plus bias on the way in)
    hc      (T, B, H)            h(c_t), the output activation of the cell
    pre     (T, B, G*H) or None  raw pre-activations, kept only when clipping, for the clamp's derivative
    Rg      (3H, 3H) or None     full gate recurrence (FGR): gate pre-activations [i, f, o] += Rg [i, f, o]_{t-1}
    a_states (T+1, B, 3H)        FGR only: the gate activations [i, f, o] after each step, like the states
    out     (T, B, ld)           the direction's columns of the layer output; zero past a sequence's length
A sequence's padded steps (t >= lengths[b]) carry the state unchanged, so the final slot always holds the final state and
the slot before a real step always holds its previous state, in both directions.
"""
from libc.string cimport memcpy, memset

import numpy as np

from lstmcore._kernels._blas cimport gemm, gemv, small_gemm, pack_panels, NoTrans, Trans
from lstmcore._kernels._activations cimport (activate_block, multiply_derivative_block, clip_block,
                                              zero_where_clipped)


cdef inline floating *_block(floating *base, Py_ssize_t blk, Py_ssize_t H) noexcept nogil:
    return base + blk * H if blk >= 0 else NULL


cdef void _step_forward(const CellSpec *s, floating *g, floating *pr, const floating *p,
                        const floating *c_prev, floating *c_next, floating *h_next, floating *hc,
                        floating *out) noexcept nogil:
    """One batch row of one step: ``g`` holds pre-activations on entry and activations on exit."""
    cdef Py_ssize_t H = s.hidden, j
    cdef floating clip = <floating> s.clip, y
    cdef floating *gi = _block(g, s.blk_i, H)
    cdef floating *gf = _block(g, s.blk_f, H)
    cdef floating *go = _block(g, s.blk_o, H)
    cdef floating *gz = g + s.blk_z * H
    cdef const floating *pi = _block(<floating *> p, s.pk_i, H)
    cdef const floating *pf = _block(<floating *> p, s.pk_f, H)
    cdef const floating *po = _block(<floating *> p, s.pk_o, H)

    if pi != NULL:
        for j in range(H):
            gi[j] += pi[j] * c_prev[j]
    if pf != NULL:
        for j in range(H):
            gf[j] += pf[j] * c_prev[j]
    if clip > 0:
        if gi != NULL:
            clip_block(clip, gi, pr + s.blk_i * H, gi, H)
        if gf != NULL:
            clip_block(clip, gf, pr + s.blk_f * H, gf, H)
        clip_block(clip, gz, pr + s.blk_z * H, gz, H)
    if gi != NULL:
        activate_block(s.act_gate, <floating> s.gate_alpha, <floating> s.gate_beta, gi, H)
    if gf != NULL:
        activate_block(s.act_gate, <floating> s.gate_alpha, <floating> s.gate_beta, gf, H)
    activate_block(s.act_input, <floating> s.input_alpha, <floating> s.input_beta, gz, H)

    # c_t = z * i + c_{t-1} * f, with i = 1 or f = 1 for a removed gate and f = 1 - i when coupled
    if gi != NULL and s.coupled:
        for j in range(H):
            c_next[j] = gz[j] * gi[j] + c_prev[j] * (1 - gi[j])
    elif gi != NULL and gf != NULL:
        for j in range(H):
            c_next[j] = gz[j] * gi[j] + c_prev[j] * gf[j]
    elif gi != NULL:
        for j in range(H):
            c_next[j] = gz[j] * gi[j] + c_prev[j]
    elif gf != NULL:
        for j in range(H):
            c_next[j] = gz[j] + c_prev[j] * gf[j]
    else:
        for j in range(H):
            c_next[j] = gz[j] + c_prev[j]

    if go != NULL:
        if po != NULL:  # the output gate's peephole sees the new cell
            for j in range(H):
                go[j] += po[j] * c_next[j]
        if clip > 0:
            clip_block(clip, go, pr + s.blk_o * H, go, H)
        activate_block(s.act_gate, <floating> s.gate_alpha, <floating> s.gate_beta, go, H)

    memcpy(hc, c_next, H * sizeof(floating))  # clip does not apply to the cell fed to h (as ONNX Runtime)
    activate_block(s.act_output, <floating> s.output_alpha, <floating> s.output_beta, hc, H)
    if go != NULL:
        for j in range(H):
            y = go[j] * hc[j]
            h_next[j] = y
            out[j] = y
    else:
        memcpy(h_next, hc, H * sizeof(floating))
        memcpy(out, hc, H * sizeof(floating))


cdef void cell_forward(const CellSpec *s, Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, bint reverse,
                       const floating *x, const floating *W, const floating *R, const floating *b,
                       const floating *p, const floating *Rg, const int *lengths,
                       floating *h_states, floating *c_states, floating *a_states,
                       floating *gates, floating *hc, floating *pre,
                       floating *out, Py_ssize_t ld_out, floating *packed) noexcept nogil:
    """``packed``: NULL to run the recurrence on BLAS, or scratch for the packed small-GEMM path (G*H elements, plus
    9*H*H with a gate recurrence). ``Rg`` and ``a_states`` are NULL unless ``s.gate_recurrence``."""
    cdef Py_ssize_t H = s.hidden, GH = s.n_blocks * s.hidden, BH = B * s.hidden, H3 = 3 * s.hidden
    cdef Py_ssize_t n, t, r, prev, nxt
    cdef floating *g_t
    cdef floating *packed_g = packed + GH * H if packed != NULL else NULL

    # Input projection of every step at once: gates = b + x W^T
    for r in range(T * B):
        memcpy(gates + r * GH, b, GH * sizeof(floating))
    gemm(NoTrans, Trans, <int> (T * B), <int> GH, <int> I, <floating> 1, x, <int> I, W, <int> I,
         <floating> 1, gates, <int> GH)

    if packed != NULL:  # R^T as the K x N = H x GH operand
        pack_panels(H, GH, R, 1, H, packed)
        if s.gate_recurrence:
            pack_panels(H3, H3, Rg, 1, H3, packed_g)
    for n in range(T):
        t = T - 1 - n if reverse else n
        prev = t + 1 if reverse else t
        nxt = t if reverse else t + 1
        g_t = gates + t * B * GH
        if packed != NULL:
            small_gemm(B, GH, H, h_states + prev * BH, H, packed, R, 1, H, g_t, GH)
        elif B == 1:
            gemv(NoTrans, <int> GH, <int> H, <floating> 1, R, <int> H, h_states + prev * BH, 1,
                 <floating> 1, g_t, 1)
        else:
            gemm(NoTrans, Trans, <int> B, <int> GH, <int> H, <floating> 1, h_states + prev * BH, <int> H,
                 R, <int> H, <floating> 1, g_t, <int> GH)
        if s.gate_recurrence:  # [i, f, o] pre-activations += Rg [i, f, o]_{t-1}
            if packed != NULL:
                small_gemm(B, H3, H3, a_states + prev * B * H3, H3, packed_g, Rg, 1, H3, g_t, GH)
            else:
                gemm(NoTrans, Trans, <int> B, <int> H3, <int> H3, <floating> 1, a_states + prev * B * H3,
                     <int> H3, Rg, <int> H3, <floating> 1, g_t, <int> GH)
        for r in range(B):
            if lengths != NULL and t >= lengths[r]:
                memcpy(h_states + nxt * BH + r * H, h_states + prev * BH + r * H, H * sizeof(floating))
                memcpy(c_states + nxt * BH + r * H, c_states + prev * BH + r * H, H * sizeof(floating))
                if s.gate_recurrence:
                    memcpy(a_states + (nxt * B + r) * H3, a_states + (prev * B + r) * H3, H3 * sizeof(floating))
                memset(out + (t * B + r) * ld_out, 0, H * sizeof(floating))
            else:
                _step_forward(s, g_t + r * GH, pre + (t * B + r) * GH if pre != NULL else NULL, p,
                              c_states + prev * BH + r * H, c_states + nxt * BH + r * H,
                              h_states + nxt * BH + r * H, hc + (t * B + r) * H, out + (t * B + r) * ld_out)
                if s.gate_recurrence:  # blocks i, f, o are the first three
                    memcpy(a_states + (nxt * B + r) * H3, g_t + r * GH, H3 * sizeof(floating))


cdef inline void _finish_gate_delta(const CellSpec *s, floating *d, const floating *y, const floating *da,
                                    const floating *pr, Py_ssize_t H) noexcept nogil:
    """A gate's pre-activation delta: d = (d + da) * sigma'(y), zero where ``pr`` (if given) was clamped."""
    cdef Py_ssize_t j
    if da != NULL:  # the gate recurrence's share, from step t+1
        for j in range(H):
            d[j] += da[j]
    multiply_derivative_block(s.act_gate, <floating> s.gate_alpha, y, d, H)
    if pr != NULL:
        zero_where_clipped(<floating> s.clip, pr, d, H)


cdef void _step_backward(const CellSpec *s, const floating *g, const floating *pr, const floating *p,
                         const floating *c_prev, const floating *c_next, const floating *hc,
                         floating *dh, floating *dc, floating *da, floating *dg, floating *dcell,
                         floating *dp) noexcept nogil:
    """One batch row of one BPTT step.

    On entry ``dh`` = dE/dy_t and ``dc`` = the cell delta carried from t+1; on exit ``dg`` holds the pre-activation
    deltas, ``dc`` the cell delta for t-1 and ``dh`` zero (the caller adds R^T dg). With a full gate recurrence,
    ``da`` holds dE/d[i, f, o] from step t+1 on entry (added before the gates' derivatives) and zero on exit.
    """
    cdef Py_ssize_t H = s.hidden, j
    cdef floating clip = <floating> s.clip
    cdef const floating *gi = _block(<floating *> g, s.blk_i, H)
    cdef const floating *gf = _block(<floating *> g, s.blk_f, H)
    cdef const floating *go = _block(<floating *> g, s.blk_o, H)
    cdef const floating *gz = g + s.blk_z * H
    cdef floating *dgi = _block(dg, s.blk_i, H)
    cdef floating *dgf = _block(dg, s.blk_f, H)
    cdef floating *dgo = _block(dg, s.blk_o, H)
    cdef floating *dgz = dg + s.blk_z * H
    cdef const floating *pi = _block(<floating *> p, s.pk_i, H)
    cdef const floating *pf = _block(<floating *> p, s.pk_f, H)
    cdef const floating *po = _block(<floating *> p, s.pk_o, H)
    cdef floating *dpi = _block(dp, s.pk_i, H)
    cdef floating *dpf = _block(dp, s.pk_f, H)
    cdef floating *dpo = _block(dp, s.pk_o, H)
    cdef floating *dai = da + s.blk_i * H if da != NULL else NULL
    cdef floating *daf = da + s.blk_f * H if da != NULL else NULL
    cdef floating *dao = da + s.blk_o * H if da != NULL else NULL

    # y = o * h(c): dcell = dy * o * h'(c), d_obar = dy * h(c) * sigma'(obar)
    if go != NULL:
        for j in range(H):
            dcell[j] = dh[j] * go[j]
            dgo[j] = dh[j] * hc[j]
    else:
        memcpy(dcell, dh, H * sizeof(floating))
    multiply_derivative_block(s.act_output, <floating> s.output_alpha, hc, dcell, H)
    if go != NULL:
        _finish_gate_delta(s, dgo, go, dao, pr + s.blk_o * H if clip > 0 else NULL, H)
        if po != NULL:
            for j in range(H):
                dcell[j] += po[j] * dgo[j]
                dpo[j] += c_next[j] * dgo[j]
    for j in range(H):
        dcell[j] += dc[j]

    # block input z and the gates feeding the cell
    if gi != NULL:
        for j in range(H):
            dgz[j] = dcell[j] * gi[j]
    else:
        memcpy(dgz, dcell, H * sizeof(floating))
    multiply_derivative_block(s.act_input, <floating> s.input_alpha, gz, dgz, H)
    if clip > 0:
        zero_where_clipped(clip, pr + s.blk_z * H, dgz, H)
    if gi != NULL:
        if s.coupled:
            for j in range(H):
                dgi[j] = dcell[j] * (gz[j] - c_prev[j])
        else:
            for j in range(H):
                dgi[j] = dcell[j] * gz[j]
        _finish_gate_delta(s, dgi, gi, dai, pr + s.blk_i * H if clip > 0 else NULL, H)
    if gf != NULL:
        for j in range(H):
            dgf[j] = dcell[j] * c_prev[j]
        _finish_gate_delta(s, dgf, gf, daf, pr + s.blk_f * H if clip > 0 else NULL, H)

    # the cell delta carried to t-1: through f and through the peepholes of i and f
    if gi != NULL and s.coupled:
        for j in range(H):
            dc[j] = dcell[j] * (1 - gi[j])
    elif gf != NULL:
        for j in range(H):
            dc[j] = dcell[j] * gf[j]
    else:
        memcpy(dc, dcell, H * sizeof(floating))
    if pi != NULL:
        for j in range(H):
            dc[j] += pi[j] * dgi[j]
            dpi[j] += c_prev[j] * dgi[j]
    if pf != NULL:
        for j in range(H):
            dc[j] += pf[j] * dgf[j]
            dpf[j] += c_prev[j] * dgf[j]
    memset(dh, 0, H * sizeof(floating))
    if da != NULL:
        memset(da, 0, 3 * H * sizeof(floating))


cdef void cell_backward(const CellSpec *s, Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, bint reverse,
                        const floating *x, const floating *W, const floating *R, const floating *p,
                        const floating *Rg, const int *lengths,
                        const floating *h_states, const floating *c_states, const floating *a_states,
                        const floating *gates, const floating *hc, const floating *pre,
                        const floating *d_out, Py_ssize_t ld_dout,
                        floating *dh, floating *dc, floating *da, floating *d_gates, floating *work,
                        floating *dW, floating *dR, floating *db, floating *dp, floating *dRg,
                        floating *dx, bint accumulate_dx, floating *packed) noexcept nogil:
    """Full BPTT. ``dh``/``dc`` (B, H) hold dE/dh_n, dE/dc_n on entry and dE/dh_0, dE/dc_0 on exit.

    ``work`` is H scratch elements; ``da`` (B, 3H) scratch for the gate recurrence (NULL without one). dW, dR, db, dp,
    dRg are overwritten; dx is overwritten or, with ``accumulate_dx``, added to (the second direction of a
    bidirectional layer), or skipped when NULL (the input needs no gradient). ``packed`` as in ``cell_forward``.
    """
    cdef Py_ssize_t H = s.hidden, GH = s.n_blocks * s.hidden, BH = B * s.hidden, TB = T * B, H3 = 3 * s.hidden
    cdef Py_ssize_t n, t, r, j, k, prev, nxt
    cdef const floating *drow
    cdef floating *dh_r
    cdef floating *dg_t
    cdef Py_ssize_t n_peep = (s.pk_i >= 0) + (s.pk_f >= 0) + (s.pk_o >= 0)
    cdef floating *packed_g = packed + GH * H if packed != NULL else NULL

    if dp != NULL:
        memset(dp, 0, n_peep * H * sizeof(floating))
    if s.gate_recurrence:
        memset(da, 0, B * H3 * sizeof(floating))
    if packed != NULL:  # R as the K x N = GH x H operand
        pack_panels(GH, H, R, H, 1, packed)
        if s.gate_recurrence:
            pack_panels(H3, H3, Rg, H3, 1, packed_g)
    for n in range(T):
        t = n if reverse else T - 1 - n
        prev = t + 1 if reverse else t
        nxt = t if reverse else t + 1
        dg_t = d_gates + t * B * GH
        for r in range(B):
            if lengths != NULL and t >= lengths[r]:
                memset(dg_t + r * GH, 0, GH * sizeof(floating))  # padded: the state's delta passes through
                continue
            dh_r = dh + r * H
            drow = d_out + (t * B + r) * ld_dout
            for j in range(H):
                dh_r[j] += drow[j]
            _step_backward(s, gates + (t * B + r) * GH, pre + (t * B + r) * GH if pre != NULL else NULL, p,
                           c_states + prev * BH + r * H, c_states + nxt * BH + r * H, hc + (t * B + r) * H,
                           dh_r, dc + r * H, da + r * H3 if s.gate_recurrence else NULL, dg_t + r * GH, work, dp)
        # dE/dy_{t-1} += R^T delta_t
        if packed != NULL:
            small_gemm(B, H, GH, dg_t, GH, packed, R, H, 1, dh, H)
        elif B == 1:
            gemv(Trans, <int> GH, <int> H, <floating> 1, R, <int> H, dg_t, 1, <floating> 1, dh, 1)
        else:
            gemm(NoTrans, NoTrans, <int> B, <int> H, <int> GH, <floating> 1, dg_t, <int> GH, R, <int> H,
                 <floating> 1, dh, <int> H)
        if s.gate_recurrence:  # dE/d[i, f, o]_{t-1} += Rg^T delta[i, f, o]_t
            if packed != NULL:
                small_gemm(B, H3, H3, dg_t, GH, packed_g, Rg, H3, 1, da, H3)
            else:
                gemm(NoTrans, NoTrans, <int> B, <int> H3, <int> H3, <floating> 1, dg_t, <int> GH, Rg, <int> H3,
                     <floating> 1, da, <int> H3)

    # One large GEMM each: dW = delta^T x, dR = delta^T y_prev, dx = delta W
    gemm(Trans, NoTrans, <int> GH, <int> I, <int> TB, <floating> 1, d_gates, <int> GH, x, <int> I,
         <floating> 0, dW, <int> I)
    gemm(Trans, NoTrans, <int> GH, <int> H, <int> TB, <floating> 1, d_gates, <int> GH,
         h_states + (BH if reverse else 0), <int> H, <floating> 0, dR, <int> H)
    if s.gate_recurrence:
        gemm(Trans, NoTrans, <int> H3, <int> H3, <int> TB, <floating> 1, d_gates, <int> GH,
             a_states + (B * H3 if reverse else 0), <int> H3, <floating> 0, dRg, <int> H3)
    memset(db, 0, GH * sizeof(floating))
    for r in range(TB):
        for k in range(GH):
            db[k] += d_gates[r * GH + k]
    if dx != NULL:
        gemm(NoTrans, NoTrans, <int> TB, <int> I, <int> GH, <floating> 1, d_gates, <int> GH, W, <int> I,
             <floating> (1 if accumulate_dx else 0), dx, <int> I)


# ---------------------------------------------------------------------------------------------------------------------
# Python boundary. The layer validates user input; these wrappers re-check the shapes they rely on, so that a direct
# call with inconsistent arrays raises instead of reading out of bounds.

cdef CellSpec _spec_from_layout(tuple layout, Py_ssize_t H) except *:
    cdef CellSpec s
    (s.n_blocks, s.blk_i, s.blk_f, s.blk_o, s.blk_z, s.coupled, s.pk_i, s.pk_f, s.pk_o,
     s.act_gate, s.gate_alpha, s.gate_beta, s.act_input, s.input_alpha, s.input_beta,
     s.act_output, s.output_alpha, s.output_beta, s.clip, s.gate_recurrence) = layout
    # The kernels index with these numbers unchecked: validate them all, so a bad tuple raises instead of corrupting.
    cdef Py_ssize_t n_peep = (s.pk_i >= 0) + (s.pk_f >= 0) + (s.pk_o >= 0)
    blocks = [b for b in (s.blk_i, s.blk_f, s.blk_o, s.blk_z) if b >= 0]
    peeps = [k for k in (s.pk_i, s.pk_f, s.pk_o) if k >= 0]
    _check(1 <= s.n_blocks <= 4 and s.blk_z >= 0 and sorted(blocks) == list(range(s.n_blocks)),
           "layout: gate blocks must number the present gates and z as 0 .. n_blocks-1")
    _check(sorted(peeps) == list(range(n_peep)), "layout: peephole blocks must be 0 .. n_peepholes-1")
    _check((s.pk_i < 0 or s.blk_i >= 0) and (s.pk_f < 0 or s.blk_f >= 0) and (s.pk_o < 0 or s.blk_o >= 0),
           "layout: a peephole needs its gate")
    _check(not s.coupled or (s.blk_i >= 0 and s.blk_f < 0), "layout: a coupled cell has i and no f block")
    _check(all(0 <= a <= 5 for a in (s.act_gate, s.act_input, s.act_output)), "layout: unknown activation code")
    _check(s.clip >= 0, "layout: clip must be >= 0")
    if s.gate_recurrence and not (s.blk_i == 0 and s.blk_f == 1 and s.blk_o == 2):
        raise ValueError("a gate recurrence needs the input, forget and output gates, uncoupled")
    s.hidden = H
    return s


cdef Py_ssize_t _row_stride(object arr, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, Py_ssize_t itemsize,
                            str name) except -1:
    """Row stride (in elements) of a (T, B, H) view whose rows are contiguous and evenly spaced."""
    if tuple(arr.shape)[:3] != (T, B, H):
        raise ValueError(f"{name} has shape {tuple(arr.shape[:3])}, expected {(T, B, H)}")
    st = arr.strides
    # The stride of a size-1 axis is meaningless (NumPy may report anything), so only the axes of size > 1 are checked.
    if B > 1:
        row = st[1]
        spaced = T <= 1 or st[0] == B * row
    elif T > 1:
        row, spaced = st[0], True
    else:
        row, spaced = H * itemsize, True
    if not spaced or (H > 1 and st[2] != itemsize) or row % itemsize or row < H * itemsize:
        raise ValueError(f"{name} must have contiguous rows evenly spaced in memory")
    return row // itemsize


#: Batch sizes up to this run the per-step recurrence on the packed single-thread kernel; larger ones on BLAS, whose
#: threads pay off once each step's GEMM is large (measured on 2 cores: see benchmarks/).
SMALL_GEMM_MAX_BATCH = 32


def _packed_workspace(step_gemm, Py_ssize_t B, Py_ssize_t GH, Py_ssize_t H, bint gate_recurrence, dtype):
    """None for the BLAS recurrence, or the scratch array of the packed small-GEMM recurrence."""
    if step_gemm == "auto":
        step_gemm = "packed" if B <= SMALL_GEMM_MAX_BATCH else "blas"
    if step_gemm == "blas":
        return None
    if step_gemm != "packed":
        raise ValueError(f"step_gemm must be 'auto', 'blas' or 'packed', got {step_gemm!r}")
    return np.empty(GH * H + (9 * H * H if gate_recurrence else 0), dtype=dtype)


def _check(bint ok, str message):
    if not ok:
        raise ValueError(message)


cdef _check_gate_recurrence(const CellSpec *s, object Rg, object a_states, Py_ssize_t T, Py_ssize_t B,
                            Py_ssize_t H):
    if s.gate_recurrence:
        _check(Rg is not None and tuple(Rg.shape)[:2] == (3 * H, 3 * H), "Rg must be (3H, 3H)")
        _check(a_states is not None and tuple(a_states.shape)[:3] == (T + 1, B, 3 * H), "a_states shape")
    else:
        _check(Rg is None and a_states is None, "Rg and a_states are only for a gate recurrence")


def forward(tuple layout, bint reverse, const floating[:, :, ::1] x, const floating[:, ::1] W,
            const floating[:, ::1] R, const floating[::1] b, const floating[::1] p, const int[::1] lengths,
            floating[:, :, ::1] h_states, floating[:, :, ::1] c_states, floating[:, :, ::1] gates,
            floating[:, :, ::1] hc, floating[:, :, ::1] pre, floating[:, :, :] out,
            const floating[:, ::1] Rg=None, floating[:, :, ::1] a_states=None, step_gemm="auto"):
    """Run one direction of one layer over a whole sequence (see the module docstring for every array)."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H = R.shape[1]
    cdef CellSpec s = _spec_from_layout(layout, H)
    cdef Py_ssize_t GH = s.n_blocks * H, n_peep = (s.pk_i >= 0) + (s.pk_f >= 0) + (s.pk_o >= 0)
    _check(T >= 1 and B >= 1 and I >= 1 and H >= 1, "empty sequence, batch, input or hidden size")
    _check(W.shape[0] == GH and W.shape[1] == I and R.shape[0] == GH and b.shape[0] == GH, "W, R, b shapes")
    _check((p is None) == (n_peep == 0) and (p is None or p.shape[0] == n_peep * H), "peephole shape")
    _check(lengths is None or lengths.shape[0] == B, "lengths shape")
    _check(tuple(h_states.shape)[:3] == (T + 1, B, H) and tuple(c_states.shape)[:3] == (T + 1, B, H), "state shapes")
    _check(tuple(gates.shape)[:3] == (T, B, GH) and tuple(hc.shape)[:3] == (T, B, H), "workspace shapes")
    _check((pre is None) == (s.clip <= 0) and (pre is None or tuple(pre.shape)[:3] == (T, B, GH)), "pre shape")
    _check_gate_recurrence(&s, Rg, a_states, T, B, H)
    if lengths is not None:
        for r in range(B):
            _check(0 <= lengths[r] <= T, "lengths out of range")
    cdef Py_ssize_t ld = _row_stride(out, T, B, H, sizeof(floating), "out")
    cdef floating[::1] packed = _packed_workspace(step_gemm, B, GH, H, s.gate_recurrence,
                                                  np.float32 if floating is float else np.float64)
    with nogil:
        cell_forward(&s, T, B, I, reverse, &x[0, 0, 0], &W[0, 0], &R[0, 0], &b[0],
                     &p[0] if p is not None else NULL, &Rg[0, 0] if Rg is not None else NULL,
                     &lengths[0] if lengths is not None else NULL,
                     &h_states[0, 0, 0], &c_states[0, 0, 0], &a_states[0, 0, 0] if a_states is not None else NULL,
                     &gates[0, 0, 0], &hc[0, 0, 0],
                     &pre[0, 0, 0] if pre is not None else NULL, &out[0, 0, 0], ld,
                     &packed[0] if packed is not None else NULL)


def backward(tuple layout, bint reverse, const floating[:, :, ::1] x, const floating[:, ::1] W,
             const floating[:, ::1] R, const floating[::1] p, const int[::1] lengths,
             const floating[:, :, ::1] h_states, const floating[:, :, ::1] c_states,
             const floating[:, :, ::1] gates, const floating[:, :, ::1] hc, const floating[:, :, ::1] pre,
             const floating[:, :, :] d_out, floating[:, ::1] dh, floating[:, ::1] dc,
             floating[:, :, ::1] d_gates, floating[:, ::1] dW, floating[:, ::1] dR, floating[::1] db,
             floating[::1] dp, floating[:, :, ::1] dx, bint accumulate_dx,
             const floating[:, ::1] Rg=None, const floating[:, :, ::1] a_states=None, floating[:, ::1] dRg=None,
             step_gemm="auto"):
    """BPTT for one direction of one layer, from the arrays its ``forward`` filled (see ``cell_backward``)."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H = R.shape[1]
    cdef CellSpec s = _spec_from_layout(layout, H)
    cdef Py_ssize_t GH = s.n_blocks * H, n_peep = (s.pk_i >= 0) + (s.pk_f >= 0) + (s.pk_o >= 0)
    _check(T >= 1 and B >= 1 and I >= 1 and H >= 1, "empty sequence, batch, input or hidden size")
    _check(W.shape[0] == GH and W.shape[1] == I and R.shape[0] == GH, "W, R shapes")
    _check((p is None) == (n_peep == 0) and (p is None or p.shape[0] == n_peep * H), "peephole shape")
    _check((dp is None) == (p is None) and (dp is None or dp.shape[0] == p.shape[0]), "dp shape")
    _check(lengths is None or lengths.shape[0] == B, "lengths shape")
    _check(tuple(h_states.shape)[:3] == (T + 1, B, H) and tuple(c_states.shape)[:3] == (T + 1, B, H), "state shapes")
    _check(tuple(gates.shape)[:3] == (T, B, GH) and tuple(hc.shape)[:3] == (T, B, H), "workspace shapes")
    _check(tuple(d_gates.shape)[:3] == (T, B, GH), "d_gates shape")
    _check((pre is None) == (s.clip <= 0) and (pre is None or tuple(pre.shape)[:3] == (T, B, GH)), "pre shape")
    _check(tuple(dh.shape)[:2] == (B, H) and tuple(dc.shape)[:2] == (B, H), "dh, dc shapes")
    _check(tuple(dW.shape)[:2] == (GH, I) and tuple(dR.shape)[:2] == (GH, H) and db.shape[0] == GH, "dW, dR, db shapes")
    _check(dx is None or tuple(dx.shape)[:3] == (T, B, I), "dx shape")
    _check_gate_recurrence(&s, Rg, a_states, T, B, H)
    _check((dRg is None) == (Rg is None) and (dRg is None or tuple(dRg.shape)[:2] == (3 * H, 3 * H)), "dRg shape")
    if lengths is not None:
        for r in range(B):
            _check(0 <= lengths[r] <= T, "lengths out of range")
    cdef Py_ssize_t ld = _row_stride(d_out, T, B, H, sizeof(floating), "d_out")
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] work = np.empty(H, dtype=dtype)
    cdef floating[::1] da = np.empty(B * 3 * H, dtype=dtype) if s.gate_recurrence else None
    cdef floating[::1] packed = _packed_workspace(step_gemm, B, GH, H, s.gate_recurrence, dtype)
    with nogil:
        cell_backward(&s, T, B, I, reverse, &x[0, 0, 0], &W[0, 0], &R[0, 0],
                      &p[0] if p is not None else NULL, &Rg[0, 0] if Rg is not None else NULL,
                      &lengths[0] if lengths is not None else NULL,
                      &h_states[0, 0, 0], &c_states[0, 0, 0], &a_states[0, 0, 0] if a_states is not None else NULL,
                      &gates[0, 0, 0], &hc[0, 0, 0],
                      &pre[0, 0, 0] if pre is not None else NULL, &d_out[0, 0, 0], ld,
                      &dh[0, 0], &dc[0, 0], &da[0] if da is not None else NULL, &d_gates[0, 0, 0], &work[0],
                      &dW[0, 0], &dR[0, 0], &db[0], &dp[0] if dp is not None else NULL,
                      &dRg[0, 0] if dRg is not None else NULL,
                      &dx[0, 0, 0] if dx is not None else NULL, accumulate_dx,
                      &packed[0] if packed is not None else NULL)
