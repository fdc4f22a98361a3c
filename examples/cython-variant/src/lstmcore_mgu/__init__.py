"""lstmcore-mgu: a minimal gated unit for lstmcore, written in Cython on lstmcore's C-level API.

The compiled kernel (``_mgu.pyx``) cimports lstmcore's BLAS shim and activation helpers; this module wraps it as a
``lstmcore.Variant`` and registers it through the ``register_variants`` hook (entry-point group ``lstmcore``)::

    import lstmcore
    layer = lstmcore.LSTM(8, 16, variant="mgu")
    output, (h_n,) = layer(x)          # one state: the MGU has no separate cell
"""
from __future__ import annotations

import numpy as np

import lstmcore
from lstmcore._kernels._activations import ACTIVATIONS

from lstmcore_mgu import _mgu

__version__ = "0.1.0"
__all__ = ["MinimalGatedUnit", "register_variants"]


class MinimalGatedUnit(lstmcore.Variant):
    """Minimal gated unit (Zhou, Wu, Zhang & Zhou, "Minimal gated unit for recurrent neural networks", 2016)::

        f_t = sigma(W_f x_t + R_f h_{t-1} + b_f)                  forget gate
        n_t = g(W_n x_t + R_n (f_t * h_{t-1}) + b_n)              candidate
        h_t = (1 - f_t) * h_{t-1} + f_t * n_t                     output and state

    Parameters: ``W`` (2H, I), ``R`` (2H, H), ``b`` (2H,), row blocks ordered f, then n: 2H(I + H) + 2H per layer
    and direction. One state, ``h``: the layer returns ``output, (h_n,)``.
    Options: ``gate_activation`` (sigma, default sigmoid) and ``input_activation`` (g, default tanh), each one of
    lstmcore's activation names or a ``(name, alpha, beta)`` tuple for ``hard_sigmoid``.
    """

    name = "mgu"
    description = "Minimal gated unit (Zhou et al., 2016): one forget gate, h = (1 - f) h + f n; Cython plugin."
    compiled = True
    state_names = ("h",)
    skips_input_grad = True
    OPTIONS = ("gate_activation", "input_activation")

    def __init__(self, gate_activation="sigmoid", input_activation="tanh"):
        self.gate_activation = lstmcore.Activation.parse(gate_activation, "gate_activation")
        self.input_activation = lstmcore.Activation.parse(input_activation, "input_activation")

    def __repr__(self):
        return (f"MinimalGatedUnit(gate_activation={str(self.gate_activation)!r}, "
                f"input_activation={str(self.input_activation)!r})")

    def with_options(self, **options) -> "MinimalGatedUnit":
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown} for variant {self.name!r}; "
                            f"it accepts {', '.join(self.OPTIONS)}")
        if not options:
            return self
        current = {"gate_activation": self.gate_activation, "input_activation": self.input_activation}
        return MinimalGatedUnit(**{**current, **options})

    def parameter_shapes(self, input_size, hidden_size):
        H = hidden_size
        return {"W": (2 * H, input_size), "R": (2 * H, H), "b": (2 * H,)}

    def _activations(self):
        g, n = self.gate_activation, self.input_activation
        return ACTIVATIONS[g.name], g.alpha, g.beta, ACTIVATIONS[n.name], n.alpha, n.beta

    def forward(self, params, x, state, lengths, reverse, out):
        x = np.ascontiguousarray(x)
        T, B, _ = x.shape
        H = params["R"].shape[1]
        h_states = np.empty((T + 1, B, H), dtype=x.dtype)
        h_states[T if reverse else 0] = state[0]
        gates = np.empty((T, B, 2 * H), dtype=x.dtype)
        fh = np.empty((T, B, H), dtype=x.dtype)
        _mgu.forward(bool(reverse), x, params["W"], params["R"], params["b"], lengths, *self._activations(),
                     h_states, gates, fh, out)
        cache = (x, lengths, bool(reverse), h_states, gates, fh)
        return (h_states[0 if reverse else T].copy(),), cache

    def backward(self, params, cache, d_out, d_state, d_x, accumulate_dx):
        x, lengths, reverse, h_states, gates, fh = cache
        act_gate, gate_alpha, _, act_cand, cand_alpha, _ = self._activations()
        dh = np.array(d_state[0], dtype=x.dtype, order="C", copy=True)
        grads = {name: np.empty_like(value) for name, value in params.items()}
        d_gates = np.empty_like(gates)
        _mgu.backward(reverse, x, params["W"], params["R"], lengths, act_gate, gate_alpha, act_cand, cand_alpha,
                      h_states, gates, fh, d_out, dh, d_gates, grads["W"], grads["R"], grads["b"], d_x,
                      bool(accumulate_dx))
        return (dh,), grads


@lstmcore.hookimpl
def register_variants(register):
    register(MinimalGatedUnit())
