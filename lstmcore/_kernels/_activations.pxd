# Activation functions shared by every kernel: one definition each, for float and double.
#
# Kernels store an activation's OUTPUT and get its derivative back from that output, so no pre-activation has to be kept
# (every activation here has a derivative that is a function of its output).
from cython cimport floating
from libc.math cimport fabs, fabsf

cdef extern from "lstmcore_fastmath.h" nogil:
    # vectorisable exp-based sigmoid and tanh (see the header); the *_block functions pick AVX2 at load time
    float lc_sigmoidf(float x)
    double lc_sigmoid(double x)
    float lc_tanhf(float x)
    double lc_tanh(double x)
    void lc_sigmoid_block_f(float *v, Py_ssize_t n)
    void lc_sigmoid_block_d(double *v, Py_ssize_t n)
    void lc_tanh_block_f(float *v, Py_ssize_t n)
    void lc_tanh_block_d(double *v, Py_ssize_t n)

cdef enum ActivationKind:
    SIGMOID = 0
    TANH = 1
    IDENTITY = 2
    RELU = 3
    HARD_SIGMOID = 4
    SOFTSIGN = 5


cdef inline floating activate(int kind, floating x, floating alpha, floating beta) noexcept nogil:
    """sigmoid 1/(1+e^-x) | tanh | identity x | relu max(0,x) | hard_sigmoid max(0,min(1,alpha*x+beta)) | softsign x/(1+|x|)"""
    cdef floating v
    if kind == SIGMOID:
        if floating is float:
            return lc_sigmoidf(x)
        else:
            return lc_sigmoid(x)
    elif kind == TANH:
        if floating is float:
            return lc_tanhf(x)
        else:
            return lc_tanh(x)
    elif kind == IDENTITY:
        return x
    elif kind == RELU:
        return x if x > 0 else 0
    elif kind == HARD_SIGMOID:
        v = alpha * x + beta
        return 0 if v <= 0 else (1 if v >= 1 else v)
    else:  # SOFTSIGN
        if floating is float:
            return x / (1 + fabsf(x))
        else:
            return x / (1 + fabs(x))


cdef inline floating derivative_from_output(int kind, floating y, floating alpha) noexcept nogil:
    """d act / d x written as a function of y = act(x)."""
    cdef floating a
    if kind == SIGMOID:
        return y * (1 - y)
    elif kind == TANH:
        return 1 - y * y
    elif kind == IDENTITY:
        return 1
    elif kind == RELU:
        return 1 if y > 0 else 0
    elif kind == HARD_SIGMOID:
        return alpha if (y > 0 and y < 1) else 0
    else:  # SOFTSIGN: 1/(1+|x|)^2 = (1-|y|)^2
        if floating is float:
            a = 1 - fabsf(y)
        else:
            a = 1 - fabs(y)
        return a * a


cdef inline void activate_block(int kind, floating alpha, floating beta, floating *v, Py_ssize_t n) noexcept nogil:
    """v[j] = act(v[j]) for j < n; the choice of function is made once, outside the loop."""
    cdef Py_ssize_t j
    if kind == SIGMOID:
        if floating is float:
            lc_sigmoid_block_f(v, n)
        else:
            lc_sigmoid_block_d(v, n)
    elif kind == TANH:
        if floating is float:
            lc_tanh_block_f(v, n)
        else:
            lc_tanh_block_d(v, n)
    elif kind == IDENTITY:
        pass
    elif kind == RELU:
        for j in range(n):
            v[j] = activate(RELU, v[j], alpha, beta)
    elif kind == HARD_SIGMOID:
        for j in range(n):
            v[j] = activate(HARD_SIGMOID, v[j], alpha, beta)
    else:
        for j in range(n):
            v[j] = activate(SOFTSIGN, v[j], alpha, beta)


cdef inline void multiply_derivative_block(int kind, floating alpha, const floating *y, floating *d,
                                           Py_ssize_t n) noexcept nogil:
    """d[j] *= act'(x[j]) given y[j] = act(x[j])."""
    cdef Py_ssize_t j
    if kind == SIGMOID:
        for j in range(n):
            d[j] *= y[j] * (1 - y[j])
    elif kind == TANH:
        for j in range(n):
            d[j] *= 1 - y[j] * y[j]
    elif kind == IDENTITY:
        pass
    else:
        for j in range(n):
            d[j] *= derivative_from_output(kind, y[j], alpha)


cdef inline void clip_block(floating clip, const floating *v, floating *saved, floating *out,
                            Py_ssize_t n) noexcept nogil:
    """saved[j] = v[j]; out[j] = clamp(v[j], -clip, clip)  (v and out may alias)."""
    cdef Py_ssize_t j
    cdef floating a
    for j in range(n):
        a = v[j]
        saved[j] = a
        out[j] = -clip if a < -clip else (clip if a > clip else a)


cdef inline void zero_where_clipped(floating clip, const floating *saved, floating *d, Py_ssize_t n) noexcept nogil:
    """d[j] = 0 where |saved[j]| > clip: the clamp's derivative."""
    cdef Py_ssize_t j
    for j in range(n):
        if saved[j] > clip or saved[j] < -clip:
            d[j] = 0
