"""Python-callable twins of the activation helpers, for tests and for pure-Python variants that want the same numbers."""
import numpy as np

ACTIVATIONS = {
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "identity": IDENTITY,
    "relu": RELU,
    "hard_sigmoid": HARD_SIGMOID,
    "softsign": SOFTSIGN,
}


def checked_activation(value, str argument):
    """A kernel's ``(name, alpha, beta)`` as ``(ActivationKind, alpha, beta)``, or a ValueError naming ``argument``."""
    if not (isinstance(value, tuple) and len(value) == 3 and value[0] in ACTIVATIONS):
        raise ValueError(f"{argument} must be (name, alpha, beta) with a name among {', '.join(ACTIVATIONS)}, "
                         f"got {value!r}")
    alpha, beta = float(value[1]), float(value[2])
    if not (np.isfinite(alpha) and np.isfinite(beta)):
        raise ValueError(f"{argument}: alpha and beta must be finite, got {value!r}")
    return ACTIVATIONS[value[0]], alpha, beta


def _apply(int kind, double alpha, double beta, floating[::1] v):
    with nogil:
        activate_block(kind, <floating> alpha, <floating> beta, &v[0], v.shape[0])


def _derivative(int kind, double alpha, const floating[::1] y, floating[::1] d):
    with nogil:
        multiply_derivative_block(kind, <floating> alpha, &y[0], &d[0], y.shape[0])


def apply_activation(name, x, alpha=0.2, beta=0.5):
    """Return ``act(x)`` computed by the compiled helper (a new array of x's float dtype)."""
    v = np.array(x, copy=True, order="C").ravel()
    if v.size:
        _apply(ACTIVATIONS[name], alpha, beta, v)
    return v.reshape(np.shape(x))


def activation_derivative(name, y, alpha=0.2):
    """Return ``act'(x)`` given ``y = act(x)``, computed by the compiled helper."""
    shape = np.shape(y)
    y = np.ascontiguousarray(y).ravel()
    d = np.ones_like(y)
    if y.size:
        _derivative(ACTIVATIONS[name], alpha, y, d)
    return d.reshape(shape)
