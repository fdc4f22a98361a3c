"""``lstmcore.LSTM``: a stack of (optionally bidirectional) recurrent layers of any registered variant, with PyTorch's
conventions. All validation happens here, before any kernel runs."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np

from lstmcore._kernels._driver import frozen_copy
from lstmcore._per_thread import PerThreadState, per_thread
from lstmcore._validation import finite_number, positive_int, random_seed
from lstmcore.plugins import get_variant
from lstmcore.variant import Variant

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _physical_memory() -> int:
    """Bytes of physical memory (a generous 2**48 where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 2**48


def _own_copy(array, dtype=None) -> np.ndarray:
    """A C-contiguous, read-only copy: the forward's own, which neither the caller nor a variant can change before the
    backward reads it."""
    copy = np.array(array, dtype=dtype, order="C")
    copy.flags.writeable = False
    return copy


class ReverseOnly(Variant):
    """A cell run backwards in time, for a one-direction layer that reads its sequence from the end (ONNX
    ``direction="reverse"``): ``LSTM(..., variant=ReverseOnly(cell))``.

    ``LSTM`` has no reverse-only mode, so this wraps a variant and flips the ``reverse`` flag it is called with: the
    variant's own reverse pass (the one a bidirectional layer's second direction uses, lengths included) runs forward
    and backward. Parameters, names and options are the wrapped cell's.
    """

    def __init__(self, cell: Variant):
        self.cell = cell
        self.name = cell.name
        self.description = f"{cell.name}, run in reverse time order"
        self.state_names = cell.state_names

    @property
    def compiled(self) -> bool:
        return self.cell.compiled

    def __getattr__(self, name):
        # read-only view of the wrapped cell's spec (gate_blocks, peephole_blocks, activations, clip, ...)
        if name == "cell" or name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.cell, name)

    def __repr__(self) -> str:
        return f"ReverseOnly({self.cell!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ReverseOnly) and other.cell == self.cell

    def __hash__(self) -> int:
        return hash(("ReverseOnly", self.cell))

    def with_options(self, **options) -> "ReverseOnly":
        return ReverseOnly(self.cell.with_options(**options)) if options else self

    def with_projection(self, proj_size: int) -> "ReverseOnly":
        return ReverseOnly(self.cell.with_projection(proj_size))

    def output_size(self, hidden_size: int) -> int:
        return self.cell.output_size(hidden_size)

    def state_sizes(self, hidden_size: int) -> tuple[int, ...]:
        return self.cell.state_sizes(hidden_size)

    def parameter_shapes(self, input_size, hidden_size):
        return self.cell.parameter_shapes(input_size, hidden_size)

    def init_parameters(self, input_size, hidden_size, rng, dtype=np.float32):
        return self.cell.init_parameters(input_size, hidden_size, rng, dtype)

    def forward(self, params, x, state, lengths, reverse, out):
        return self.cell.forward(params, x, state, lengths, not reverse, out)

    def backward(self, params, cache, d_out, d_state, d_x, accumulate_dx):
        return self.cell.backward(params, cache, d_out, d_state, d_x, accumulate_dx)  # the cache knows its direction

    def trace_quantities(self) -> dict[str, str]:
        return self.cell.trace_quantities()

    def trace(self, params, x, state, lengths, reverse):
        return self.cell.trace(params, x, state, lengths, not reverse)

    def cell_structure(self):
        return self.cell.cell_structure()

    def init_forget_bias(self, params, values, *, chrono, option):
        self.cell.init_forget_bias(params, values, chrono=chrono, option=option)


def _rate(value, name: str) -> float:
    return finite_number(value, f"{name} (a probability in [0, 1))", minimum=0) if value is not None else 0.0


