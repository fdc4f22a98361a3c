"""The online update's arithmetic outside the LSTM kernels, compiled (``lstmcore.training.online`` runs it).

With one sequence per update, the readout, the loss, the gradient norm and the optimizer's step are a few thousand
numbers each, and NumPy's per-call cost, not the arithmetic, set their time. These functions do each of them in one
call, in the order and the precision of ``SequenceModel.loss_and_gradients``, ``clip_by_global_norm`` and ``SGD``:
the noise and the SGD step are bitwise NumPy's (elementwise IEEE operations, compiled without floating-point
contraction); the readout's products come from another BLAS than NumPy's and the loss's exponentials from the
kernels' vectorised ``exp`` (one per element serves both σ and softplus), so they agree to rounding.

Every function checks its arrays' shapes and raises ``ValueError``; ``sigmoid_readout`` checks the targets it reads
(the loss's own check), the caller the inputs and parameters (once per epoch).
"""
from cython cimport floating
from libc.math cimport fabs, fabsf, log, sqrt, isfinite

from lstmcore._kernels._blas cimport gemm, NoTrans, Trans

cdef extern from "lstmcore_fastmath.h" nogil:
    float lc_expf(float x)      # vectorisable exp, a few ulp (the kernels' own, see the header)
    double lc_exp(double x)


cdef inline floating _exp_minus_abs(floating x) noexcept nogil:
    """``e^-|x|``, in (0, 1] (NaN stays NaN)."""
    if floating is float:
        return lc_expf(-fabsf(x))
    else:
        return lc_exp(-fabs(x))


#: What ``sigmoid_readout`` found: nothing wrong, a non-finite loss (it stopped before the gradients), a non-finite
#: gradient reaching the LSTM layers, targets outside [0, 1] or not finite (it stopped before anything).
OK, NON_FINITE_LOSS, NON_FINITE_GRADIENT, BAD_TARGETS = 0, 1, 2, 3


cdef inline bint _all_finite(const floating *v, Py_ssize_t n) noexcept nogil:
    """Whether no ``v[j]`` is NaN or Inf (``v - v`` is NaN exactly then): an AND over a loop that vectorises."""
    cdef Py_ssize_t j
    cdef int ok = 1
    for j in range(n):
        ok &= (v[j] - v[j] == 0)
    return ok


def noisy_input(const floating[:, ::1] x, const double[::1] noise, double sigma, floating[:, ::1] out):
    """``out = x + σ ε`` with ``ε`` standard normal draws in float64 (NumPy's ``Generator.standard_normal``), rounded
    to the dtype before the product, as ``fit`` adds input noise."""
    cdef Py_ssize_t n = x.shape[0] * x.shape[1], j
    cdef floating s = <floating> sigma
    cdef floating e
    if out.shape[0] != x.shape[0] or out.shape[1] != x.shape[1] or noise.shape[0] != n:
        raise ValueError(f"noisy_input: x {tuple(x.shape)[:2]}, noise ({noise.shape[0]},) and out "
                         f"{tuple(out.shape)[:2]} do not agree")
    if n == 0:
        return
    cdef const floating *xs = &x[0, 0]
    cdef floating *o = &out[0, 0]
    with nogil:
        for j in range(n):
            e = <floating> noise[j]
            e = e * s
            o[j] = xs[j] + e


