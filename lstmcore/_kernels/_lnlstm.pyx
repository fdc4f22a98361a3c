"""The layer-normalised LSTM (Ba, Kiros & Hinton, 2016, as haste computes it) as a step of the sequence driver.

One step, per batch row (LN normalises over the whole row of a block: LN(v) = (v - mean v) / sqrt(var v + eps)):

    a   = gain_x * LN(W x_t) + gain_r * LN(R h_{t-1}) + b                     the 4H gate pre-activations [i, f, o, z]
    i, f, o = sigma(a_i), sigma(a_f), sigma(a_o)        z = tanh(a_z)
    s   = f * c_{t-1} + i * z                                                 the cell before its norm
    c_n = gain_c * LN(s) + bias_c                       h_t = o * tanh(c_n)
    c_t = s  (haste, Ba et al.: the carried cell is not normalised)   or   c_t = c_n  (carry_normalised: PyTorch's
                                                                          benchmark LayerNormLSTMCell)

Layout for the driver: ``whole_rows`` (a norm reads its whole row, so threads split rows, not units). Blocks 0-3 get
W x (the variant passes a zero input bias: a bias before a norm would be normalised away), blocks 4-7 get R h_{t-1}
(not fed by x). The forward only reads them (the backward recomputes LN from them and the statistics: fewer stores);
the cache holds the gates [i, f, o, z], s, tanh(c_n) and the row's mean and 1/std of each norm (6 numbers, in
``stats_vectors`` H-wide vectors). The step's parameters are [gain_x (4H), gain_r (4H), b (4H), gain_c (H), bias_c (H)].

Backward (g = dE/d of a norm's output times its gain, n its width, v̂ its normalised input, rstd its 1/std):
dE/dv = rstd * (g - mean(g) - v̂ * mean(g * v̂)); the gains get Σ dE/dout * v̂, the biases Σ dE/dout (docs/cells.md).
The row passes are C (lstmcore_rows.h), compiled for each vector path.
"""
from cython cimport floating

from lstmcore._kernels._driver cimport CellKernel, CellDesc, StepView

#: Added to the variance in every norm (PyTorch's LayerNorm default).
EPS = 1e-5


cdef extern from "lstmcore_rows.h" nogil:
    # one row of the step, fused and vectorised on the SIMD path in use (the equations above)
    void lc_lnlstm_forward_f(Py_ssize_t H, int carry_normalised, float eps, const float *pre, float *cache,
                             float *stats, const float *p, const float *c_prev, float *h_next, float *c_next, float *out)
    void lc_lnlstm_forward_d(Py_ssize_t H, int carry_normalised, double eps, const double *pre, double *cache,
                             double *stats, const double *p, const double *c_prev, double *h_next, double *c_next,
                             double *out)
    void lc_lnlstm_backward_f(Py_ssize_t H, int carry_normalised, const float *pre, const float *cache,
                              const float *stats, const float *p, const float *c_prev, const float *d_out, float *ds,
                              float *d_pre, float *dp)
    void lc_lnlstm_backward_d(Py_ssize_t H, int carry_normalised, const double *pre, const double *cache,
                              const double *stats, const double *p, const double *c_prev, const double *d_out,
                              double *ds, double *d_pre, double *dp)


cdef struct LNSpec:
    bint carry_normalised      # carry c_n (PyTorch's benchmark cell) instead of s (haste, Ba et al.)
    double eps
    Py_ssize_t stats           # the cache vector that holds the rows' norm statistics (6 numbers)


