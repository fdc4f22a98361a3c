"""lstmcore inside PyTorch: ``lstmcore.torch.LSTM``, an ``nn.Module`` for every registered variant, with autograd
through lstmcore's compiled forward and BPTT kernels. Needs the ``torch`` extra (``pip install "lstmcore[torch]"``);
``import lstmcore`` never imports torch.

    >>> import torch, lstmcore.torch                                   # doctest: +SKIP
    >>> lstm = lstmcore.torch.LSTM(8, 16, variant="peephole", batch_first=True)
    >>> output, (h_n, c_n) = lstm(torch.randn(4, 10, 8))
    >>> output.sum().backward()                                        # lstmcore's BPTT kernel

Autograd runs lstmcore's own BPTT kernels. Under ``torch.compile`` they are two custom operators registered with
``torch.library`` (``lstmcore::lstm_forward``, and ``lstmcore::lstm_backward`` registered as its autograd formula,
both with fake implementations), so the compiled graph keeps them as single nodes (no graph break). Each call is
self-contained: the forward operator returns, besides its outputs, a 0-d ``int64`` *tape handle* whose storage owns
that call's tape (the kernels' saved activations and their workspaces); the backward operator finds the tape through
the handle and runs BPTT on it. The tape lives as long as autograd keeps the handle. Without its tape (a handle copied
by hand) the backward operator recomputes the forward first: correct, one forward slower. In eager mode the same two
functions run inside a ``torch.autograd.Function`` that keeps the tape on its ``ctx``: the custom operators' Python
dispatch costs more than the kernels at small sizes. See docs/torch.md.
"""
from __future__ import annotations

import itertools
import json
import threading
import weakref
from typing import Optional

import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - the tests run with torch
    raise ImportError(f"lstmcore.torch needs PyTorch ({exc}): pip install \"lstmcore[torch]\"") from exc
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from lstmcore.interop._layout import _block_slices, separate_recurrent_bias
from lstmcore.interop._torch import _torch_cell, _torch_layout, _torch_names
from lstmcore.layers import LSTM as _CoreLSTM
from lstmcore.layers import check_proj_size
from lstmcore.plugins import get_variant
from lstmcore.variant import Variant

__all__ = ["LSTM"]

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


