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
which argument of the max was taken (1: ĩ). The row passes are C (lstmcore_rows.h), compiled for each vector path.
"""
from cython cimport floating

from lstmcore._kernels._driver cimport CellKernel, CellDesc, StepView


cdef extern from "lstmcore_fastmath.h" nogil:
    float lc_log_sigmoidf(float x, float *derivative)
    double lc_log_sigmoid(double x, double *derivative)

cdef extern from "lstmcore_rows.h" nogil:
    # one row of the step, fused and vectorised on the SIMD path in use (the equations above)
    void lc_slstm_forward_f(Py_ssize_t n, Py_ssize_t H, int exp_forget, float *g, float *dl, float *took_i,
                            const float *prev, float *next, float *out)
    void lc_slstm_forward_d(Py_ssize_t n, Py_ssize_t H, int exp_forget, double *g, double *dl, double *took_i,
                            const double *prev, double *next, double *out)
    void lc_slstm_backward_f(Py_ssize_t n, Py_ssize_t H, const float *g, const float *dl, const float *took_i,
                             const float *prev, const float *next, const float *d_out, float *ds, float *dg)
    void lc_slstm_backward_d(Py_ssize_t n, Py_ssize_t H, const double *g, const double *dl, const double *took_i,
                             const double *prev, const double *next, const double *d_out, double *ds, double *dg)


cdef struct SLSTMSpec:
    bint exponential_forget    # f = exp(f̃) instead of sigmoid(f̃)


cdef void _forward(const SLSTMSpec *s, const StepView *v, floating *pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, r
    cdef floating *dl
    for r in range(v.rows):
        dl = <floating *> v.cache + r * v.ld_cache
        if floating is float:
            lc_slstm_forward_f(v.units, H, s.exponential_forget, pre + r * v.ld_pre, dl, dl + H,
                               <const float *> v.prev + r * v.ld_state, <float *> v.next + r * v.ld_state,
                               <float *> v.out + r * v.ld_out)
        else:
            lc_slstm_forward_d(v.units, H, s.exponential_forget, pre + r * v.ld_pre, dl, dl + H,
                               <const double *> v.prev + r * v.ld_state, <double *> v.next + r * v.ld_state,
                               <double *> v.out + r * v.ld_out)


cdef void _backward(const SLSTMSpec *s, const StepView *v, floating *d_pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, r
    cdef const floating *dl
    for r in range(v.rows):
        dl = <const floating *> v.cache + r * v.ld_cache
        if floating is float:
            lc_slstm_backward_f(v.units, H, <const float *> v.pre + r * v.ld_pre, dl, dl + H,
                                <const float *> v.prev + r * v.ld_state, <const float *> v.next + r * v.ld_state,
                                <const float *> v.d_out + r * v.ld_d_out, <float *> v.d_state + r * v.ld_state,
                                d_pre + r * v.ld_pre)
        else:
            lc_slstm_backward_d(v.units, H, <const double *> v.pre + r * v.ld_pre, dl, dl + H,
                                <const double *> v.prev + r * v.ld_state, <const double *> v.next + r * v.ld_state,
                                <const double *> v.d_out + r * v.ld_d_out, <double *> v.d_state + r * v.ld_state,
                                d_pre + r * v.ld_pre)


cdef void _forward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const SLSTMSpec *> cell.spec, v, <float *> v.pre)

cdef void _forward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const SLSTMSpec *> cell.spec, v, <double *> v.pre)

cdef void _backward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const SLSTMSpec *> cell.spec, v, <float *> v.d_pre)

cdef void _backward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const SLSTMSpec *> cell.spec, v, <double *> v.d_pre)


def log_sigmoid_block(floating[::1] values, floating[::1] derivatives):
    """values = log sigmoid(values) in place and derivatives = sigmoid(-values), by the function the step uses (for
    tests)."""
    cdef Py_ssize_t j
    for j in range(values.shape[0]):
        if floating is float:
            values[j] = lc_log_sigmoidf(values[j], &derivatives[j])
        else:
            values[j] = lc_log_sigmoid(values[j], &derivatives[j])


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
