"""The compiled cells of the LSTM family beyond the gated-cell spec: GRU, MGU and JANET, each a ``CompiledCell``
whose element-wise step (``lstmcore/_kernels/_gru.pyx``, ``_mgu.pyx``, ``_janet.pyx``) runs on the sequence driver.
They are registered as built-ins (``variants/``) through the same ``register_variants`` hook as any plugin; their
equations are in each class's docstring and in docs/cells.md."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

from lstmcore._kernels import _gru, _janet, _mgu
from lstmcore._validation import finite_number
from lstmcore.variant import _NAME_RE, Activation, CompiledCell, replace_options

__all__ = ["GRU", "MGU", "JANET", "FamilyCell"]


def _by_name(a: Activation) -> tuple:
    return (a.name, a.alpha, a.beta)


@dataclass(frozen=True)
class FamilyCell(CompiledCell):
    """What the cells here share: a name, a description, one state ``h``, a gate activation (sigma) and a candidate
    activation (g), both options, and per-layer options through ``with_options``. Subclasses add their own."""

    name: str = ""
    gate_activation: Any = "sigmoid"
    input_activation: Any = "tanh"
    description: str = ""
    state_names: ClassVar[tuple[str, ...]] = ("h",)
    _OPTIONS: ClassVar[tuple[str, ...]] = ("gate_activation", "input_activation")

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"variant name {self.name!r} must be lower-case letters, digits, '_' or '-'")
        for field in ("gate_activation", "input_activation"):
            object.__setattr__(self, field, Activation.parse(getattr(self, field), field))

    def with_options(self, **options):
        return replace_options(self, options, self._OPTIONS)

    def step_kernel(self):
        return _kernel(type(self), tuple(self.kernel_spec.items()))

    @property
    def kernel_spec(self) -> dict:
        """The compiled step's configuration, by name (the keywords of the cell's ``CellKernel``)."""
        return dict(gate_activation=_by_name(self.gate_activation), input_activation=_by_name(self.input_activation))


@functools.lru_cache(maxsize=256)
def _kernel(cell_type, spec: tuple):
    return cell_type.KERNEL(**dict(spec))


@dataclass(frozen=True)
class GRU(FamilyCell):
    """The gated recurrent unit (Cho et al., 2014) with ONNX's and PyTorch's semantics::

        z = sigma(W_z x_t + R_z h_{t-1} + b_z)                       update gate
        r = sigma(W_r x_t + R_r h_{t-1} + b_r)                       reset gate
        n = g(W_n x_t + b_n + r * (R_n h_{t-1} + b_rn))              candidate, linear_before_reset=True (default)
        n = g(W_n x_t + R_n (r * h_{t-1}) + b_n)                     candidate, linear_before_reset=False
        h_t = (1 - z) * n + z * h_{t-1}

    ``linear_before_reset=True`` is ``torch.nn.GRU``, cuDNN's GRU, Keras' ``reset_after=True`` and ONNX's
    ``linear_before_reset=1``; ``False`` is the original paper's form and ONNX's default. True is the default here
    because it is what the frameworks users import from train, and because the reset gate then multiplies a product
    already computed: one stage per step instead of two (the driver's barrier is not paid twice).

    Parameters: ``W`` (3H, I), ``R`` (3H, H), ``b`` (3H,), row blocks z, r, n (ONNX's order; PyTorch's is r, z, n);
    with ``linear_before_reset`` also ``b_rn`` (H,), the recurrent bias inside the reset gate's product (PyTorch's
    ``b_hn``; the other recurrent biases only ever add to ``b``). 3H(I + H) + 3H per layer and direction (+ H).
    One state, ``h``. Options: ``gate_activation`` (sigma), ``input_activation`` (g), ``linear_before_reset``.
    """

    name: str = "gru"
    linear_before_reset: bool = True
    _OPTIONS: ClassVar[tuple[str, ...]] = ("gate_activation", "input_activation", "linear_before_reset")
    KERNEL: ClassVar[type] = _gru.GRUKernel
    #: for interop (``lstmcore.interop.Layout``): the kind of cell, our row blocks of W, R and b
    interop_cell: ClassVar[str] = "GRU"
    gate_blocks: ClassVar[tuple[str, ...]] = ("z", "r", "n")
    peephole_blocks: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.linear_before_reset, bool):
            raise TypeError(f"linear_before_reset must be True or False, got {self.linear_before_reset!r}")

    @property
    def recurrent_bias_blocks(self) -> tuple[str, ...]:
        """The blocks whose recurrent bias is a parameter of its own (``b_rn``) rather than part of ``b``."""
        return ("n",) if self.linear_before_reset else ()

    def parameter_shapes(self, input_size, hidden_size):
        H = hidden_size
        shapes = {"W": (3 * H, input_size), "R": (3 * H, H), "b": (3 * H,)}
        if self.linear_before_reset:
            shapes["b_rn"] = (H,)
        return shapes

    @property
    def kernel_spec(self) -> dict:
        return dict(super().kernel_spec, linear_before_reset=self.linear_before_reset)

    def driver_parameters(self, params):
        H = params["R"].shape[1]
        return params["W"], params["b"], (params["R"][:2 * H], params["R"][2 * H:]), params.get("b_rn")


@dataclass(frozen=True)
class MGU(FamilyCell):
    """The minimal gated unit (Zhou, Wu, Zhang & Zhou, "Minimal gated unit for recurrent neural networks", 2016)::

        f = sigma(W_f x_t + R_f h_{t-1} + b_f)                       forget gate
        n = g(W_n x_t + R_n (f * h_{t-1}) + b_n)                     candidate
        h_t = (1 - f) * h_{t-1} + f * n

    Parameters: ``W`` (2H, I), ``R`` (2H, H), ``b`` (2H,), row blocks f, n: 2H(I + H) + 2H per layer and direction.
    One state, ``h``. Options: ``gate_activation`` (sigma), ``input_activation`` (g).
    """

    name: str = "mgu"
    KERNEL: ClassVar[type] = _mgu.MGUKernel

    def parameter_shapes(self, input_size, hidden_size):
        H = hidden_size
        return {"W": (2 * H, input_size), "R": (2 * H, H), "b": (2 * H,)}

    def driver_parameters(self, params):
        H = params["R"].shape[1]
        return params["W"], params["b"], (params["R"][:H], params["R"][H:]), None


@dataclass(frozen=True)
class JANET(FamilyCell):
    """JANET, "just another network" (van der Westhuizen & Lasenby, "The unreasonable effectiveness of the forget
    gate", 2018): an LSTM with only a forget gate, whose input gate is the forget gate shifted by ``beta``::

        s = W_s x_t + R_s h_{t-1} + b_s                              forget gate pre-activation
        c~ = W_c x_t + R_c h_{t-1} + b_c                             candidate pre-activation
        c_t = sigma(s) * c_{t-1} + (1 - sigma(s - beta)) * g(c~)
        h_t = c_t

    ``beta`` (default 1, the paper's): with 0 the input gate is 1 - f (a coupled gate); a positive shift opens the
    input gate more than the forget gate closes, so the cell can keep and write at once. Parameters: ``W`` (2H, I), ``R`` (2H,
    H), ``b`` (2H,), row blocks s, c~: 2H(I + H) + 2H per layer and direction. One state, ``h`` (= c). Options:
    ``beta``, ``gate_activation`` (sigma), ``input_activation`` (g).
    """

    name: str = "janet"
    beta: float = 1.0
    _OPTIONS: ClassVar[tuple[str, ...]] = ("gate_activation", "input_activation", "beta")
    KERNEL: ClassVar[type] = _janet.JanetKernel

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "beta", finite_number(self.beta, "beta"))

    def parameter_shapes(self, input_size, hidden_size):
        H = hidden_size
        return {"W": (2 * H, input_size), "R": (2 * H, H), "b": (2 * H,)}

    @property
    def kernel_spec(self) -> dict:
        return dict(super().kernel_spec, beta=self.beta)

    def driver_parameters(self, params):
        return params["W"], params["b"], (params["R"],), None
