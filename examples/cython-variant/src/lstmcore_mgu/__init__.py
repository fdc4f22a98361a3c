"""lstmcore-mgu: a minimal gated unit for lstmcore, written in Cython on lstmcore's C-level API.

The compiled step (``_mgu.pyx``) is only MGU's element-wise maths, a ``CellKernel`` that lstmcore's sequence driver
runs; this module declares the parameters, maps them to the driver's (W, b, the recurrent weights) and registers the
variant through the ``register_variants`` hook (entry-point group ``lstmcore``)::

    import lstmcore
    layer = lstmcore.LSTM(8, 16, variant="mgu")
    output, (h_n,) = layer(x)          # one state: the MGU has no separate cell
"""
from __future__ import annotations

import functools

import lstmcore

from lstmcore_mgu import _mgu

__version__ = "0.1.0"
__all__ = ["MinimalGatedUnit", "register_variants"]


class MinimalGatedUnit(lstmcore.CompiledCell):
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
    state_names = ("h",)
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

    def step_kernel(self):
        return _kernel(*((a.name, a.alpha, a.beta) for a in (self.gate_activation, self.input_activation)))

    def driver_parameters(self, params):
        H = params["R"].shape[1]
        return params["W"], params["b"], (params["R"][:H], params["R"][H:]), None


@functools.lru_cache(maxsize=64)
def _kernel(gate_activation, input_activation):
    return _mgu.MGUKernel(gate_activation, input_activation)


@lstmcore.hookimpl
def register_variants(register):
    register(MinimalGatedUnit())