def check_layer_options(forget_bias=None, chrono_init=None, zoneout=None, recurrent_dropout=None) -> dict:
    """The initialisation and regularisation options of ``LSTM`` checked: ``forget_bias`` a finite number,
    ``chrono_init`` (T_max) a number > 2, at most one of them; ``zoneout`` a rate or a pair (h's, c's) and
    ``recurrent_dropout`` a rate, in [0, 1) (0 or None: off). ``ValueError``/``TypeError`` naming the option
    otherwise."""
    if forget_bias is not None:
        forget_bias = finite_number(forget_bias, "forget_bias (None, or the forget gate's initial bias)")
    if chrono_init is not None:
        chrono_init = finite_number(chrono_init, "chrono_init (None, or T_max > 2 of the chrono initialisation)",
                                    minimum=2, strict=True)
    if forget_bias is not None and chrono_init is not None:
        raise ValueError("forget_bias and chrono_init both set the forget gate's initial bias: give one of them")
    rates = zoneout if isinstance(zoneout, (tuple, list)) else (zoneout, zoneout)
    if len(rates) != 2:
        raise ValueError(f"zoneout must be a rate or a pair (rate of h, rate of c), got {zoneout!r}")
    rates = (_rate(rates[0], "zoneout"), _rate(rates[1], "zoneout"), _rate(recurrent_dropout, "recurrent_dropout"))
    for rate, name in zip(rates, ("zoneout", "zoneout", "recurrent_dropout")):
        if rate >= 1:
            raise ValueError(f"{name} must be a probability in [0, 1), got {rate}")
    return {"forget_bias": forget_bias, "chrono_init": chrono_init,
            "zoneout": rates[:2] if any(rates[:2]) else None, "recurrent_dropout": rates[2] or None}


def check_proj_size(proj_size, hidden_size: int) -> int:
    """``proj_size`` checked: an integer with 0 < proj_size < hidden_size (``ValueError`` naming it otherwise)."""
    proj_size = positive_int(proj_size, "proj_size (None for no projection)")
    if proj_size >= hidden_size:
        raise ValueError(f"proj_size must be smaller than hidden_size = {hidden_size}, got {proj_size}")
    return proj_size


