"""What a variant is: the ``Variant`` interface every registered cell implements; ``CompiledCell``, a variant whose
compiled element-wise step runs on lstmcore's sequence driver; and ``GatedCell``, the spec of the compiled gated-cell
family that the built-ins (and spec-based plugins) are instances of."""
from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lstmcore._validation import finite_number, positive_int
from lstmcore._kernels import _driver, _gated
from lstmcore._kernels._activations import ACTIVATIONS

#: Names accepted for ``gate_activation``, ``input_activation`` and ``output_activation``.
ACTIVATION_NAMES = tuple(ACTIVATIONS)
_DEFAULT_ALPHA_BETA = {"hard_sigmoid": (0.2, 0.5)}  # ONNX's defaults
_NAME_RE = re.compile(r"^[a-z][a-z0-9_\-]*$")


def _finite_float(value: Any, argument: str) -> float:
    """``value`` as a finite float, or a ValueError that names ``argument``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{argument} must be a finite number, got {value!r}")
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"{argument} must be a finite number, got {number}")
    return number


@dataclass(frozen=True)
class Activation:
    """An activation function by name, with the ``alpha``/``beta`` that ``hard_sigmoid`` uses
    (``max(0, min(1, alpha * x + beta))``); the others ignore them."""

    name: str
    alpha: float = 0.0
    beta: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "alpha", _finite_float(self.alpha, "Activation alpha"))
        object.__setattr__(self, "beta", _finite_float(self.beta, "Activation beta"))

    @classmethod
    def parse(cls, value: Any, argument: str = "activation") -> "Activation":
        """Accept a name, a ``(name, alpha, beta)`` tuple or an ``Activation``."""
        if isinstance(value, Activation):
            return value
        if isinstance(value, str):
            name, params = value.lower(), None
        elif isinstance(value, (tuple, list)) and len(value) == 3 and isinstance(value[0], str):
            name, params = value[0].lower(), (_finite_float(value[1], f"{argument} alpha"),
                                              _finite_float(value[2], f"{argument} beta"))
        else:
            raise TypeError(f"{argument} must be one of {ACTIVATION_NAMES} or a (name, alpha, beta) tuple, "
                            f"got {value!r}")
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown {argument} {name!r}; choose one of {', '.join(ACTIVATION_NAMES)}")
        alpha, beta = params if params is not None else _DEFAULT_ALPHA_BETA.get(name, (0.0, 0.0))
        return cls(name, alpha, beta)

    def __str__(self) -> str:
        return f"{self.name}({self.alpha:g}, {self.beta:g})" if self.name == "hard_sigmoid" else self.name


class Variant:
    """A recurrent cell that runs its own forward and backward over a whole time-major sequence.

    Subclasses set ``name`` and implement ``parameter_shapes``, ``forward`` and ``backward``. The layer
    (``lstmcore.LSTM``) validates input, allocates the output and calls these once per layer and direction:

    - ``forward(params, x, state, lengths, reverse, out)``: ``x`` is ``(T, B, I)``; ``state`` a tuple of ``(B, H)``
      arrays (``(h0, c0)`` for LSTM cells); ``lengths`` an int32 ``(B,)`` array or None; ``out`` a ``(T, B, H)`` view
      to write the outputs into (zero past each sequence's length). Returns ``(final_state, cache)``.
    - ``backward(params, cache, d_out, d_state, d_x, accumulate_dx)``: ``d_out`` is ``(T, B, H)``; ``d_state`` the
      gradients of the final state; writes (or, with ``accumulate_dx``, adds) dE/dx into ``d_x``.
      Returns ``(d_initial_state, grads)`` with ``grads`` keyed like ``params``. A variant that sets
      ``skips_input_grad = True`` also accepts ``d_x=None``, meaning that dE/dx is not needed (the first layer when the
      caller asks for no input gradient), and then skips computing it.
    """

    name: ClassVar[str] | str = ""
    description: str = ""
    compiled: bool = False
    state_names: tuple[str, ...] = ("h", "c")
    skips_input_grad: bool = False

    def with_options(self, **options) -> "Variant":
        """A copy configured with per-layer options (e.g. activations); unknown options raise ``TypeError``."""
        if options:
            raise TypeError(f"variant {self.name!r} takes no options, got {sorted(options)}")
        return self

    def parameter_shapes(self, input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def output_size(self, hidden_size: int) -> int:
        """The width of the output (and of the state ``h``): ``hidden_size`` unless the cell projects it."""
        return hidden_size

    def state_sizes(self, hidden_size: int) -> tuple[int, ...]:
        """The width of each state of ``state_names``: the output's for ``h``, ``hidden_size`` for the others."""
        return tuple(self.output_size(hidden_size) if name == "h" else hidden_size for name in self.state_names)

    def init_forget_bias(self, params: dict, values: np.ndarray, *, chrono: bool, option: str) -> None:
        """Set, in freshly initialised ``params``, the forget gate's bias to ``values`` (H,), and with ``chrono`` the
        input gate's to ``-values`` (``LSTM``'s ``forget_bias`` and ``chrono_init``, named by ``option`` in errors).
        A cell without a forget gate raises ``ValueError``."""
        raise ValueError(f"{option}: variant {self.name!r} has no forget gate bias to initialise")

    def with_regularisation(self, *, zoneout: bool, recurrent_dropout: bool) -> "Variant":
        """A copy whose step reads zoneout and/or recurrent dropout masks (``forward(..., masks=...)``); only the
        gated-cell family can."""
        option = "zoneout" if zoneout else "recurrent_dropout"
        raise ValueError(f"{option}: variant {self.name!r} has no masks to apply; zoneout and recurrent_dropout are "
                         f"available for the gated-cell variants (lstmcore.GatedCell)")

    def with_projection(self, proj_size: int) -> "Variant":
        """A copy whose output ``h`` is projected to ``proj_size`` units (LSTMP); only the gated-cell family can."""
        raise ValueError(f"proj_size: variant {self.name!r} has no projection (LSTMP); proj_size is available for "
                         f"the gated-cell variants (lstmcore.GatedCell)")

    def parameter_count(self, input_size: int, hidden_size: int) -> int:
        return int(sum(np.prod(s) for s in self.parameter_shapes(input_size, hidden_size).values()))

    def init_parameters(self, input_size: int, hidden_size: int, rng: np.random.Generator,
                        dtype=np.float32) -> dict[str, np.ndarray]:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter, as PyTorch initialises ``nn.LSTM``."""
        bound = 1.0 / np.sqrt(hidden_size)
        return {name: rng.uniform(-bound, bound, size=shape).astype(dtype)
                for name, shape in self.parameter_shapes(input_size, hidden_size).items()}

    def forward(self, params, x, state, lengths, reverse, out):
        raise NotImplementedError

    def backward(self, params, cache, d_out, d_state, d_x, accumulate_dx):
        raise NotImplementedError

    # -- looking inside (optional: the defaults work for every variant) ----------------------------------------------
    def trace_quantities(self) -> dict[str, str]:
        """The names ``trace`` returns, each with a one-line description (the plots' labels). By default the states
        (``state_names``) and ``"output"``; a variant that traces more (its gates, say) overrides this and ``trace``."""
        from lstmcore.tracing import state_quantities

        return state_quantities(self)

    def trace(self, params, x, state, lengths, reverse):
        """Every step of one direction, for ``LSTM.trace``: returns ``(final_state, {name: (T, B, H) array})`` with
        exactly the names of ``trace_quantities()``, indexed by time step (padded steps: see ``lstmcore.tracing``).
        By default it runs ``forward`` one step at a time, carrying the state tuple."""
        from lstmcore.tracing import trace_by_steps

        return trace_by_steps(self, params, x, state, lengths, reverse)

    def cell_structure(self):
        """The cell's structure for ``lstmcore.diagram`` (a ``lstmcore.diagrams.CellStructure`` or a dict in its
        format, see docs/plugins.md), or None: the diagram then draws the cell as a box with its states."""
        return None


class CompiledCell(Variant):
    """A variant whose element-wise step is compiled: a ``CellKernel`` (``lstmcore/_kernels/_driver.pxd``) that
    lstmcore's sequence driver runs over whole sequences, forward and BPTT (input projection, recurrence on a thread
    team, lengths, reverse, weight gradients). Subclasses implement ``parameter_shapes``, ``step_kernel`` and
    ``driver_parameters``; ``forward`` and ``backward`` are done here.
    """

    compiled: ClassVar[bool] = True
    skips_input_grad: ClassVar[bool] = True

    def step_kernel(self):
        """The ``lstmcore._kernels._driver.CellKernel`` of this configuration."""
        raise NotImplementedError

    def projection(self, params: dict):
        """The (P, H) matrix projecting the output, r_t = W_proj h_t, or None: the driver's ``projection`` (a
        projected cell's R reads r, and r is its output and its state ``h``)."""
        return None

    def driver_parameters(self, params: dict) -> tuple:
        """``(W, b, recurrent_weights, step_params)`` for the driver: arrays of ``params`` or views of them, never
        copies, because the same mapping applied to the gradients' dict tells the driver where to write them.
        ``recurrent_weights`` is a tuple in the order of the kernel's ``recurrent`` entries; ``step_params`` the
        step's per-unit vectors, or None."""
        raise NotImplementedError

    def forward(self, params, x, state, lengths, reverse, out, masks=None):
        """As ``Variant.forward``; ``masks`` (T, B, n_mask*H) for a step that reads masks (see ``_driver.forward``)."""
        W, b, weights, step_params = self.driver_parameters(params)
        return _driver.forward(self.step_kernel(), bool(reverse), x, W, b, tuple(weights), step_params, lengths,
                               tuple(state), out, projection=self.projection(params), masks=masks)

    def backward(self, params, cache, d_out, d_state, d_x, accumulate_dx):
        grads = {name: np.empty_like(value) for name, value in params.items()}
        dW, db, d_weights, d_step = self.driver_parameters(grads)
        d_init = _driver.backward(cache, d_out, tuple(d_state), dW, db, tuple(d_weights), d_step, d_x,
                                  bool(accumulate_dx), d_projection=self.projection(grads))
        return d_init, grads


