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
(not fed by x). The forward leaves LN(W x) and LN(R h) in those blocks for the backward; the cache holds the gates
[i, f, o, z], LN(s), tanh(c_n) and the rows' three reciprocal standard deviations (in ``stats_vectors`` H-wide vectors,
3 numbers per row). The step's parameters are [gain_x (4H), gain_r (4H), b (4H), gain_c (H), bias_c (H)].

Backward (g = dE/d of a norm's output times its gain, n its width, v̂ its normalised input, rstd its 1/std):
dLN^{-1}: dv = rstd * (g - mean(g) - v̂ * mean(g * v̂)); the gains get Σ dE/dout * v̂, the biases Σ dE/dout.
"""
from cython cimport floating
from libc.math cimport sqrt

from lstmcore._kernels._driver cimport CellKernel, CellDesc, StepView
from lstmcore._kernels._activations cimport activate_block, SIGMOID, TANH

#: Added to the variance in every norm (PyTorch's LayerNorm default).
EPS = 1e-5

# Sums run over LANES independent accumulators, combined in a fixed order: the compiler vectorises them (a single
# accumulator is a serial chain it may not reorder) and the result does not depend on the thread that computes it.
cdef enum:
    LANES = 16


cdef struct LNSpec:
    bint carry_normalised      # carry c_n (PyTorch's benchmark cell) instead of s (haste, Ba et al.)
    double eps
    Py_ssize_t stats           # the cache vector that holds the rows' three 1/std


cdef inline floating _sum2(const floating *a, const floating *b, Py_ssize_t n, floating *sum_b) noexcept nogil:
    """Σ a (returned) and, when b is given, Σ a * b (into sum_b), each over LANES accumulators."""
    cdef floating acc[LANES]
    cdef floating acc_b[LANES]
    cdef Py_ssize_t j, k, m = n - n % LANES
    cdef floating total = 0, total_b = 0
    for k in range(LANES):
        acc[k] = 0
        acc_b[k] = 0
    j = 0
    while j < m:
        for k in range(LANES):
            acc[k] += a[j + k]
        if b != NULL:
            for k in range(LANES):
                acc_b[k] += a[j + k] * b[j + k]
        j += LANES
    for k in range(LANES):
        total += acc[k]
        total_b += acc_b[k]
    for j in range(m, n):
        total += a[j]
        if b != NULL:
            total_b += a[j] * b[j]
    if b != NULL:
        sum_b[0] = total_b
    return total


cdef floating _normalise(floating *v, Py_ssize_t n, floating eps) noexcept nogil:
    """v = (v - mean v) / sqrt(var v + eps) in place (two passes: no cancellation); returns 1 / sqrt(var v + eps)."""
    cdef Py_ssize_t j
    cdef floating mean = _sum2(v, <floating *> NULL, n, <floating *> NULL) / n, var, rstd
    for j in range(n):
        v[j] -= mean
    _sum2(v, v, n, &var)
    rstd = 1 / sqrt(var / n + eps)
    for j in range(n):
        v[j] *= rstd
    return rstd


cdef void _normalise_backward(const floating *vhat, const floating *d_out, const floating *gain, floating rstd,
                              floating *d_in, Py_ssize_t n) noexcept nogil:
    """d_in = dE/dv for out = gain * v̂ + bias, from d_out = dE/dout (d_in may alias d_out)."""
    cdef Py_ssize_t j
    cdef floating mean_g, mean_gv
    # g = d_out * gain is formed twice rather than stored: the step has no scratch row for it
    mean_g = _sum_scaled(d_out, gain, vhat, n, &mean_gv)
    mean_g /= n
    mean_gv /= n
    for j in range(n):
        d_in[j] = rstd * (d_out[j] * gain[j] - mean_g - vhat[j] * mean_gv)


cdef inline floating _sum_scaled(const floating *d, const floating *gain, const floating *vhat, Py_ssize_t n,
                                 floating *sum_gv) noexcept nogil:
    """Σ d * gain (returned) and Σ d * gain * v̂ (into sum_gv), over LANES accumulators."""
    cdef floating acc[LANES]
    cdef floating acc_v[LANES]
    cdef Py_ssize_t j, k, m = n - n % LANES
    cdef floating total = 0, total_v = 0, g
    for k in range(LANES):
        acc[k] = 0
        acc_v[k] = 0
    j = 0
    while j < m:
        for k in range(LANES):
            g = d[j + k] * gain[j + k]
            acc[k] += g
            acc_v[k] += g * vhat[j + k]
        j += LANES
    for k in range(LANES):
        total += acc[k]
        total_v += acc_v[k]
    for j in range(m, n):
        g = d[j] * gain[j]
        total += g
        total_v += g * vhat[j]
    sum_gv[0] = total_v
    return total


cdef void _forward(const LNSpec *s, const StepView *v, floating *pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, G = 4 * H, r, j
    cdef floating eps = <floating> s.eps, rx, rr, rc, cn, y
    cdef floating *wx
    cdef floating *rh
    cdef floating *gates
    cdef floating *norm_s
    cdef floating *tanh_c
    cdef floating *stats
    cdef const floating *c_prev
    cdef floating *h_next
    cdef floating *c_next
    cdef floating *out
    cdef const floating *p = <const floating *> v.params
    cdef const floating *gain_x = p
    cdef const floating *gain_r = p + G
    cdef const floating *bias = p + 2 * G
    cdef const floating *gain_c = p + 3 * G
    cdef const floating *bias_c = gain_c + H
    for r in range(v.rows):
        wx = pre + r * v.ld_pre
        rh = wx + G
        gates = <floating *> v.cache + r * v.ld_cache
        norm_s, tanh_c, stats = gates + G, gates + G + H, gates + s.stats * H
        c_prev = <const floating *> v.prev + r * v.ld_state + H
        h_next = <floating *> v.next + r * v.ld_state
        c_next = h_next + H
        out = <floating *> v.out + r * v.ld_out

        rx = _normalise(wx, G, eps)
        rr = _normalise(rh, G, eps)
        for j in range(G):
            gates[j] = gain_x[j] * wx[j] + gain_r[j] * rh[j] + bias[j]
        activate_block(SIGMOID, <floating> 0, <floating> 0, gates, 3 * H)
        activate_block(TANH, <floating> 0, <floating> 0, gates + 3 * H, H)
        for j in range(H):  # s = f c_{t-1} + i z
            norm_s[j] = gates[H + j] * c_prev[j] + gates[j] * gates[3 * H + j]
        if not s.carry_normalised:
            for j in range(H):
                c_next[j] = norm_s[j]
        rc = _normalise(norm_s, H, eps)
        for j in range(H):
            cn = gain_c[j] * norm_s[j] + bias_c[j]
            tanh_c[j] = cn
        if s.carry_normalised:
            for j in range(H):
                c_next[j] = tanh_c[j]
        activate_block(TANH, <floating> 0, <floating> 0, tanh_c, H)
        for j in range(H):
            y = gates[2 * H + j] * tanh_c[j]
            h_next[j] = y
            out[j] = y
        stats[0], stats[1], stats[2] = rx, rr, rc


cdef void _backward(const LNSpec *s, const StepView *v, floating *d_pre) noexcept nogil:
    """d_pre's blocks serve as scratch: blocks 0-3 first hold dE/dc_n, blocks 4-7 the gates' deltas da, before each
    is replaced by the delta of its norm's input (W x, then R h)."""
    cdef Py_ssize_t H = v.hidden, G = 4 * H, r, j
    cdef floating dy, i, f, o, z, dc, sum_g, sum_gv
    cdef const floating *wx
    cdef const floating *rh
    cdef const floating *gates
    cdef const floating *norm_s
    cdef const floating *tanh_c
    cdef const floating *stats
    cdef const floating *c_prev
    cdef const floating *dout
    cdef floating *dh
    cdef floating *dc_carried
    cdef floating *d_cn
    cdef floating *da
    cdef const floating *p = <const floating *> v.params
    cdef const floating *gain_x = p
    cdef const floating *gain_r = p + G
    cdef const floating *gain_c = p + 3 * G
    cdef floating *dp = <floating *> v.d_params
    cdef floating *d_gain_x = dp
    cdef floating *d_gain_r = dp + G
    cdef floating *d_bias = dp + 2 * G
    cdef floating *d_gain_c = dp + 3 * G
    cdef floating *d_bias_c = d_gain_c + H
    for r in range(v.rows):
        wx = <const floating *> v.pre + r * v.ld_pre
        rh = wx + G
        gates = <const floating *> v.cache + r * v.ld_cache
        norm_s, tanh_c, stats = gates + G, gates + G + H, gates + s.stats * H
        c_prev = <const floating *> v.prev + r * v.ld_state + H
        dout = <const floating *> v.d_out + r * v.ld_d_out
        dh = <floating *> v.d_state + r * v.ld_state
        dc_carried = dh + H
        d_cn = d_pre + r * v.ld_pre
        da = d_cn + G

        # h = o tanh(c_n): the output gate's delta, and dE/dc_n (plus the carried cell's, when c_n is carried)
        for j in range(H):
            dy = dh[j] + dout[j]
            o = gates[2 * H + j]
            da[2 * H + j] = dy * tanh_c[j] * o * (1 - o)
            d_cn[j] = dy * o * (1 - tanh_c[j] * tanh_c[j])
            dh[j] = 0  # h_{t-1} reaches this step only through R, whose share the driver adds
        if s.carry_normalised:
            for j in range(H):
                d_cn[j] += dc_carried[j]
        for j in range(H):
            d_gain_c[j] += d_cn[j] * norm_s[j]
            d_bias_c[j] += d_cn[j]
        _normalise_backward(norm_s, d_cn, gain_c, stats[2], d_cn, H)   # d_cn now holds dE/ds
        # s = f c_{t-1} + i z
        for j in range(H):
            dc = d_cn[j] if s.carry_normalised else d_cn[j] + dc_carried[j]
            i, f, z = gates[j], gates[H + j], gates[3 * H + j]
            da[j] = dc * z * i * (1 - i)
            da[H + j] = dc * c_prev[j] * f * (1 - f)
            da[3 * H + j] = dc * i * (1 - z * z)
            dc_carried[j] = dc * f
        for j in range(G):
            d_bias[j] += da[j]
            d_gain_x[j] += da[j] * wx[j]
            d_gain_r[j] += da[j] * rh[j]
        _normalise_backward(wx, da, gain_x, stats[0], d_cn, G)   # blocks 0-3: dE/d(W x)
        _normalise_backward(rh, da, gain_r, stats[1], da, G)     # blocks 4-7: dE/d(R h)


cdef void _forward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const LNSpec *> cell.spec, v, <float *> v.pre)

cdef void _forward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const LNSpec *> cell.spec, v, <double *> v.pre)

cdef void _backward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const LNSpec *> cell.spec, v, <float *> v.d_pre)

cdef void _backward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const LNSpec *> cell.spec, v, <double *> v.d_pre)


def stats_vectors(Py_ssize_t hidden_size):
    """H-wide cache vectors that hold the three numbers per row (1/std of W x, of R h and of s)."""
    return (3 + hidden_size - 1) // hidden_size


cdef class LayerNormKernel(CellKernel):
    """The layer-norm LSTM step for hidden size ``hidden_size`` (the cache holds three numbers per row, in whole
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
        d.n_cache = 6 + stats_vectors(hidden_size)   # gates (4), LN(s), tanh(c_n), the 1/std
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