# -- configurations: what the operators need to know besides tensors, by a string key --------------------------------
class _Config:
    """One module configuration: the cells, the parameter names and weight order, and an lstmcore layer per dtype that
    runs the stack (``run_forward``/``run_backward``, which keep no state)."""

    def __init__(self, input_size, hidden_size, cell: Variant, num_layers, bidirectional, bias):
        self.sizes = dict(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                          bidirectional=bidirectional)
        self.cell, self.bias = cell, bias
        self._cores: dict[np.dtype, _CoreLSTM] = {}
        self._lock = threading.Lock()
        core = self.core(np.float32)
        self.directions = [(k, d) for k in range(core.num_layers) for d in range(core.num_directions)]
        self.torch_layout = _has_torch_layout(cell)
        if not bias and not self.torch_layout and "b" not in cell.parameter_shapes(input_size, hidden_size):
            names = ", ".join(cell.parameter_shapes(input_size, hidden_size))
            raise ValueError(f"bias=False drops the bias 'b' of a cell; variant {cell.name!r} has no parameter 'b' "
                             f"(its parameters: {names}): use bias=True")
        self.apart = None
        if self.torch_layout:  # our gate rows from PyTorch's (i, f, g, o) or (r, z, n) rows, and back: _layout's
            H = hidden_size     # permutation; the GRU's bias_hh n block is our b_rn (``apart``), not part of b
            gates = _torch_layout(cell).gates
            self.torch_rows = np.concatenate([np.arange(theirs.start, theirs.stop)
                                              for _, theirs in _block_slices(gates, cell.gate_blocks, H)])
            self.from_torch_rows = np.argsort(self.torch_rows)
            self.apart = separate_recurrent_bias(cell, H)
        #: per (layer, direction): [(module name, our name or the torch key)] in the module's parameter order
        self.names = [self._direction_names(k, d) for k, d in self.directions]
        self.parameter_names = [name for names in self.names for name, _ in names]

    def core(self, dtype) -> _CoreLSTM:
        dtype = np.dtype(dtype)
        with self._lock:
            core = self._cores.get(dtype)
            if core is None:
                core = self._cores[dtype] = _CoreLSTM(variant=self.cell, dtype=dtype, seed=0, check_finite=False,
                                                      **self.sizes)
                core.params = {}  # it only runs the stack on the parameters it is given
            return core

    def _direction_names(self, k, d):
        ours = list(self._core_shapes(k, d))
        if self.torch_layout:
            torch_names = _torch_names(k, d)
            keys = ["W", "R"] + (["b_in", "b_rec"] if self.bias else []) + (["W_proj"] if "W_proj" in ours else [])
            extra = [n for n in ours if n not in ("W", "R", "b", "W_proj") and not (self.apart and n == self.apart[1])]
            return [(torch_names[key], key) for key in keys] + [(_CoreLSTM.param_name(n, k, d), n) for n in extra]
        return [(_CoreLSTM.param_name(n, k, d), n) for n in ours if self.bias or n != "b"]

    def _core_shapes(self, k, d):
        core = self._cores[np.dtype(np.float32)]
        return {name: core._shapes[key] for name, key in core.parameter_keys(k, d).items()}

    # -- module parameters <-> the kernels' ------------------------------------------------------------------------
    def to_module(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """An lstmcore layer's ``params`` -> the module's arrays by module name (in PyTorch's layout our bias goes to
        ``bias_ih`` and ``bias_hh`` is zero)."""
        return dict(zip(self.parameter_names, self.module_grads(params, split_bias=False)))

    def kernel_params(self, arrays: list[np.ndarray], dtype) -> list[list[dict]]:
        """The module's arrays (in ``parameter_names`` order) -> ``params[k][d]`` for ``run_forward``: the arrays
        themselves where the weight orders agree; in PyTorch's layout the gate blocks permuted and the two biases summed
        (one copy of W, R and b per call)."""
        it = iter(arrays)
        params = [[None] * (2 if self.sizes["bidirectional"] else 1) for _ in range(self.sizes["num_layers"])]
        for (k, d), names in zip(self.directions, self.names):
            given = {key: next(it) for _, key in names}
            if self.torch_layout:
                rows = self.torch_rows
                given["W"], given["R"] = given["W"][rows], given["R"][rows]
                if self.bias:
                    b_in, b_rec = given.pop("b_in")[rows], given.pop("b_rec")[rows]
                    if self.apart:
                        given[self.apart[1]] = b_rec[self.apart[0]].copy()
                        b_rec[self.apart[0]] = 0
                    given["b"] = b_in + b_rec
            if not self.bias:
                shapes = self._core_shapes(k, d)
                dropped = ("b",) + ((self.apart[1],) if self.apart else ())  # bias=False: no b, no b_hn
                given.update({name: np.zeros(shapes[name], dtype) for name in dropped})
            params[k][d] = given
        return params

    def module_grads(self, grads: dict[str, np.ndarray], split_bias=True) -> list[np.ndarray]:
        """The kernels' gradients (keyed like an lstmcore layer's ``params``) -> one array per module parameter, in
        ``parameter_names`` order. ``bias_hh`` gets a copy of ``bias_ih``'s (both feed the sum), or zero without
        ``split_bias``."""
        out = []
        for (k, d), names in zip(self.directions, self.names):
            for _, key in names:
                ours = grads[_CoreLSTM.param_name("b" if key in ("b_in", "b_rec") else key, k, d)]
                if key in ("W", "R", "b_in") and self.torch_layout:
                    out.append(ours[self.from_torch_rows])
                elif key == "b_rec":
                    rec = ours.copy() if split_bias else np.zeros_like(ours)
                    if self.apart:
                        rec[self.apart[0]] = grads[_CoreLSTM.param_name(self.apart[1], k, d)]
                    out.append(rec[self.from_torch_rows])
                else:
                    out.append(ours)
        return out


def _has_torch_layout(cell) -> bool:
    """Whether ``cell`` has exactly PyTorch's gates (i, f, g, o independent), so that its W, R and b map to
    ``weight_ih``, ``weight_hh``, ``bias_ih`` + ``bias_hh``."""
    try:
        _torch_cell(cell)
    except ValueError:
        return False
    return True


_configs: dict[str, _Config] = {}
_configs_lock = threading.Lock()


def _register_config(input_size, hidden_size, cell, num_layers, bidirectional, bias) -> str:
    key = json.dumps([input_size, hidden_size, num_layers, bidirectional, bias, repr(cell)])
    with _configs_lock:
        if key not in _configs:
            _configs[key] = _Config(input_size, hidden_size, cell, num_layers, bidirectional, bias)
    return key


def _config(key: str) -> _Config:
    try:
        return _configs[key]
    except KeyError:
        raise ValueError("lstmcore::lstm_forward/lstm_backward got a configuration no lstmcore.torch.LSTM was built "
                         "with in this process: build the module first") from None


# -- tapes: owned by the handle tensor the forward operator returns -------------------------------------------------
class _TapeArray(np.ndarray):
    """A 0-d int64 array (the handle's value) that carries one call's tape; ``torch.from_numpy`` keeps it alive."""


_tapes: "weakref.WeakValueDictionary[int, _TapeArray]" = weakref.WeakValueDictionary()
_handles = itertools.count(1)


def _tape_handle(tape) -> Tensor:
    key = next(_handles)
    holder = np.array(key, dtype=np.int64).view(_TapeArray)
    holder.tape = tape
    _tapes[key] = holder
    return torch.from_numpy(holder)


# -- the operators -----------------------------------------------------------------------------------------------------
def _array(t: Tensor, name: str) -> np.ndarray:
    """A CPU float tensor as a NumPy view (a contiguous copy only when the tensor is not contiguous)."""
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device}; lstmcore.torch runs on CPU tensors only (move it with .cpu())")
    if t.dtype not in _NUMPY_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; lstmcore.torch runs torch.float32 or torch.float64")
    return np.ascontiguousarray(t.detach().numpy())


