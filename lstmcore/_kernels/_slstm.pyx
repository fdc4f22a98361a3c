"""xLSTM's sLSTM (Beck et al., 2024) as a step of the sequence driver.

One step, per batch row and hidden unit (the driver has already added x W^T + b and R h_{t-1}, R block-diagonal per
head, to the pre-activations [ĩ, f̃, z̃, õ]):

    l   = log sigmoid(f̃)   (or f̃: the exponential forget gate)       the forget gate's log
    m_t = max(ĩ, l + m_{t-1})                                         the stabiliser
    i   = exp(ĩ - m_t)      f = exp(l + m_{t-1} - m_t)                both <= 1: no overflow
    c_t = f c_{t-1} + i tanh(z̃)      n_t = f n_{t-1} + i             cell and normaliser
    h_t = sigmoid(õ) c_t / n_t

The stabiliser cancels in c_t / n_t, so h is that of the unstabilised cell (exp(ĩ), exp(l)). The backward is the
exact derivative of these equations, m's max included (the derivative goes to the larger argument); it differs from
xLSTM's CUDA kernel, which treats m as a constant, only in the gradients of the returned c, n, m and of the initial m
(for a loss on the outputs alone the two agree: the terms through m cancel, see docs/cells.md).

Layout for the driver: blocks [ĩ, f̃, z̃, õ], all fed by x; the carried row [h, c, n, m] (all four public states); R
reads h. The forward leaves [i, f, tanh(z̃), sigmoid(õ)] in the blocks; the cache holds dl/df̃ (sigmoid(-f̃), or 1) and
which argument of the max was taken (1: ĩ).
"""
from cython cimport floating

from lstmcore._kernels._driver cimport CellKernel, CellDesc, StepView
from lstmcore._kernels._activations cimport activate_block, SIGMOID, TANH


cdef extern from "lstmcore_fastmath.h" nogil:
    float lc_expf(float x)
    double lc_exp(double x)
    float lc_log_sigmoidf(float x)
    double lc_log_sigmoid(double x)


cdef struct SLSTMSpec:
    bint exponential_forget    # f = exp(f̃) instead of sigmoid(f̃)


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return lc_expf(x)
    else:
        return lc_exp(x)


cdef inline floating _log_sigmoid(floating x) noexcept nogil:
    if floating is float:
        return lc_log_sigmoidf(x)
    else:
        return lc_log_sigmoid(x)