def sigmoid_readout(const floating[:, ::1] features, const floating[:, ::1] W, const floating[::1] b,
                    const floating[:, ::1] targets, double divisor, floating[:, ::1] d_logits,
                    floating[:, ::1] d_features, floating[:, ::1] dW, floating[::1] db):
    """The per-step sigmoid readout of one sequence of T steps, its Bernoulli NLL and the backward through both.

    ``a = h Wᵀ + b``;  ``ℓ_t = Σ_k softplus(a_tk) − y_tk a_tk``;  ``δa = (σ(a) − y) / divisor`` (the normalisation of
    the objective: the number of steps, or 1 for the loss summed over time);  ``∂E/∂W = δaᵀ h``,
    ``∂E/∂b = Σ_t δa_t``, ``∂E/∂h = δa W``. ``features`` h is ``(T, F)``, ``W`` ``(K, F)``, ``targets`` y and
    ``d_logits`` ``(T, K)``, ``d_features`` ``(T, F)``.

    Returns ``(Σ_t ℓ_t, problem)``, the loss summed in float64 and one of ``OK``; ``BAD_TARGETS`` (a target outside
    [0, 1] or NaN: nothing computed, as the loss checks its targets first); ``NON_FINITE_LOSS`` (any non-finite logit
    makes it so: the weight gradients are not computed and ``dW`` holds scratch, as ``loss_and_gradients`` raises
    there); ``NON_FINITE_GRADIENT`` (``∂E/∂h`` has a NaN or Inf).
    """
    cdef Py_ssize_t T = features.shape[0], F = features.shape[1], K = W.shape[0], t, k
    cdef floating a, y
    cdef floating div = <floating> divisor
    cdef double total = 0
    cdef int in_range = 1
    if (W.shape[1] != F or b.shape[0] != K or targets.shape[0] != T or targets.shape[1] != K
            or d_logits.shape[0] != T or d_logits.shape[1] != K or d_features.shape[0] != T
            or d_features.shape[1] != F or dW.shape[0] != K or dW.shape[1] != F or db.shape[0] != K):
        raise ValueError(f"sigmoid_readout: features {tuple(features.shape)[:2]}, W {tuple(W.shape)[:2]}, "
                         f"b ({b.shape[0]},), targets {tuple(targets.shape)[:2]}, d_logits "
                         f"{tuple(d_logits.shape)[:2]}, d_features {tuple(d_features.shape)[:2]}, dW "
                         f"{tuple(dW.shape)[:2]}, db ({db.shape[0]},) do not agree")
    if T == 0 or K == 0 or F == 0:
        raise ValueError("sigmoid_readout: needs at least one step, output and feature")
    cdef floating *row
    cdef const floating *y_row
    cdef floating *e = &dW[0, 0]      # e^-|a| of one step (K values): dW is written only after the loss
    cdef double positive, target_dot, product, log_part
    with nogil:
        for t in range(T):
            for k in range(K):
                in_range &= (targets[t, k] >= 0) & (targets[t, k] <= 1)   # false for NaN too
    if not in_range:
        return 0.0, BAD_TARGETS
    with nogil:
        gemm(NoTrans, Trans, <int> T, <int> K, <int> F, <floating> 1, &features[0, 0], <int> F, &W[0, 0], <int> F,
             <floating> 0, &d_logits[0, 0], <int> K)
        for t in range(T):
            row, y_row = &d_logits[t, 0], &targets[t, 0]
            for k in range(K):
                row[k] = row[k] + b[k]
                e[k] = _exp_minus_abs(row[k])
            # softplus(a) = max(a, 0) + log(1 + e^-|a|), the logs of a step summed as one log of their product (in
            # float64); sigma(a) = (a >= 0 ? 1 : e^-|a|) / (1 + e^-|a|); one exp per element for both
            positive, target_dot, product, log_part = 0, 0, 1, 0
            for k in range(K):
                a, y = row[k], y_row[k]
                positive += a if a > 0 else 0
                target_dot += <double> y * <double> a
                product *= 1 + <double> e[k]
                if product > 1e290:     # factors are at most 2: only for K beyond ~960
                    log_part += log(product)
                    product = 1
                row[k] = (((<floating> 1) if a >= 0 else e[k]) / (1 + e[k]) - y) / div
            # each step's loss rounded to the dtype, as NumPy's per-step losses are (a step beyond the dtype's range is
            # an infinite loss there too), then summed in float64
            total += <floating> (positive + (log_part + log(product)) - target_dot)
    if not isfinite(total):
        return total, NON_FINITE_LOSS
    with nogil:
        for k in range(K):
            db[k] = d_logits[0, k]
        for t in range(1, T):
            for k in range(K):
                db[k] = db[k] + d_logits[t, k]
        gemm(Trans, NoTrans, <int> K, <int> F, <int> T, <floating> 1, &d_logits[0, 0], <int> K,
             &features[0, 0], <int> F, <floating> 0, &dW[0, 0], <int> F)
        gemm(NoTrans, NoTrans, <int> T, <int> F, <int> K, <floating> 1, &d_logits[0, 0], <int> K, &W[0, 0], <int> F,
             <floating> 0, &d_features[0, 0], <int> F)
        in_range = _all_finite(&d_features[0, 0], T * F)
    return total, OK if in_range else NON_FINITE_GRADIENT


