"""Step-by-step traces of a layer: ``LSTM.trace(x, state=None, lengths=None)`` returns a ``Trace``.

A trace holds, for every layer and direction, each step's quantities as named ``(T, B, H)`` arrays (``(B, T, H)`` with
``batch_first``). What a variant traces is what its ``trace_quantities()`` declares:

- every ``GatedCell`` spec (the built-ins) traces its pre-activations and gates, the block input, the cell, ``h(c)``,
  the states and the output, from a NumPy step of the spec's equations (``gated_cell_trace``); the compiled forward is
  not touched, so an ordinary forward pays nothing for tracing;
- any other variant traces at least its states and its output: ``Variant.trace`` runs the variant's own ``forward``
  one time step at a time, carrying the state (``trace_by_steps``). A plugin that can say more overrides
  ``trace_quantities`` and ``trace``.

Padded steps (``t >= lengths[b]``) follow the layer's contract: the output is zero and the states keep their carried
value (so the forward direction's state at the last step and the reverse direction's at step 0 are ``h_n``/``c_n``);
the quantities computed inside a step (gates, pre-activations, block input) are NaN there, since nothing was computed.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

DIRECTIONS = ("forward", "reverse")


def state_quantities(variant) -> dict[str, str]:
    """What every variant traces: its states after each step and its output."""
    out = {name: f"state {name} after the step (carried unchanged over padded steps)" for name in variant.state_names}
    out["output"] = "the layer's output y_t (zero at padded steps)"
    return out


def _active_steps(lengths, T: int, B: int) -> np.ndarray:
    """(T, B) boolean: is step t a real step of sequence b?"""
    if lengths is None:
        return np.ones((T, B), dtype=bool)
    return np.arange(T)[:, None] < np.asarray(lengths)[None, :]


def _time_order(T: int, reverse: bool):
    return range(T - 1, -1, -1) if reverse else range(T)


def trace_by_steps(variant, params, x, state, lengths, reverse):
    """Trace any variant through its public ``forward``: one step at a time, the state carried between calls.

    Step t is a one-step sequence ``x[t:t+1]`` with lengths 1 (real) or 0 (padded), so the variant's own lengths
    handling keeps a padded sequence's state. This assumes the state tuple is all the variant carries from one step to
    the next; a variant that carries more (hidden in its forward) must override ``Variant.trace``.
    Returns ``(final_state, {name: (T, B, H) array})`` with the names of ``state_quantities``.
    """
    T, B, _ = x.shape
    H = state[0].shape[1]
    active = _active_steps(lengths, T, B)
    arrays = {name: np.zeros((T, B, H), dtype=x.dtype) for name in state_quantities(variant)}
    current = tuple(np.array(s, copy=True) for s in state)
    for t in _time_order(T, reverse):
        if active[t].any():
            step_lengths = None if active[t].all() else active[t].astype(np.int32)
            step_out = np.zeros((1, B, H), dtype=x.dtype)
            current, _ = variant.forward(params, np.ascontiguousarray(x[t:t + 1]), current, step_lengths, False,
                                         step_out)
            current = tuple(np.array(s, dtype=x.dtype, copy=True) for s in current)
            arrays["output"][t] = step_out[0]
        for name, value in zip(variant.state_names, current):
            arrays[name][t] = value
    return current, arrays


def gated_cell_quantities(cell) -> dict[str, str]:
    """The names ``gated_cell_trace`` returns for ``cell`` (a ``GatedCell``), each with what it is."""
    clip = f", clamped to [-{cell.clip:g}, {cell.clip:g}]" if cell.clip else ""
    fgr = " + Rg [i, f, o]_{t-1}" if cell.gate_recurrence else ""
    gates = {"i": "input gate", "f": "forget gate", "o": "output gate"}
    peep = set(cell.peephole_blocks)
    out = {"z_bar": f"block input pre-activation W_z x + R_z y_(t-1) + b_z{clip}",
           "z": f"block input z = g(z_bar), g = {cell.input_activation}"}
    for g in ("i", "f", "o"):
        if g in cell.gate_blocks:
            seen = "c_t" if g == "o" else "c_(t-1)"
            out[f"{g}_bar"] = (f"{gates[g]} pre-activation W_{g} x + R_{g} y_(t-1)"
                               f"{f' + p_{g} * {seen}' if g in peep else ''}{fgr} + b_{g}{clip}")
            out[g] = f"{gates[g]} {g} = sigma({g}_bar), sigma = {cell.gate_activation}"
        elif g == "f" and cell.coupled:
            out["f"] = "forget gate f = 1 - i (coupled)"
        if g == "f":
            out["c"] = "cell state c_t = z * i + c_(t-1) * f"
    out["hc"] = f"h(c_t), the cell through the output activation h = {cell.output_activation}"
    out["h"] = "state h: the block output y_t (carried unchanged over padded steps)"
    out["output"] = "the layer's output y_t (zero at padded steps)"
    return out


def _activate(activation, value: np.ndarray) -> np.ndarray:
    from lstmcore._kernels._activations import apply_activation  # the kernel's own activations, callable from Python

    return apply_activation(activation.name, value, activation.alpha, activation.beta)


def gated_cell_trace(cell, params, x, state, lengths, reverse):
    """One direction of a ``GatedCell`` in NumPy, step by step, from the spec's equations (``GatedCell``'s docstring).

    Returns ``(final_state, {name: (T, B, H) array})`` with the names of ``gated_cell_quantities(cell)``.
    """
    T, B, _ = x.shape
    H = params["R"].shape[1]
    names = gated_cell_quantities(cell)
    arrays = {name: np.full((T, B, H), np.nan, dtype=x.dtype) for name in names}
    arrays["output"][:] = 0
    blocks = {g: k for k, g in enumerate(cell.gate_blocks)}
    peep = {g: params["p"][k * H:(k + 1) * H] for k, g in enumerate(cell.peephole_blocks)}
    projected = x @ params["W"].T + params["b"]                   # (T, B, G*H): every step's W x_t + b at once
    active = _active_steps(lengths, T, B)
    h, c = (np.array(s, dtype=x.dtype, copy=True) for s in state)
    previous_gates = np.zeros((B, 3 * H), dtype=x.dtype)           # FGR: [i, f, o] of the previous step

    def clamp(v):
        return np.clip(v, -cell.clip, cell.clip) if cell.clip else v

    for t in _time_order(T, reverse):
        real = active[t][:, None]
        pre = projected[t] + h @ params["R"].T

        def block(g):
            k = blocks[g]
            return pre[:, k * H:(k + 1) * H]

        if cell.gate_recurrence:
            from_gates = previous_gates @ params["Rg"].T
            for k, g in enumerate("ifo"):
                block(g)[...] += from_gates[:, k * H:(k + 1) * H]
        step = {"z_bar": clamp(block("z"))}
        step["z"] = _activate(cell.input_activation, step["z_bar"])
        ones = np.ones_like(c)
        for g in ("i", "f"):
            if g in blocks:
                step[f"{g}_bar"] = clamp(block(g) + peep[g] * c if g in peep else block(g))
                step[g] = _activate(cell.gate_activation, step[f"{g}_bar"])
        i = step.get("i", ones)
        if cell.coupled:
            step["f"] = 1 - i
        f = step.get("f", ones)
        step["c"] = step["z"] * i + c * f
        if "o" in blocks:
            step["o_bar"] = clamp(block("o") + peep["o"] * step["c"] if "o" in peep else block("o"))
            step["o"] = _activate(cell.gate_activation, step["o_bar"])
        step["hc"] = _activate(cell.output_activation, step["c"])
        step["h"] = step["hc"] * step.get("o", ones)
        if cell.gate_recurrence:
            previous_gates = np.where(real, np.concatenate([step["i"], step["f"], step["o"]], axis=1),
                                      previous_gates)
        h, c = np.where(real, step["h"], h), np.where(real, step["c"], c)
        for name, value in step.items():
            arrays[name][t] = np.where(real, value, arrays[name][t])
        arrays["h"][t], arrays["c"][t] = h, c
        arrays["output"][t] = np.where(real, step["h"], 0)
    return (h, c), arrays


class CellTrace(Mapping):
    """The trace of one layer and direction: ``{name: array}`` with ``(T, B, H)`` arrays (``(B, T, H)`` with
    ``batch_first``), indexed by time step t (the reverse direction too: index t is the step that read ``x_t``).

    ``descriptions[name]`` says what each array is; ``layer``, ``direction`` ("forward" or "reverse"), ``variant``
    (the cell object), ``lengths`` and ``batch_first`` say where it comes from.
    """

    def __init__(self, arrays, descriptions, *, layer, direction, variant, lengths, batch_first):
        self._arrays = arrays
        self.descriptions = descriptions
        self.layer, self.direction, self.variant = layer, direction, variant
        self.lengths, self.batch_first = lengths, batch_first

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._arrays[name]
        except KeyError:
            raise KeyError(f"variant {self.variant.name!r} traces no {name!r}; it traces "
                           f"{', '.join(self._arrays)}") from None

    def __iter__(self):
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def sequence(self, b: int) -> dict[str, np.ndarray]:
        """``{name: (T, H) array}`` of sequence ``b``."""
        return {name: (a[b] if self.batch_first else a[:, b]) for name, a in self._arrays.items()}

    def __repr__(self) -> str:
        shape = next(iter(self._arrays.values())).shape
        return (f"CellTrace(layer={self.layer}, direction={self.direction!r}, variant={self.variant.name!r}, "
                f"shape={shape}, names={list(self._arrays)})")


class Trace:
    """Every step of one ``LSTM.trace``: ``trace[layer, direction]`` is a ``CellTrace`` (``trace[layer]`` for the
    forward direction); ``output`` and ``final_state`` are what ``forward`` returns for the same call; ``cells``
    lists every ``CellTrace`` layer by layer, forward direction first."""

    def __init__(self, cells: list[list[CellTrace]], output, final_state, *, lengths, batch_first, variant_name):
        self._cells = cells
        self.output, self.final_state = output, final_state
        self.lengths, self.batch_first, self.variant_name = lengths, batch_first, variant_name

    @property
    def num_layers(self) -> int:
        return len(self._cells)

    @property
    def directions(self) -> tuple[str, ...]:
        return DIRECTIONS[:len(self._cells[0])]

    @property
    def cells(self) -> list[CellTrace]:
        return [cell for layer in self._cells for cell in layer]

    def __getitem__(self, key) -> CellTrace:
        layer, direction = key if isinstance(key, tuple) else (key, 0)
        if isinstance(direction, str):
            if direction not in self.directions:
                raise KeyError(f"direction must be one of {self.directions}, got {direction!r}")
            direction = self.directions.index(direction)
        if not (isinstance(layer, (int, np.integer)) and -self.num_layers <= layer < self.num_layers):
            raise IndexError(f"layer must be an integer in [0, {self.num_layers}), got {layer!r}")
        if not (isinstance(direction, (int, np.integer)) and 0 <= direction < len(self.directions)):
            raise IndexError(f"direction must be 0..{len(self.directions) - 1} or one of {self.directions}, "
                             f"got {direction!r}")
        return self._cells[layer][direction]

    def __repr__(self) -> str:
        return (f"Trace(variant={self.variant_name!r}, layers={self.num_layers}, directions={self.directions}, "
                f"output shape={self.output.shape})")


def trace_layer(layer, x, state=None, lengths=None) -> Trace:
    """``LSTM.trace``: run ``layer`` over ``x`` with every direction's ``Variant.trace``; see ``LSTM.trace``."""
    x = layer._input(x)
    T, B, _ = x.shape
    lengths = layer._lengths(lengths, T, B)

    def run(k, d, cell, inp, start, out):
        end, arrays = cell.trace(layer._direction_params(k, d), inp, start, lengths, d == 1)
        descriptions = cell.trace_quantities()
        _check_trace(cell, arrays, descriptions, (T, B, layer.hidden_size))
        out[...] = arrays["output"]
        if layer.batch_first:
            arrays = {name: a.transpose(1, 0, 2) for name, a in arrays.items()}
        return end, CellTrace(arrays, descriptions, layer=k, direction=DIRECTIONS[d], variant=cell, lengths=lengths,
                              batch_first=layer.batch_first)

    top, final, cells = layer._through_stack(x, layer._state(state, B), run)
    output = top.transpose(1, 0, 2) if layer.batch_first else top
    return Trace(cells, output, final, lengths=lengths, batch_first=layer.batch_first,
                 variant_name=layer.variant_name)


def _check_trace(cell, arrays, descriptions, shape) -> None:
    if not isinstance(arrays, dict) or set(arrays) != set(descriptions):
        got = sorted(arrays) if isinstance(arrays, dict) else type(arrays).__name__
        raise ValueError(f"variant {cell.name!r}: trace() returned {got}, but trace_quantities() declares "
                         f"{sorted(descriptions)}")
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray) or value.shape != shape:
            raise ValueError(f"variant {cell.name!r}: trace() returned {name!r} of shape "
                             f"{getattr(value, 'shape', type(value).__name__)}, expected (T, B, H) = {shape}")