cdef void _forward(const SLSTMSpec *s, const StepView *v, floating *pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, n = v.units, r, j
    cdef floating l, a, m, it
    cdef floating *gi
    cdef floating *gf
    cdef floating *gz
    cdef floating *go
    cdef floating *dl
    cdef floating *took_i
    cdef const floating *prev
    cdef floating *nxt
    cdef floating *out
    for r in range(v.rows):
        gi = pre + r * v.ld_pre
        gf, gz, go = gi + H, gi + 2 * H, gi + 3 * H
        dl = <floating *> v.cache + r * v.ld_cache
        took_i = dl + H
        prev = <const floating *> v.prev + r * v.ld_state
        nxt = <floating *> v.next + r * v.ld_state
        out = <floating *> v.out + r * v.ld_out
        # prev/nxt vectors: h at 0, c at H, n at 2H, m at 3H
        if s.exponential_forget:
            for j in range(n):
                dl[j] = 1
        else:
            for j in range(n):
                dl[j] = 1 / (1 + _exp(gf[j]))        # d log sigmoid(f̃) / d f̃ = sigmoid(-f̃)
                gf[j] = _log_sigmoid(gf[j])
        for j in range(n):
            it = gi[j]
            a = gf[j] + prev[3 * H + j]
            m = it if it >= a else a
            took_i[j] = 1 if it >= a else 0
            gi[j] = _exp(it - m)
            gf[j] = _exp(a - m)
            nxt[3 * H + j] = m
        activate_block(TANH, <floating> 0, <floating> 0, gz, n)
        activate_block(SIGMOID, <floating> 0, <floating> 0, go, n)
        for j in range(n):
            nxt[H + j] = gf[j] * prev[H + j] + gi[j] * gz[j]
            nxt[2 * H + j] = gf[j] * prev[2 * H + j] + gi[j]
            nxt[j] = go[j] * nxt[H + j] / nxt[2 * H + j]
            out[j] = nxt[j]


cdef void _backward(const SLSTMSpec *s, const StepView *v, floating *d_pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, n = v.units, r, j
    cdef floating i, f, z, o, inv_n, dy, dc, dn, di, da, dm
    cdef const floating *g
    cdef const floating *dl
    cdef const floating *prev
    cdef const floating *nxt
    cdef const floating *dout
    cdef floating *ds
    cdef floating *dg
    for r in range(v.rows):
        g = <const floating *> v.pre + r * v.ld_pre
        dl = <const floating *> v.cache + r * v.ld_cache
        prev = <const floating *> v.prev + r * v.ld_state
        nxt = <const floating *> v.next + r * v.ld_state
        dout = <const floating *> v.d_out + r * v.ld_d_out
        ds = <floating *> v.d_state + r * v.ld_state
        dg = d_pre + r * v.ld_pre
        for j in range(n):
            i, f, z, o = g[j], g[H + j], g[2 * H + j], g[3 * H + j]
            inv_n = 1 / nxt[2 * H + j]
            dy = ds[j] + dout[j]
            dg[3 * H + j] = dy * nxt[H + j] * inv_n * o * (1 - o)            # h = o c / n
            dc = ds[H + j] + dy * o * inv_n
            dn = ds[2 * H + j] - dy * nxt[j] * inv_n
            dg[2 * H + j] = dc * i * (1 - z * z)                              # c = f c' + i z,  n = f n' + i
            di = (dc * z + dn) * i                                            # i = exp(ĩ - m)
            da = (dc * prev[H + j] + dn * prev[2 * H + j]) * f                # f = exp(l + m' - m)
            dm = ds[3 * H + j] - di - da
            if dl[H + j] != 0:                                                # m = max(ĩ, l + m')
                di = di + dm
            else:
                da = da + dm
            dg[j] = di
            dg[H + j] = da * dl[j]
            ds[j] = 0                       # h_{t-1} reaches this step only through R, whose share the driver adds
            ds[H + j] = dc * f
            ds[2 * H + j] = dn * f
            ds[3 * H + j] = da


cdef void _forward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const SLSTMSpec *> cell.spec, v, <float *> v.pre)

cdef void _forward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const SLSTMSpec *> cell.spec, v, <double *> v.pre)

cdef void _backward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const SLSTMSpec *> cell.spec, v, <float *> v.d_pre)

cdef void _backward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const SLSTMSpec *> cell.spec, v, <double *> v.d_pre)


def log_sigmoid_block(floating[::1] values):
    """values = log sigmoid(values) in place, by the step's vectorised function (for tests)."""
    cdef Py_ssize_t j
    for j in range(values.shape[0]):
        values[j] = _log_sigmoid(values[j])


cdef class SLSTMKernel(CellKernel):
    """The sLSTM step: ``SLSTMKernel(exponential_forget=False)``."""
    cdef SLSTMSpec spec
    cdef readonly bint exponential_forget

    def __cinit__(self, bint exponential_forget=False):
        self.exponential_forget = self.spec.exponential_forget = exponential_forget
        d = &self.desc
        d.n_blocks = d.n_input_blocks = 4        # [ĩ, f̃, z̃, õ]
        d.n_carried = d.n_states = 4             # h, c, n, m
        for k in range(4):
            d.state_vector[k] = k
        d.n_cache = 2                            # dl/df̃, which argument the max took
        d.n_stage_input = 0
        d.n_params = 0
        d.n_stages = 1
        d.whole_rows = False
        d.n_recurrent = 1
        d.recurrent[0].stage, d.recurrent[0].first_block, d.recurrent[0].n_blocks = 0, 0, 4   # R reads h_{t-1}
        d.recurrent[0].first_vector, d.recurrent[0].n_vectors = 0, 1
        d.spec = &self.spec
        d.forward_f, d.forward_d, d.backward_f, d.backward_d = _forward_f, _forward_d, _backward_f, _backward_d

    def __repr__(self):
        return f"SLSTMKernel(exponential_forget={bool(self.exponential_forget)})"