cdef double _squared_sum(const floating *g, Py_ssize_t n) noexcept nogil:
    """``Σ g²`` in float64, in eight interleaved partial sums (a single running sum waits on each add)."""
    cdef double partial[8]
    cdef Py_ssize_t j, q
    for q in range(8):
        partial[q] = 0
    for j in range(0, n - n % 8, 8):
        for q in range(8):
            partial[q] += <double> g[j + q] * <double> g[j + q]
    for j in range(n - n % 8, n):
        partial[0] += <double> g[j] * <double> g[j]
    return ((partial[0] + partial[1]) + (partial[2] + partial[3])) + ((partial[4] + partial[5]) + (partial[6] + partial[7]))


cdef object _sgd_update(list params, list grads, list velocities, floating learning_rate, floating momentum,
                        bint nesterov, double clip_norm):
    cdef Py_ssize_t n = len(params), i, j, size
    cdef floating[::1] value_view, grad_view, velocity_view
    cdef floating *value
    cdef floating *grad
    cdef floating *velocity
    cdef floating scale, v, lr_g
    cdef double norm2 = 0, norm
    cdef bint finite = True
    for i in range(n):
        grad_view = grads[i]
        value_view = params[i]
        if grad_view.shape[0] != value_view.shape[0]:
            raise ValueError(f"sgd_update: parameter {i} has {value_view.shape[0]} elements, its gradient "
                             f"{grad_view.shape[0]}")
        if momentum != 0:
            velocity_view = velocities[i]
            if velocity_view.shape[0] != value_view.shape[0]:
                raise ValueError(f"sgd_update: parameter {i} has {value_view.shape[0]} elements, its velocity "
                                 f"{velocity_view.shape[0]}")
        if grad_view.shape[0]:
            norm2 += _squared_sum(&grad_view[0], grad_view.shape[0])
    norm = sqrt(norm2)
    if not isfinite(norm):
        return norm, False
    for i in range(n):
        value_view, grad_view = params[i], grads[i]
        size = value_view.shape[0]
        if size == 0:
            continue
        value, grad = &value_view[0], &grad_view[0]
        if momentum != 0:
            velocity_view = velocities[i]
            velocity = &velocity_view[0]
        with nogil:
            if clip_norm > 0 and norm > clip_norm:   # as clip_by_global_norm: g *= clip_norm / ||g||
                scale = <floating> (clip_norm / norm)
                for j in range(size):
                    grad[j] = grad[j] * scale
            # the operations of SGD._update in NumPy's order, each rounded (no contraction): bitwise NumPy's
            if momentum == 0:
                for j in range(size):
                    value[j] = value[j] - learning_rate * grad[j]
            elif nesterov:
                for j in range(size):
                    lr_g = learning_rate * grad[j]
                    v = velocity[j] * momentum - lr_g
                    velocity[j] = v
                    value[j] = value[j] + (momentum * v - lr_g)
            else:
                for j in range(size):
                    v = velocity[j] * momentum - learning_rate * grad[j]
                    velocity[j] = v
                    value[j] = value[j] + v
            if not _all_finite(value, size):
                finite = False
    return norm, finite


def sgd_update(list params, list grads, list velocities, double learning_rate, double momentum, bint nesterov,
               clip_norm, dtype):
    """One step of ``lstmcore.training.SGD`` over flat (1-D, C-contiguous) parameter arrays of ``dtype``, in place,
    with the global norm ``‖g‖ = sqrt(Σ g²)`` (float64) checked first and, with ``clip_norm``, the gradients scaled
    by ``min(1, clip_norm / ‖g‖)`` (``clip_by_global_norm``):

    ``v ← μ v − ε g``, then ``θ ← θ + μ v − ε g`` (Nesterov, in the look-ahead form) or ``θ ← θ + v``; with ``μ = 0``
    ``θ ← θ − ε g`` and ``velocities`` is not read.

    Returns ``(‖g‖, finite)``: a non-finite norm returns before anything is changed; ``finite`` says whether every
    parameter is finite after the step.
    """
    if len(grads) != len(params) or (momentum != 0 and len(velocities) != len(params)):
        raise ValueError(f"sgd_update: {len(params)} parameters, {len(grads)} gradients, {len(velocities)} velocities")
    clip = 0.0 if clip_norm is None else float(clip_norm)
    if dtype == "float32":
        return _sgd_update[float](params, grads, velocities, <float> learning_rate, <float> momentum, nesterov, clip)
    if dtype == "float64":
        return _sgd_update[double](params, grads, velocities, learning_rate, momentum, nesterov, clip)
    raise ValueError(f"sgd_update: dtype must be float32 or float64, got {dtype!r}")