def _lengths(lengths: Optional[Tensor]):
    return None if lengths is None else np.ascontiguousarray(lengths.detach().numpy(), dtype=np.int32)


def _run_forward(x, state, lengths, weights, config):
    """The kernels' forward: ``(output, final states, tape)`` as tensors sharing the kernels' arrays."""
    cfg = _config(config)
    xs = _array(x, "x")
    params = cfg.kernel_params([_array(w, "parameter") for w in weights], xs.dtype)
    core = cfg.core(xs.dtype)
    init = (tuple(_array(s, "state") for s in state) if state else  # zeros when the module was given no hx
            tuple(np.zeros(shape, xs.dtype) for shape, _ in core._state_shapes(xs.shape[1])))
    output, final, tape = core.run_forward(params, xs, init, _lengths(lengths))
    return torch.from_numpy(output), [torch.from_numpy(f) for f in final], tape


def _run_backward(tape, d_output, d_final, x, config, need_input_grad):
    """The kernels' BPTT on ``tape``: ``(d_x or None, d_initial states, d_weights in the module's order)``."""
    cfg = _config(config)
    xs = _array(x, "x")
    d_x, grads, d_init = cfg.core(xs.dtype).run_backward(tape, _array(d_output, "d_output"),
                                                         [_array(g, "d_state") for g in d_final], need_input_grad)
    return (torch.from_numpy(d_x) if need_input_grad else None, [torch.from_numpy(g) for g in d_init],
            [torch.from_numpy(g) for g in cfg.module_grads(grads)])


_DOUBLE_BACKWARD = ("lstmcore.torch computes first derivatives only: double backward (create_graph=True, "
                    "gradients of gradients, torch.autograd.gradgradcheck) is not supported")


# torch.compile: two custom operators, the second the first's autograd formula
@torch.library.custom_op("lstmcore::lstm_forward", mutates_args=())
def _forward_op(x: Tensor, state: list[Tensor], lengths: Optional[Tensor], weights: list[Tensor],
                config: str) -> list[Tensor]:
    """[output (T, B, D*H), *final states (L*D, B, H), tape handle] of the stack over time-major ``x``."""
    output, final, tape = _run_forward(x, state, lengths, weights, config)
    return [output, *final, _tape_handle(tape)]


@_forward_op.register_fake
def _forward_fake(x, state, lengths, weights, config):
    cfg = _config(config)
    D = 2 if cfg.sizes["bidirectional"] else 1
    T, B, _ = x.shape
    return [x.new_empty((T, B, D * cfg.core(np.float32).output_width)), *(s.new_empty(s.shape) for s in state),
            x.new_empty((), dtype=torch.int64)]


