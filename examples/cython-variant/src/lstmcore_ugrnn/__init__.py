"""lstmcore-ugrnn: the update-gate RNN for lstmcore, written in Cython on lstmcore's C-level API (a sample plugin).

The compiled step (``_ugrnn.pyx``) is only the UGRNN's element-wise maths, a ``CellKernel`` that lstmcore's sequence
driver runs; this module declares the parameters, maps them to the driver's (W, b, the recurrent weight) and registers
the variant through the ``register_variants`` hook (entry-point group ``lstmcore``)::

    import lstmcore
    layer = lstmcore.LSTM(8, 16, variant="ugrnn")
    output, (h_n,) = layer(x)          # one state: the UGRNN has no separate cell
"""
from __future__ import annotations

import functools

import lstmcore

from lstmcore_ugrnn import _ugrnn

__version__ = "0.1.0"
__all__ = ["UpdateGateRNN", "register_variants"]


class UpdateGateRNN(lstmcore.CompiledCell):
    """The update-gate RNN (Collins, Sohl-Dickstein & Sussillo, "Capacity and trainability in recurrent neural
    networks", 2017)::

        u_t = sigma(W_u x_t + R_u h_{t-1} + b_u)                  update gate
        c_t = g(W_c x_t + R_c h_{t-1} + b_c)                      candidate
        h_t = u_t * h_{t-1} + (1 - u_t) * c_t                     output and state

    Parameters: ``W`` (2H, I), ``R`` (2H, H), ``b`` (2H,), row blocks ordered u, then c: 2H(I + H) + 2H per layer
    and direction. One state, ``h``: the layer returns ``output, (h_n,)``.
    Options: ``gate_activation`` (sigma, default sigmoid) and ``input_activation`` (g, default tanh), each one of
    lstmcore's activation names or a ``(name, alpha, beta)`` tuple for ``hard_sigmoid``.
    """

    name = "ugrnn"
    description = "Update-gate RNN (Collins et al., 2017): h = u h + (1 - u) c; a sample Cython plugin."
    state_names = ("h",)
    OPTIONS = ("gate_activation", "input_activation")

    def __init__(self, gate_activation="sigmoid", input_activation="tanh"):
        self.gate_activation = lstmcore.Activation.parse(gate_activation, "gate_activation")
        self.input_activation = lstmcore.Activation.parse(input_activation, "input_activation")

    def __repr__(self):
        return (f"UpdateGateRNN(gate_activation={str(self.gate_activation)!r}, "
                f"input_activation={str(self.input_activation)!r})")

    def with_options(self, **options) -> "UpdateGateRNN":
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown} for variant {self.name!r}; "
                            f"it accepts {', '.join(self.OPTIONS)}")
        if not options:
            return self
        current = {"gate_activation": self.gate_activation, "input_activation": self.input_activation}
        return UpdateGateRNN(**{**current, **options})

    def parameter_shapes(self, input_size, hidden_size):
        H = hidden_size
        return {"W": (2 * H, input_size), "R": (2 * H, H), "b": (2 * H,)}

    def step_kernel(self):
        return _kernel(*((a.name, a.alpha, a.beta) for a in (self.gate_activation, self.input_activation)))

    def driver_parameters(self, params):
        return params["W"], params["b"], (params["R"],), None


@functools.lru_cache(maxsize=64)
def _kernel(gate_activation, input_activation):
    return _ugrnn.UGRNNKernel(gate_activation, input_activation)


@lstmcore.hookimpl
def register_variants(register):
    register(UpdateGateRNN())