def replace_options(cell, options: dict, accepted: tuple[str, ...]):
    """A copy of the dataclass variant ``cell`` with ``options`` replaced (``cell`` itself when there are none); a
    ``TypeError`` naming the unknown ones and the ``accepted`` ones otherwise."""
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for variant {cell.name!r}; it accepts {', '.join(accepted)}")
    return dataclasses.replace(cell, **options) if options else cell


@functools.lru_cache(maxsize=256)
def _gated_kernel(cell: "GatedCell"):
    # keyed by the cell (its hash is its fields'): building kernel_spec on every forward cost ~30 us a call
    return _gated.GatedKernel(**cell.kernel_spec)


@dataclass(frozen=True)
class GatedCell(CompiledCell):
    """A spec of the compiled gated-cell family (the LSTM block of Greff et al., 2017)::

        z = g(W_z x_t + R_z y_{t-1} + b_z)                              block input
        i = sigma(W_i x_t + R_i y_{t-1} + p_i * c_{t-1} + b_i)          input gate   (i = 1 without it)
        f = sigma(W_f x_t + R_f y_{t-1} + p_f * c_{t-1} + b_f)          forget gate  (f = 1 without it; 1 - i if coupled)
        c_t = z * i + c_{t-1} * f
        o = sigma(W_o x_t + R_o y_{t-1} + p_o * c_t + b_o)              output gate  (o = 1 without it)
        y_t = h(c_t) * o

    With ``gate_recurrence`` (the paper's FGR), the gate pre-activations also receive the gates of the previous step,
    ``[i, f, o]_bar += Rg [i, f, o]_{t-1}`` (nine H x H matrices; the gates before the first step are zero).

    With ``zoneout`` (Krueger et al. 2016) the step mixes in the previous state where the masks d_h, d_c say:
    ``c_t = c~_t + d_c * (c_{t-1} - c~_t)``, ``y_t = y~_t + d_h * (y_{t-1} - y~_t)`` (c~, y~ the cell and output
    above); with ``recurrent_dropout`` (Gal & Ghahramani 2016) R reads ``m * y_{t-1}``, m one mask per sequence. The
    layer draws the masks (``lstmcore.LSTM``'s ``zoneout``, ``recurrent_dropout``).

    With ``proj_size`` P (LSTMP, Sak et al. 2014; PyTorch's ``proj_size``) the output is projected,
    ``r_t = W_proj y_t``, and r takes y's place: ``R`` reads ``r_{t-1}``, and r is the output and the state ``h``
    (P wide; the cell c stays H wide).

    Parameters: ``W`` (G*H, I), ``R`` (G*H, H) (G*H, P with a projection), ``b`` (G*H,) with row blocks ordered
    (present gates of i, f, o), then z; ``p`` (P*H,) the present peepholes in the order i, f, o; ``Rg`` (3H, 3H), rows
    the gates receiving [i, f, o], columns the gates of t-1 [i, f, o]; ``W_proj`` (P, H). ``clip`` clamps the pre-activations of z, i, f and o
    (peephole terms included) to [-clip, clip], as ONNX's ``clip``; the cell fed to h is not clamped. No code is needed
    for a new spec: the compiled kernel runs it.
    """

    name: str = "gated"
    input_gate: bool = True
    forget_gate: bool = True
    output_gate: bool = True
    peepholes: bool = False
    coupled: bool = False
    gate_activation: Any = "sigmoid"
    input_activation: Any = "tanh"
    output_activation: Any = "tanh"
    clip: float | None = None
    gate_recurrence: bool = False
    description: str = ""
    proj_size: int | None = None
    zoneout: bool = False
    recurrent_dropout: bool = False
    _OPTIONS: ClassVar[tuple[str, ...]] = ("gate_activation", "input_activation", "output_activation", "clip")
    #: the kind of cell a framework's weight ``lstmcore.interop.Layout`` describes
    interop_cell: ClassVar[str] = "LSTM"

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"variant name {self.name!r} must be lower-case letters, digits, '_' or '-'")
        if self.coupled and not (self.input_gate and not self.forget_gate):
            raise ValueError("a coupled cell (f = 1 - i) needs input_gate=True and forget_gate=False")
        if self.gate_recurrence and not (self.input_gate and self.forget_gate and self.output_gate):
            raise ValueError("gate_recurrence (FGR) needs the input, forget and output gates, uncoupled")
        for field in ("gate_activation", "input_activation", "output_activation"):
            object.__setattr__(self, field, Activation.parse(getattr(self, field), field))
        if self.clip is not None:
            clip = finite_number(self.clip, "clip (None or a positive finite number)", minimum=0, strict=True)
            object.__setattr__(self, "clip", clip)
        if self.proj_size is not None:
            object.__setattr__(self, "proj_size", positive_int(self.proj_size, "proj_size"))

    def with_projection(self, proj_size: int) -> "GatedCell":
        return dataclasses.replace(self, proj_size=proj_size)

    def with_regularisation(self, *, zoneout, recurrent_dropout):
        return dataclasses.replace(self, zoneout=bool(zoneout), recurrent_dropout=bool(recurrent_dropout))

    def init_forget_bias(self, params, values, *, chrono, option):
        H, blocks, b = len(values), self.gate_blocks, params["b"]

        def block(gate):
            k = blocks.index(gate)
            return slice(k * H, (k + 1) * H)

        if self.coupled:  # f = 1 - sigma(i_bar) = sigma(-i_bar)
            b[block("i")] = -values
            return
        if "f" not in blocks:
            raise ValueError(f"{option}: variant {self.name!r} has no forget gate (its gate blocks are {blocks})")
        b[block("f")] = values
        if chrono and "i" in blocks:
            b[block("i")] = -values

    def output_size(self, hidden_size: int) -> int:
        return self.proj_size or hidden_size

    def with_options(self, **options) -> "GatedCell":
        return replace_options(self, options, self._OPTIONS)

    # -- parameter blocks ----------------------------------------------------------------------------------------------
    @property
    def gate_blocks(self) -> tuple[str, ...]:
        """Row blocks of W, R and b, in order: the present gates of (i, f, o), then the block input z."""
        present = {"i": self.input_gate, "f": self.forget_gate and not self.coupled, "o": self.output_gate}
        return tuple(g for g in "ifo" if present[g]) + ("z",)

    @property
    def peephole_blocks(self) -> tuple[str, ...]:
        """Blocks of p, in order: the peepholes of the present gates among (i, f, o)."""
        return tuple(g for g in self.gate_blocks if g != "z") if self.peepholes else ()

    def parameter_shapes(self, input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        G, H = len(self.gate_blocks), hidden_size
        shapes = {"W": (G * H, input_size), "R": (G * H, self.output_size(H)), "b": (G * H,)}
        if self.peephole_blocks:
            shapes["p"] = (len(self.peephole_blocks) * H,)
        if self.gate_recurrence:
            shapes["Rg"] = (3 * H, 3 * H)
        if self.proj_size:
            shapes["W_proj"] = (self.proj_size, H)
        return shapes

    @property
    def kernel_spec(self) -> dict:
        """The compiled step's configuration, by name (the keywords of ``lstmcore._kernels._gated.GatedKernel``)."""
        def activation(a):
            return (a.name, a.alpha, a.beta)
        return dict(blocks="".join(self.gate_blocks), peepholes="".join(self.peephole_blocks), coupled=self.coupled,
                    gate_activation=activation(self.gate_activation),
                    input_activation=activation(self.input_activation),
                    output_activation=activation(self.output_activation),
                    clip=self.clip or 0.0, gate_recurrence=self.gate_recurrence, zoneout=self.zoneout,
                    recurrent_dropout=self.recurrent_dropout)

    def step_kernel(self):
        return _gated_kernel(self)

    def driver_parameters(self, params):
        weights = (params["R"], params["Rg"]) if self.gate_recurrence else (params["R"],)
        return params["W"], params["b"], weights, params.get("p")

    def projection(self, params):
        return params["W_proj"] if self.proj_size else None

    # with recurrent dropout the step carries m * h as a third state, started here from m * h_0
    def _dropout_mask(self, masks):
        H = masks.shape[2] // (3 if self.zoneout else 1)
        k = 2 if self.zoneout else 0
        return masks[0, :, k * H:(k + 1) * H]

    def forward(self, params, x, state, lengths, reverse, out, masks=None):
        if not self.recurrent_dropout:
            return super().forward(params, x, state, lengths, reverse, out, masks)
        dropped = np.ascontiguousarray(self._dropout_mask(masks) * state[0])
        final, tape = super().forward(params, x, (*state, dropped), lengths, reverse, out, masks)
        return final[:2], tape

    def backward(self, params, cache, d_out, d_state, d_x, accumulate_dx):
        if not self.recurrent_dropout:
            return super().backward(params, cache, d_out, d_state, d_x, accumulate_dx)
        (d_h, d_c, d_dropped), grads = super().backward(params, cache, d_out, (*d_state, np.zeros_like(d_state[0])),
                                                        d_x, accumulate_dx)
        return (d_h + self._dropout_mask(cache.masks) * d_dropped, d_c), grads

    # -- looking inside ---------------------------------------------------------------------------------------------
    def trace_quantities(self) -> dict[str, str]:
        from lstmcore.tracing import gated_cell_quantities

        return gated_cell_quantities(self)

    def trace(self, params, x, state, lengths, reverse):
        """A NumPy step of the equations above (``lstmcore.tracing.gated_cell_trace``); the kernel is not involved."""
        from lstmcore.tracing import gated_cell_trace

        return gated_cell_trace(self, params, x, state, lengths, reverse)

    def cell_structure(self):
        from lstmcore.diagrams import gated_cell_structure

        return gated_cell_structure(self)