cdef void _forward(const LNSpec *s, const StepView *v, floating *pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, r
    cdef floating *cache
    cdef floating *h_next
    for r in range(v.rows):
        cache = <floating *> v.cache + r * v.ld_cache
        h_next = <floating *> v.next + r * v.ld_state
        if floating is float:
            lc_lnlstm_forward_f(H, s.carry_normalised, <float> s.eps, pre + r * v.ld_pre, cache, cache + s.stats * H,
                                <const float *> v.params, <const float *> v.prev + r * v.ld_state + H, h_next,
                                h_next + H, <float *> v.out + r * v.ld_out)
        else:
            lc_lnlstm_forward_d(H, s.carry_normalised, s.eps, pre + r * v.ld_pre, cache, cache + s.stats * H,
                                <const double *> v.params, <const double *> v.prev + r * v.ld_state + H, h_next,
                                h_next + H, <double *> v.out + r * v.ld_out)


cdef void _backward(const LNSpec *s, const StepView *v, floating *d_pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, r
    cdef const floating *cache
    for r in range(v.rows):
        cache = <const floating *> v.cache + r * v.ld_cache
        if floating is float:
            lc_lnlstm_backward_f(H, s.carry_normalised, <const float *> v.pre + r * v.ld_pre, cache,
                                 cache + s.stats * H, <const float *> v.params,
                                 <const float *> v.prev + r * v.ld_state + H, <const float *> v.d_out + r * v.ld_d_out,
                                 <float *> v.d_state + r * v.ld_state, d_pre + r * v.ld_pre, <float *> v.d_params)
        else:
            lc_lnlstm_backward_d(H, s.carry_normalised, <const double *> v.pre + r * v.ld_pre, cache,
                                 cache + s.stats * H, <const double *> v.params,
                                 <const double *> v.prev + r * v.ld_state + H,
                                 <const double *> v.d_out + r * v.ld_d_out, <double *> v.d_state + r * v.ld_state,
                                 d_pre + r * v.ld_pre, <double *> v.d_params)


cdef void _forward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const LNSpec *> cell.spec, v, <float *> v.pre)

cdef void _forward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const LNSpec *> cell.spec, v, <double *> v.pre)

cdef void _backward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const LNSpec *> cell.spec, v, <float *> v.d_pre)

cdef void _backward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const LNSpec *> cell.spec, v, <double *> v.d_pre)


def stats_vectors(Py_ssize_t hidden_size):
    """H-wide cache vectors that hold the six numbers per row (mean and 1/std of W x, of R h and of s)."""
    return (6 + hidden_size - 1) // hidden_size


cdef class LayerNormKernel(CellKernel):
    """The layer-norm LSTM step for hidden size ``hidden_size`` (the cache holds six numbers per row, in whole
    H-wide vectors): ``LayerNormKernel(hidden_size, carry_normalised=False)``."""
    cdef LNSpec spec
    cdef readonly bint carry_normalised
    cdef readonly Py_ssize_t hidden_size

    def __cinit__(self, Py_ssize_t hidden_size, bint carry_normalised=False):
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be positive, got {hidden_size}")
        self.hidden_size, self.carry_normalised = hidden_size, carry_normalised
        self.spec.carry_normalised, self.spec.eps, self.spec.stats = carry_normalised, EPS, 6
        d = &self.desc
        d.n_blocks, d.n_input_blocks = 8, 4      # [W x: i, f, o, z | R h: i, f, o, z]
        d.n_carried = d.n_states = 2             # h, c
        d.state_vector[0], d.state_vector[1] = 0, 1
        d.n_cache = 6 + stats_vectors(hidden_size)   # gates (4), s, tanh(c_n), the norms' statistics
        d.n_stage_input = 0
        d.n_params = 14                          # gain_x (4), gain_r (4), b (4), gain_c, bias_c
        d.n_stages = 1
        d.whole_rows = True
        d.n_recurrent = 1
        d.recurrent[0].stage, d.recurrent[0].first_block, d.recurrent[0].n_blocks = 0, 4, 4   # R h_{t-1}
        d.recurrent[0].first_vector, d.recurrent[0].n_vectors = 0, 1
        d.spec = &self.spec
        d.forward_f, d.forward_d, d.backward_f, d.backward_d = _forward_f, _forward_d, _backward_f, _backward_d

    def __repr__(self):
        return f"LayerNormKernel({self.hidden_size}, carry_normalised={bool(self.carry_normalised)})"