@torch.library.custom_op("lstmcore::lstm_backward", mutates_args=())
def _backward_op(d_output: Tensor, d_final: list[Tensor], x: Tensor, state: list[Tensor], lengths: Optional[Tensor],
                 weights: list[Tensor], handle: Tensor, config: str, need_input_grad: bool) -> list[Tensor]:
    """[d_x (empty unless ``need_input_grad``), *d_initial states, *d_weights] by BPTT on the forward's tape."""
    holder = _tapes.get(int(handle))
    if holder is not None:
        tape = holder.tape
    else:  # the tape is gone (a copied handle): recompute the forward for its tape
        tape = _run_forward(x, state, lengths, weights, config)[2]
    d_x, d_init, d_weights = _run_backward(tape, d_output, d_final, x, config, need_input_grad)
    return [x.new_empty(0) if d_x is None else d_x, *d_init, *d_weights]


@_backward_op.register_fake
def _backward_fake(d_output, d_final, x, state, lengths, weights, handle, config, need_input_grad):
    d_x = x.new_empty(x.shape) if need_input_grad else x.new_empty(0)  # contiguous, as the kernels return them
    return [d_x, *(s.new_empty(s.shape) for s in state), *(w.new_empty(w.shape) for w in weights)]


def _setup_context(ctx, inputs, output):
    x, state, lengths, weights, config = inputs
    ctx.config, ctx.n_states, ctx.output_shape = config, len(state), output[0].shape
    ctx.save_for_backward(x, lengths, output[-1], *state, *weights)


def _materialized(grads, output_shape, final_shapes, x):
    """Zeros for the outputs that got no gradient."""
    d_output = x.new_zeros(output_shape) if grads[0] is None else grads[0]
    return d_output, [x.new_zeros(shape) if g is None else g for g, shape in zip(grads[1:], final_shapes)]


def _backward(ctx, grads):
    x, lengths, handle, *rest = ctx.saved_tensors
    state, weights = rest[:ctx.n_states], rest[ctx.n_states:]
    d_output, d_final = _materialized(grads, ctx.output_shape, [s.shape for s in state], x)
    need_input_grad = ctx.needs_input_grad[0]
    out = _backward_op(d_output, d_final, x, list(state), lengths, list(weights), handle, ctx.config,
                       need_input_grad)
    return (out[0] if need_input_grad else None, out[1:1 + ctx.n_states], None, out[1 + ctx.n_states:], None)


_forward_op.register_autograd(_backward, setup_context=_setup_context)


def _no_double_backward(ctx, grads):
    raise RuntimeError(_DOUBLE_BACKWARD)


_backward_op.register_autograd(_no_double_backward)


class _EagerLSTM(torch.autograd.Function):
    """Eager mode: the same kernels and tapes as the operators, without the custom operators' dispatch (their
    argument flattening costs more than the kernels at small sizes); the tape is kept on ``ctx``. ``tensors`` are the
    initial states (none: zeros) and then the weights."""

    @staticmethod
    def forward(ctx, x, lengths, config, n_states, *tensors):
        state, weights = tensors[:n_states], tensors[n_states:]
        output, final, tape = _run_forward(x, state, lengths, weights, config)
        ctx.tape, ctx.config, ctx.n_states, ctx.output_shape = tape, config, n_states, output.shape
        ctx.final_shapes = [f.shape for f in final]
        ctx.save_for_backward(x, *tensors)  # x read; all saved so that autograd refuses in-place changes to them
        return (output, *final)

    @staticmethod
    def backward(ctx, *grads):
        x = ctx.saved_tensors[0]
        d_output, d_final = _materialized(grads, ctx.output_shape, ctx.final_shapes, x)
        create_graph = torch.is_grad_enabled()
        with torch.no_grad():
            d_x, d_init, d_weights = _run_backward(ctx.tape, d_output, d_final, x, ctx.config, ctx.needs_input_grad[0])
        results = (d_x, None, None, None, *(d_init if ctx.n_states else ()), *d_weights)
        if not create_graph:
            return results
        # create_graph=True: the gradients get a node that refuses to be differentiated (as @once_differentiable)
        present = [r.detach().requires_grad_() for r in results if r is not None]
        refused = iter(torch._C._functions.DelayedError(_DOUBLE_BACKWARD.encode(), len(present))(*present))
        return tuple(None if r is None else next(refused) for r in results)