class LSTM(PerThreadState):
    """A recurrent layer stack: ``output, (h_n, c_n) = layer(x, state=None, lengths=None)``.

    Shapes, with D = 2 if ``bidirectional`` else 1 and L = ``num_layers``:

    - ``x``: ``(T, B, input_size)``, or ``(B, T, input_size)`` with ``batch_first=True``;
    - ``state``: ``(h_0, c_0)``, each ``(L*D, B, hidden_size)``; zeros when omitted;
    - ``lengths``: ``(B,)`` integers in ``[0, T]`` for a padded batch: outputs past a sequence's length are zero, its
      final state is the one at its last real step, and the reverse direction starts at that step;
    - ``output``: ``(T, B, D*hidden_size)`` (``(B, T, ...)`` with ``batch_first``), forward direction first;
    - ``h_n``, ``c_n``: ``(L*D, B, hidden_size)``, ordered layer by layer, forward direction first.

    ``proj_size`` P (LSTMP, as PyTorch's ``proj_size``; gated-cell variants only, 0 < P < hidden_size) projects each
    step's output, ``r_t = W_proj h_t``: r is what the recurrence reads, the output (``D*P`` wide) and ``h_0``/``h_n``
    (``(L*D, B, P)``); ``c`` stays ``hidden_size`` wide. The parameter ``W_proj_l{k}`` is ``(P, hidden_size)``.

    ``layer.backward(d_output, d_h_n=None, d_c_n=None)`` runs BPTT through the last ``forward``, returns ``d_x`` and
    fills ``layer.grads`` (keys as ``layer.params``) and ``layer.state_grads = (d_h_0, d_c_0)`` (one gradient per
    state of the variant, in its order: ``d_n_n``, ``d_m_n`` follow for sLSTM's four states).

    Parameters are named ``{W,R,b,p}_l{k}`` for layer k and ``..._reverse`` for the backward direction; their shapes are
    in the variant's docstring (``lstmcore.get_variant(name)``). ``variant_options`` (e.g. ``gate_activation``,
    ``clip``) configure the variant for every direction; ``reverse_options`` overrides some of them for the reverse one.
    ``check_finite`` refuses NaN or Inf in the input, state, gradients and weights with a ``ValueError``.

    Initialisation options (off by default; the gated cells with a forget gate, or coupled): ``forget_bias`` sets
    the forget gate's bias b_f (Jozefowicz et al. 2015 recommend 1); ``chrono_init`` = T_max draws
    b_f ~ log(U[1, T_max - 1]) per unit and sets b_i = -b_f (Tallec & Ollivier 2018). For a coupled cell
    (f = 1 - i = σ(-ī)) both set b_i = -b_f.

    Regularisation (off by default, gated cells, ``forward(..., training=True)`` only draws masks): ``zoneout`` = z
    or (z_h, z_c) keeps each unit's previous h and c with those probabilities at each step, and uses the expectation
    (the rates as masks) otherwise (Krueger et al. 2016); ``recurrent_dropout`` = p drops units of the h that R reads,
    one mask per sequence scaled by 1/(1-p), and nothing otherwise (Gal & Ghahramani 2016). Masks come from
    ``layer.mask_rng`` (a NumPy generator seeded from ``seed``; assign one to fix them); a forward keeps its masks
    for its backward, whose gradients are exact for them.

    A forward keeps what its backward needs (its own copies of ``x``, ``lengths``, the initial state and the
    parameters), so changing any of them in place afterwards does not change the gradients. Threads may share a layer:
    the tape, ``grads`` and ``state_grads`` are per thread (see the README's API section).
    """

    _tape = per_thread()
    grads = per_thread(dict, shared_fallback=True)
    state_grads = per_thread(shared_fallback=True)

    def __init__(self, input_size, hidden_size, variant="vanilla", num_layers=1, bidirectional=False,
                 batch_first=False, dtype=np.float32, seed=None, check_finite=True, reverse_options=None,
                 proj_size=None, forget_bias=None, chrono_init=None, zoneout=None, recurrent_dropout=None,
                 **variant_options):
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.num_layers = positive_int(num_layers, "num_layers")
        self.bidirectional = bool(bidirectional)
        self.batch_first = bool(batch_first)
        self.check_finite = bool(check_finite)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
        if self.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        base = variant if isinstance(variant, Variant) else get_variant(variant)
        self.variant_name = base.name
        forward_cell = base.with_options(**variant_options)
        if reverse_options and not self.bidirectional:
            raise ValueError("reverse_options needs bidirectional=True")
        reverse_cell = forward_cell.with_options(**(reverse_options or {})) if self.bidirectional else None
        self.cells = [forward_cell] + ([reverse_cell] if self.bidirectional else [])
        self.proj_size = None
        if proj_size is not None:
            self.proj_size = check_proj_size(proj_size, self.hidden_size)
            self.cells = [cell.with_projection(self.proj_size) for cell in self.cells]
        #: the width of each direction's output and of h: proj_size, or hidden_size
        self.output_width = self.cells[0].output_size(self.hidden_size)

        options = check_layer_options(forget_bias, chrono_init, zoneout, recurrent_dropout)
        self.forget_bias, self.chrono_init = options["forget_bias"], options["chrono_init"]
        self.zoneout, self.recurrent_dropout = options["zoneout"], options["recurrent_dropout"]
        if self.zoneout or self.recurrent_dropout:
            if self.proj_size:
                raise ValueError("zoneout and recurrent_dropout do not combine with proj_size yet")
            self.cells = [cell.with_regularisation(zoneout=bool(self.zoneout),
                                                   recurrent_dropout=bool(self.recurrent_dropout))
                          for cell in self.cells]
        self._check_parameters_fit_in_memory()
        rng = np.random.default_rng(random_seed(seed, "seed"))
        self.params: dict[str, np.ndarray] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}  # key -> shape, every key of params
        # (layer, direction) -> {name: key}: the map (layer, direction, name) -> key, as torch's _all_weights
        self._keys: dict[tuple[int, int], dict[str, str]] = {}
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else self.num_directions * self.output_width
            for direction, cell in enumerate(self.cells):
                values = cell.init_parameters(in_size, self.hidden_size, rng, self.dtype)
                if self.forget_bias is not None:
                    cell.init_forget_bias(values, np.full(self.hidden_size, self.forget_bias), chrono=False,
                                          option="forget_bias")
                elif self.chrono_init is not None:
                    b_f = np.log(rng.uniform(1, self.chrono_init - 1, size=self.hidden_size))
                    cell.init_forget_bias(values, b_f, chrono=True, option="chrono_init")
                keys = self._keys[layer, direction] = {}
                for name, value in values.items():
                    key = keys[name] = self.param_name(name, layer, direction)
                    self.params[key] = np.ascontiguousarray(value, dtype=self.dtype)
                    self._shapes[key] = tuple(value.shape)
        #: the generator of zoneout and recurrent dropout masks (assign one to fix them)
        self.mask_rng = np.random.default_rng(rng.integers(2**63))

    def _check_parameters_fit_in_memory(self) -> None:
        """Refuse, before allocating, sizes whose parameters (and as much again for their gradients) exceed the
        machine's physical memory, saying how much they would need."""
        def elements(in_size):
            return sum(math.prod(shape) for cell in self.cells
                       for shape in cell.parameter_shapes(in_size, self.hidden_size).values())
        later = elements(self.num_directions * self.output_width) if self.num_layers > 1 else 0
        needed = 2 * (elements(self.input_size) + (self.num_layers - 1) * later) * self.dtype.itemsize
        available = _physical_memory()
        if needed > available:
            raise ValueError(
                f"LSTM(input_size={self.input_size}, hidden_size={self.hidden_size}, num_layers={self.num_layers}"
                f"{', bidirectional=True' if self.bidirectional else ''}) needs {needed / 2**30:,.3g} GiB for its "
                f"{self.dtype.name} parameters and gradients, more than this machine's {available / 2**30:,.3g} GiB")

    # -- naming -------------------------------------------------------------------------------------------------------
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @staticmethod
    def param_name(name: str, layer: int, direction: int) -> str:
        return f"{name}_l{layer}" + ("_reverse" if direction else "")

    def parameter_keys(self, layer: int, direction: int) -> dict[str, str]:
        """``{name: key}``: the keys of ``params`` that hold the variant's parameters of one layer and direction."""
        if (layer, direction) not in self._keys:
            raise ValueError(f"no layer {layer!r}, direction {direction!r}: layers are 0 .. {self.num_layers - 1}, "
                             f"directions 0 .. {self.num_directions - 1}")
        return dict(self._keys[layer, direction])

    def _checked_params(self) -> list[list[dict[str, np.ndarray]]]:
        """``[layer][direction] -> {name: array}``: copies of every parameter (C-contiguous, the forward's own), after
        checking ``params`` holds exactly the layer's keys."""
        if not isinstance(self.params, Mapping):
            raise TypeError(f"layer.params must be a dict of NumPy arrays, got {type(self.params).__name__}")
        extra = [key for key in self.params if key not in self._shapes]
        if extra:
            raise ValueError(f"layer.params has {', '.join(map(repr, extra))}, which is not a parameter of this layer; "
                             f"its keys are {', '.join(self._shapes)}")
        return [[self._direction_params(k, d) for d in range(self.num_directions)] for k in range(self.num_layers)]

    def _direction_params(self, layer: int, direction: int) -> dict[str, np.ndarray]:
        """The parameters of one layer and direction, checked and copied for the kernel."""
        out, params, shapes = {}, self.params, self._shapes
        for name, key in self._keys[layer, direction].items():
            value = params[key] if key in params else None
            if not (isinstance(value, np.ndarray) and value.shape == shapes[key] and value.dtype == self.dtype):
                self._parameter_error(layer, direction, name, key, value)
            copy = frozen_copy(value, self.check_finite)
            if copy is None:
                raise ValueError(f"layer.params[{key!r}] contains NaN or Inf")
            out[name] = copy
        return out

    def _parameter_error(self, layer: int, direction: int, name: str, key: str, value):
        """Raise what is wrong with ``value`` as ``layer.params[key]``: missing, not an array, shape or dtype."""
        shape = self._shapes[key]
        if key not in self.params:
            raise ValueError(f"layer.params lacks {key!r} (parameter {name!r} of layer {layer}, "
                             f"{'reverse' if direction else 'forward'} direction), of shape {shape}")
        if not isinstance(value, np.ndarray):
            raise TypeError(f"layer.params[{key!r}] must be a NumPy array, got {type(value).__name__}")
        if value.shape != shape:
            raise ValueError(f"layer.params[{key!r}] has shape {value.shape}, expected {shape}")
        raise TypeError(f"layer.params[{key!r}] has dtype {value.dtype}, the layer's dtype is {self.dtype}")

    def parameter_count(self) -> int:
        return int(sum(v.size for v in self.params.values()))

    def summary(self):
        """A Keras-style table (``print(layer.summary())``): each layer and direction, its variant, output shape and
        named parameters with shape and count; ``.total`` equals ``parameter_count()``."""
        from lstmcore.summaries import layer_summary

        return layer_summary(self)

    def __repr__(self) -> str:
        return (f"LSTM({self.input_size}, {self.hidden_size}, variant={self.variant_name!r}, "
                f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, "
                + (f"proj_size={self.proj_size}, " if self.proj_size else "")
                + f"batch_first={self.batch_first}, dtype={self.dtype.name})")

    # -- validation ---------------------------------------------------------------------------------------------------
    def _float_array(self, value, name: str, shape: tuple[int, ...], shape_text: str, finite: bool = True) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            try:
                value = np.asarray(value, dtype=self.dtype)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name} must be an array of numbers: {exc}") from None
        if value.dtype != self.dtype:
            if value.dtype.kind == "f":
                raise TypeError(f"{name} has dtype {value.dtype} but the layer's dtype is {self.dtype}; "
                                f"convert it with .astype(np.{self.dtype.name})")
            raise TypeError(f"{name} has unsupported dtype {value.dtype}; expected {self.dtype}")
        if value.shape != shape:
            raise ValueError(f"{name} has shape {value.shape}, expected {shape_text} = {shape}")
        if finite and self.check_finite and not np.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or Inf")
        return value

    def _frozen(self, value: np.ndarray, name: str) -> np.ndarray:
        """The forward's own copy of ``value`` (checked by ``_float_array`` but for NaN and Inf, checked here)."""
        copy = frozen_copy(value, self.check_finite)
        if copy is None:
            raise ValueError(f"{name} contains NaN or Inf")
        return copy

    def _input(self, x) -> np.ndarray:
        order = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x, dtype=self.dtype)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"x must be an array of numbers {order}: {exc}") from None
        if x.ndim != 3:
            raise ValueError(f"x must be 3-D {order}, got shape {x.shape}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"x has {x.shape[2]} features in its last axis, expected input_size = {self.input_size}")
        if (x.shape[0] if self.batch_first else x.shape[1]) < 1:
            raise ValueError(f"x has an empty batch: shape {x.shape}, expected {order} with B >= 1")
        x = self._float_array(x, "x", x.shape, order, finite=False)
        # the backward reads it: the forward's own (time-major) copy
        return self._frozen(x.transpose(1, 0, 2) if self.batch_first else x, "x")

    def _lengths(self, lengths, T: int, B: int):
        if lengths is None:
            return None
        arr = np.asarray(lengths)
        if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
            raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
        if arr.shape != (B,):
            raise ValueError(f"lengths has shape {arr.shape}, expected (B,) = ({B},)")
        if arr.size and (arr.min() < 0 or arr.max() > T):
            raise ValueError(f"lengths must lie in [0, T] = [0, {T}], got min {arr.min()} and max {arr.max()}")
        return _own_copy(arr, np.int32)

    def _state_shapes(self, B: int) -> list[tuple[tuple[int, ...], str]]:
        """(shape, text) of each state of the stack, in the order of ``state_names``."""
        L, D = self.num_layers * self.num_directions, self.num_directions
        return [((L, B, size), "(num_layers*num_directions, B, " + ("proj_size" if size != self.hidden_size
                                                                       else "hidden_size") + ")")
                for size in self.cells[0].state_sizes(self.hidden_size)]

    def _state(self, state, B: int):
        shapes = self._state_shapes(B)
        if state is None:
            return tuple(_own_copy(np.zeros(shape, self.dtype)) for shape, _ in shapes)
        names = self.cells[0].state_names
        if not isinstance(state, (tuple, list)) or len(state) != len(names):
            got = f"{len(state)} arrays" if isinstance(state, (tuple, list)) else type(state).__name__
            raise TypeError(f"state must be a tuple ({', '.join(n + '_0' for n in names)},) of {len(names)} "
                            f"array(s), got {got}")
        return tuple(self._frozen(self._float_array(s, f"state {n}_0", shape, text, finite=False), f"state {n}_0")
                     for s, n, (shape, text) in zip(state, names, shapes))

    # -- compute ------------------------------------------------------------------------------------------------------
    def _through_stack(self, x, init, run):
        """Feed ``x`` (T, B, I) up the stack: ``run(k, d, cell, inp, start, out)`` runs layer k's direction d on
        ``inp`` from the state ``start``, writes its (T, B, H) output into ``out`` and returns ``(final_state,
        record)``. Returns the top layer's output, the final states ``(L*D, B, H)`` and the records [k][d]."""
        T, B, _ = x.shape
        H, D = self.output_width, self.num_directions
        final = [np.empty_like(s) for s in init]
        records, inp = [], x
        for k in range(self.num_layers):
            out = np.zeros((T, B, D * H), dtype=self.dtype)
            layer_records = []
            for d, cell in enumerate(self.cells):
                start = tuple(np.ascontiguousarray(s[k * D + d]) for s in init)
                end, record = run(k, d, cell, inp, start, out[:, :, d * H:(d + 1) * H])
                for f, e in zip(final, end):
                    f[k * D + d] = e
                layer_records.append(record)
            records.append(layer_records)
            out.flags.writeable = k == self.num_layers - 1  # the next layer's read-only x, or the caller's output
            inp = out
        return inp, tuple(final), records

    def _step_masks(self, T: int, B: int, training: bool):
        """``[layer][direction]`` -> the step's masks (T, B, n_mask*H): zoneout's d_h, d_c (Bernoulli of the rates
        in training, the rates otherwise), then recurrent dropout's m (one Bernoulli(1-p)/(1-p) per sequence and
        unit, the same at every step; ones otherwise); None without either option."""
        if self.zoneout is None and self.recurrent_dropout is None:
            return None
        shape, masks = (T, B, self.hidden_size), []
        for _ in range(self.num_layers):
            row = []
            for _ in self.cells:
                parts = []
                for rate in self.zoneout or ():
                    parts.append(self.mask_rng.random(shape) < rate if training else np.full(shape, rate))
                if self.recurrent_dropout is not None:
                    keep = 1 - self.recurrent_dropout
                    kept = (self.mask_rng.random(shape[1:]) < keep) / keep if training else np.ones(shape[1:])
                    parts.append(np.broadcast_to(kept, shape))
                row.append(_own_copy(np.concatenate(parts, axis=2), self.dtype))
            masks.append(row)
        return masks

    def forward(self, x, state=None, lengths=None, training=False):
        """Run the whole stack over ``x``; returns ``output, (h_n, c_n)`` (see the class docstring). ``training``
        draws zoneout and recurrent dropout masks (when the layer has them)."""
        # the previous forward's caches give their workspaces back for this one; a failed forward leaves no tape
        self._tape = None
        x = self._input(x)
        T, B, _ = x.shape
        lengths = self._lengths(lengths, T, B)
        init = self._state(state, B)
        masks = self._step_masks(T, B, bool(training))
        top, final, self._tape = self.run_forward(self._checked_params(), x, init, lengths, masks)
        output = top.transpose(1, 0, 2) if self.batch_first else top
        return output, final

    def run_forward(self, params, x, init, lengths, masks=None):
        """The stack's forward on checked arrays, keeping no state: ``params[k][d]`` ``{name: array}`` for layer k and
        direction d, ``x`` (T, B, I) C-contiguous, ``init`` the initial states (each ``(L*D, B, H)``), ``lengths``
        int32 or None. Returns ``(output (T, B, D*H), final_states, tape)``, the tape being what ``run_backward``
        needs; the arrays given are referenced by the tape, not copied (``forward`` passes its own copies;
        lstmcore.torch passes tensors' memory, which autograd protects from in-place changes). ``masks``: the step
        masks ``[k][d]`` (``_step_masks``), those of evaluation when None."""
        T, B, _ = x.shape
        if masks is None:
            masks = self._step_masks(T, B, training=False)

        def run(k, d, cell, inp, start, out):
            if T == 0:
                return start, None
            if masks is not None:
                return cell.forward(params[k][d], inp, start, lengths, d == 1, out, masks=masks[k][d])
            return cell.forward(params[k][d], inp, start, lengths, d == 1, out)

        top, final, caches = self._through_stack(x, init, run)
        return top, final, (params, caches, T, B, x.shape[2])

    __call__ = forward

    def trace(self, x, state=None, lengths=None):
        """Run the stack like ``forward`` and keep every step: returns a ``lstmcore.tracing.Trace``.

        ``trace[layer, direction][name]`` is a ``(T, B, H)`` array (``(B, T, H)`` with ``batch_first``) of each step's
        gates, pre-activations, block input, states and output, as the variant's ``trace_quantities()`` names them;
        ``trace.output`` and ``trace.final_state`` equal what ``forward`` returns. ``forward`` itself is unchanged.
        """
        from lstmcore.tracing import trace_layer

        if self.proj_size or self.zoneout or self.recurrent_dropout:
            raise ValueError(f"LSTM.trace does not follow proj_size, zoneout or recurrent_dropout yet (this layer: "
                             f"proj_size={self.proj_size}, zoneout={self.zoneout}, recurrent_dropout="
                             f"{self.recurrent_dropout}); forward and backward do")
        return trace_layer(self, x, state, lengths)

    def backward(self, d_output, *d_final_states, need_input_grad=True, **d_named_states):
        """BPTT through the last ``forward``: returns dE/dx and fills ``grads`` and ``state_grads``.

        The gradients of the final states follow ``d_output`` in the order of the variant's states
        (``backward(d_output, d_h_n, d_c_n)``), or by name (``d_h_n=...``, ``d_c_n=...``; ``d_n_n``, ``d_m_n`` for
        sLSTM's); a state left out has a zero gradient. With ``need_input_grad=False`` the first layer skips dE/dx (one
        GEMM less, as PyTorch does for an input that does not require grad) and ``None`` is returned.
        """
        if self._tape is None:
            raise RuntimeError("backward() needs a forward() first, in the same thread: call layer(x) before "
                               "layer.backward(d_output) (each thread differentiates its own last forward)")
        params, caches, T, B, I = self._tape
        H, D = self.output_width, self.num_directions
        out_shape = (B, T, D * H) if self.batch_first else (T, B, D * H)
        d_out = self._float_array(d_output, "d_output", out_shape,
                                  "output's shape " + ("(B, T, D*H)" if self.batch_first else "(T, B, D*H)"))
        d_out = np.ascontiguousarray(d_out.transpose(1, 0, 2) if self.batch_first else d_out)
        names = self.cells[0].state_names
        keywords = [f"d_{name}_n" for name in names]
        extra = [k for k in range(len(names), len(d_final_states)) if d_final_states[k] is not None]
        if extra:
            what = "no state 'c': d_c_n must be None" if extra[0] == 1 else f"{len(names)} state(s) {names}"
            raise ValueError(f"variant {self.variant_name!r} has {what} (backward takes {', '.join(keywords)}; got "
                             f"{len(d_final_states)} state gradients)")
        given = dict(zip(keywords, d_final_states))
        for keyword, value in d_named_states.items():
            if keyword not in keywords:
                if value is None:  # d_c_n=None for a cell without c, as the two-state signature allowed
                    continue
                raise ValueError(f"variant {self.variant_name!r} has no state {keyword[2:-2]!r}: {keyword} must be "
                                 f"None (its states {names}: backward takes {', '.join(keywords)})")
            if keyword in given:
                raise TypeError(f"backward() got {keyword} both by position and by name")
            given[keyword] = value
        d_final = []
        for keyword, (shape, text) in zip(keywords, self._state_shapes(B)):
            value = given.get(keyword)
            d_final.append(np.zeros(shape, self.dtype) if value is None else
                           self._float_array(value, keyword, shape, text))
        d_x, self.grads, self.state_grads = self.run_backward(self._tape, d_out, d_final, need_input_grad)
        if not need_input_grad:
            return None
        return d_x.transpose(1, 0, 2) if self.batch_first else d_x

    def run_backward(self, tape, d_out, d_final, need_input_grad=True):
        """BPTT through the forward that made ``tape`` (``run_forward``), keeping no state: ``d_out`` (T, B, D*H)
        C-contiguous, ``d_final`` the gradients of the final states. Returns ``(d_x or None, grads, d_initial_states)``
        with ``grads`` keyed like ``params``."""
        params, caches, T, B, I = tape
        H, D, L = self.output_width, self.num_directions, self.num_layers
        d_init = [np.zeros(f.shape, self.dtype) for f in d_final]
        grads = {}
        for k in reversed(range(L)):
            in_size = I if k == 0 else D * H
            skip = k == 0 and not need_input_grad and all(cell.skips_input_grad for cell in self.cells)
            d_in = None if skip else np.zeros((T, B, in_size), dtype=self.dtype)
            for d, cell in enumerate(self.cells):
                idx = k * D + d
                if T == 0:
                    d_start = tuple(f[idx] for f in d_final)
                    g = {name: np.zeros_like(v) for name, v in params[k][d].items()}
                else:
                    d_start, g = cell.backward(params[k][d], caches[k][d], d_out[:, :, d * H:(d + 1) * H],
                                               tuple(np.ascontiguousarray(f[idx]) for f in d_final), d_in, d == 1)
                for target, value in zip(d_init, d_start):
                    target[idx] = value
                for name, key in self.parameter_keys(k, d).items():
                    if name not in g:
                        raise RuntimeError(f"variant {cell.name!r}: its backward returned no gradient for {name!r} "
                                           f"(it returned {sorted(g)})")
                    grads[key] = g[name]
            d_out = d_in
        return (d_out if need_input_grad else None), {key: grads[key] for key in self._shapes}, tuple(d_init)
