"""Plots of traces (matplotlib, from the ``ablation`` extra): ``lstmcore.plot.trace(tr, sequence=0)``.

Imported on first use of ``lstmcore.plot``; ``import lstmcore`` never loads matplotlib.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

try:
    from matplotlib.figure import Figure
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("lstmcore.plot needs matplotlib: pip install 'lstmcore[ablation]' (or matplotlib)") from exc

#: Heat maps for more cells than this; one line per cell otherwise.
MAX_LINES = 4


def _shown(cell_trace, quantities):
    if quantities is not None:
        missing = [q for q in quantities if q not in cell_trace]
        if missing:
            raise ValueError(f"the trace has no {missing}; it has {list(cell_trace)}")
        return list(quantities)
    names = [n for n in cell_trace if not n.endswith("_bar") and n != "hc"]
    if "h" in names and "output" in names:
        names.remove("output")      # the same values on real steps; h also shows the carried state
    order = ["i", "f", "o", "z", "c", "h"]
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), names.index(n)))


def _followed_cell(values: dict[str, np.ndarray], cell) -> int:
    H = next(iter(values.values())).shape[1]
    if cell is not None:
        if not (isinstance(cell, (int, np.integer)) and 0 <= cell < H):
            raise ValueError(f"cell must be an integer in [0, {H}), got {cell!r}")
        return int(cell)
    seen = values.get("h", values.get("output", next(iter(values.values()))))   # what the next layer sees
    return int(np.nanargmax(np.nanstd(seen, axis=0))) if np.isfinite(seen).any() else 0


def trace(tr, sequence: int = 0, layer: int = 0, direction=0, cell: int | None = None, quantities=None,
          path=None) -> Figure:
    """Draw one sequence of a ``Trace`` over time: one panel per quantity (gates, block input, cell, output; or what
    the variant traces), as heat maps (cells × time steps) or, for at most ``MAX_LINES`` cells, one line per cell;
    then a last panel that follows one cell (``cell``, by default the one whose cell state varies most) through
    every quantity. Steps past the sequence's length are left out. Saved to ``path`` when given; returns the Figure.
    """
    cell_trace = tr[layer, direction]
    B = next(iter(cell_trace.values())).shape[0 if cell_trace.batch_first else 1]
    if not (isinstance(sequence, (int, np.integer)) and 0 <= sequence < B):
        raise ValueError(f"sequence must be an integer in [0, {B}), got {sequence!r}")
    values = cell_trace.sequence(sequence)
    T_all = next(iter(values.values())).shape[0]
    T = T_all if cell_trace.lengths is None else int(cell_trace.lengths[sequence])
    if T == 0:
        raise ValueError(f"sequence {sequence} has length 0: there is nothing to plot")
    names = _shown(cell_trace, quantities)
    values = {n: values[n][:T] for n in names}
    followed = _followed_cell(values, cell)
    H = values[names[0]].shape[1]
    heat = H > MAX_LINES
    steps = np.arange(T)
    rows = len(names) + 1
    figure = Figure(figsize=(10, 1.55 * len(names) + 2.6), layout="constrained")
    axes = figure.subplots(rows, 1, sharex=True, height_ratios=[1] * len(names) + [1.6])
    for ax, name in zip(axes, names):
        data = values[name]
        description = cell_trace.descriptions.get(name, "")
        ax.set_title(f"{name}: {description}" if description else name, fontsize=9.5, loc="left")
        gate_like = np.nanmin(data) >= 0 and np.nanmax(data) <= 1 if np.isfinite(data).any() else False
        if heat:
            if gate_like:
                image = ax.imshow(data.T, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1,
                                  interpolation="nearest", extent=(-0.5, T - 0.5, -0.5, H - 0.5))
            else:
                bound = float(np.nanmax(np.abs(data))) or 1.0
                image = ax.imshow(data.T, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-bound, vmax=bound,
                                  interpolation="nearest", extent=(-0.5, T - 0.5, -0.5, H - 0.5))
            figure.colorbar(image, ax=ax, pad=0.01, aspect=8)
            ax.set_ylabel("cell", fontsize=9)
            ax.axhline(followed, color="white" if gate_like else "black", linewidth=0.6, linestyle=":")
            ticks = sorted({0, H - 1, followed})
            ax.set_yticks(ticks, [str(k) for k in ticks])
            for tick, label in zip(ticks, ax.get_yticklabels()):
                if tick == followed:       # the cell the last panel follows: its row is dotted
                    label.set_color("#b3261e")
                    label.set_fontweight("bold")
        else:
            for k in range(H):
                ax.plot(steps, data[:, k], marker="o", markersize=3, linewidth=1.3 if k == followed else 0.9,
                        label=f"cell {k}")
            if gate_like:
                ax.set_ylim(-0.05, 1.05)
            if H > 1:
                ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.0, 1.0))
            ax.grid(alpha=0.3)
    ax = axes[-1]
    unbounded = [n for n in names if np.nanmax(np.abs(values[n][:, followed]), initial=0) > 1]
    wide = ax.twinx() if unbounded and len(unbounded) < len(names) else None   # e.g. a cell state far beyond 1
    lines = []
    for k, name in enumerate(names):
        right = wide is not None and name in unbounded
        lines += (wide if right else ax).plot(steps, values[name][:, followed], marker="o", markersize=3,
                                              color=f"C{k}", linestyle="--" if right else "-",
                                              label=name + (" (right axis)" if right else ""))
    ax.set_title(f"following cell {followed} through every step", fontsize=9.5, loc="left")
    ax.legend(handles=lines, fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=len(lines),
              frameon=False)
    ax.grid(alpha=0.3)
    ax.set_xlabel("time step t" + (" (the reverse direction reads t from the end)" if direction in (1, "reverse")
                                   else ""))
    if T <= 30:
        ax.set_xticks(steps)
    hidden = f"; steps {T}..{T_all - 1} are padding, not shown" if T < T_all else ""
    figure.suptitle(f"{tr.variant_name}: layer {layer}, {cell_trace.direction} direction, sequence {sequence} "
                    f"({T} steps, {H} cells{hidden})", fontsize=11)
    if path is not None:
        figure.savefig(Path(path), dpi=110)
    return figure