# -- the module ------------------------------------------------------------------------------------------------------
class LSTM(nn.Module):
    """``torch.nn.LSTM``'s interface for any lstmcore variant: ``output, (h_n, c_n) = lstm(x, hx=None)``.

    ``x`` is ``(T, B, input_size)`` (``(B, T, input_size)`` with ``batch_first``) or a ``PackedSequence`` (then
    ``output`` is one too); ``hx`` is ``(h_0, c_0)``, each ``(num_layers*D, B, hidden_size)`` (``(h_0,)`` or a tensor
    for single-state cells, which return ``output, (h_n,)``). ``lengths`` (``(B,)`` integers, an lstmcore extension)
    runs a padded batch as lstmcore does: zero outputs past each length, final states at the last real step.

    Parameters: variants with PyTorch's gates (``vanilla``, ``peephole``, ``niaf``, ``noaf``, ``fgr``, and specs
    like them) have ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` (``_reverse``) in
    PyTorch's shapes and gate order (i, f, g, o), summed into lstmcore's one bias at call time, plus their own
    (``p_l{k}`` peepholes, ``Rg_l{k}``); ``gru`` has ``nn.GRU``'s (gate order r, z, n; the n block of ``bias_hh`` is
    its ``b_rn``), so an ``nn.GRU``'s ``state_dict`` loads into it; the others use lstmcore's names (``W_l{k}``,
    ``R_l{k}``, ``b_l{k}``, ...).
    ``variant_options`` configure the variant (``gate_activation``, ``clip``, ...). Initialised as lstmcore
    initialises the variant, from torch's random generator (``torch.manual_seed``).
    """

    def __init__(self, input_size, hidden_size, variant="vanilla", num_layers=1, bias=True, batch_first=False,
                 bidirectional=False, proj_size=0, **variant_options):
        super().__init__()
        base = variant if isinstance(variant, Variant) else get_variant(variant)
        cell = base.with_options(**variant_options)
        if proj_size != 0:  # nn.LSTM's 0 is no projection; lstmcore.LSTM checks the rest
            cell = cell.with_projection(check_proj_size(proj_size, int(hidden_size)))
        self.proj_size = proj_size
        self._config_key = _register_config(int(input_size), int(hidden_size), cell, int(num_layers),
                                            bool(bidirectional), bool(bias))
        self._cfg = _configs[self._config_key]
        core = self._cfg.core(np.float32)
        self.input_size, self.hidden_size = core.input_size, core.hidden_size
        self.num_layers, self.bidirectional = core.num_layers, core.bidirectional
        self.batch_first, self.bias = bool(batch_first), bool(bias)
        self.variant_name, self.state_names = base.name, tuple(cell.state_names)
        self._state_widths = [(shape[2], text) for shape, text in core._state_shapes(1)]  # h: proj_size wide
        for name in self._cfg.parameter_names:
            self.register_parameter(name, None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh parameters from the variant's initialisation, seeded from torch's generator."""
        seed = int(torch.randint(0, 2**31 - 1, ()))
        init = _CoreLSTM(variant=self._cfg.cell, dtype=np.float32, seed=seed, **self._cfg.sizes).params
        dtype = next((p.dtype for p in self.parameters()), torch.float32)
        for name, value in self._cfg.to_module(init).items():
            if name in self._cfg.parameter_names:
                setattr(self, name, nn.Parameter(torch.from_numpy(np.ascontiguousarray(value)).to(dtype)))

    def flatten_parameters(self) -> None:
        """Nothing to do (``nn.LSTM``'s cuDNN weight flattening has no CPU counterpart); here for drop-in use."""

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, variant={self.variant_name!r}, num_layers={self.num_layers}"
                + (f", proj_size={self.proj_size}" if self.proj_size else "")
                + f", bias={self.bias}, batch_first={self.batch_first}, bidirectional={self.bidirectional}")

    def forward(self, x, hx=None, lengths=None):
        """``output, (h_n, c_n)`` (or ``(h_n,)``); see the class docstring."""
        packed = isinstance(x, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("lengths must be None for a PackedSequence input (it carries its lengths)")
            sorted_indices, unsorted_indices = x.sorted_indices, x.unsorted_indices
            x, lengths = pad_packed_sequence(x)  # (T, B, I), lengths in the original batch order
            batch_first = False
        else:
            batch_first = self.batch_first
            if not isinstance(x, Tensor):
                raise TypeError(f"x must be a torch.Tensor or a PackedSequence, got {type(x).__name__}")
        weights = [getattr(self, name) for name in self._cfg.parameter_names]
        self._check_input(x, weights[0])
        if batch_first:
            x = x.transpose(0, 1)
        T, B, _ = x.shape
        state = self._initial_state(hx, x, B)
        lengths = self._check_lengths(lengths, T, B)
        if torch.compiler.is_compiling():
            state = state or [x.new_zeros(shape) for shape, _ in self._state_shapes(B)]
            output, *final, _ = _forward_op(x, state, lengths, weights, self._config_key)
        else:
            output, *final = _EagerLSTM.apply(x, lengths, self._config_key, len(state), *state, *weights)
        if packed:
            order = sorted_indices if sorted_indices is not None else torch.arange(B)
            data, batch_sizes, _, _ = pack_padded_sequence(output.index_select(1, order), lengths[order])
            output = PackedSequence(data, batch_sizes, sorted_indices, unsorted_indices)
        elif batch_first:
            output = output.transpose(0, 1)
        return output, tuple(final)

    # -- checks (the operators check device and dtype again) -----------------------------------------------------------
    def _check_input(self, x: Tensor, weight: Tensor) -> None:
        order = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
        if x.device.type != "cpu":
            raise ValueError(f"x is on {x.device}; lstmcore.torch runs on CPU tensors only (move it with .cpu())")
        if x.dtype not in _NUMPY_DTYPES:
            raise TypeError(f"x has dtype {x.dtype}; lstmcore.torch runs torch.float32 or torch.float64")
        if x.dtype != weight.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the module's parameters are {weight.dtype} "
                            f"(convert the module with .float() / .double(), or the input)")
        if weight.device.type != "cpu":
            raise ValueError(f"the module's parameters are on {weight.device}; lstmcore.torch runs on CPU only")
        if x.dim() != 3:
            raise ValueError(f"x must be 3-D {order}, got shape {tuple(x.shape)}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"x has {x.shape[2]} features in its last axis, expected input_size = {self.input_size}")

    def _state_shapes(self, B: int) -> list[tuple[tuple[int, int, int], str]]:
        LD = self.num_layers * (2 if self.bidirectional else 1)
        return [((LD, B, width), text) for width, text in self._state_widths]

    def _initial_state(self, hx, x: Tensor, B: int) -> list[Tensor]:
        """``hx`` checked, as a list of tensors; empty for ``hx=None`` (the kernels start from zeros)."""
        if hx is None:
            return []
        if isinstance(hx, Tensor) and len(self.state_names) == 1:
            hx = (hx,)
        names = ", ".join(n + "_0" for n in self.state_names)
        if not isinstance(hx, (tuple, list)) or len(hx) != len(self.state_names):
            raise TypeError(f"hx must be a tuple ({names}) for variant {self.variant_name!r}, "
                            f"got {type(hx).__name__}" + (f" of length {len(hx)}" if isinstance(hx, (tuple, list))
                                                          else ""))
        for s, n, (shape, text) in zip(hx, self.state_names, self._state_shapes(B)):
            if not isinstance(s, Tensor):
                raise TypeError(f"hx {n}_0 must be a torch.Tensor, got {type(s).__name__}")
            if tuple(s.shape) != shape:
                raise ValueError(f"hx {n}_0 has shape {tuple(s.shape)}, expected {text} = {shape}")
            if s.dtype != x.dtype or s.device.type != "cpu":
                raise TypeError(f"hx {n}_0 is a {s.dtype} tensor on {s.device}; expected {x.dtype} on cpu like x")
        return list(hx)

    @staticmethod
    def _check_lengths(lengths, T: int, B: int) -> Optional[Tensor]:
        if lengths is None:
            return None
        if isinstance(lengths, Tensor):
            if lengths.requires_grad:
                raise ValueError("lengths must not require grad: they are integer sequence lengths, not a "
                                 "differentiable input")
            if lengths.device.type != "cpu":
                raise ValueError(f"lengths is on {lengths.device}; lstmcore.torch needs CPU lengths")
        else:
            lengths = torch.as_tensor(np.asarray(lengths))
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
        if tuple(lengths.shape) != (B,):
            raise ValueError(f"lengths has shape {tuple(lengths.shape)}, expected (B,) = ({B},)")
        if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
            raise ValueError(f"lengths must lie in [0, T] = [0, {T}], got min {int(lengths.min())} and max "
                             f"{int(lengths.max())}")
        return lengths
