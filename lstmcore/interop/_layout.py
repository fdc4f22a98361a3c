"""The one place where a foreign framework's LSTM or GRU weight order (its ``Layout``) meets our parameter blocks.

A framework is described by a ``Layout`` (its gate order, its peephole order, whether it keeps two biases); the two
functions ``import_tensors`` and ``export_tensors`` are the only code that permutes gate blocks or sums and splits
biases, and both derive their permutation from the same ``_block_slices``. ``_torch.py`` and ``_onnx.py`` only move
tensors in and out of these functions.

Our parameter blocks (``GatedCell.gate_blocks``, ``peephole_blocks``): ``W`` (G*H, I), ``R`` (G*H, H), ``b`` (G*H,)
with row blocks = the present gates among (i, f, o) in that order, then z (the block input); ``p`` (P*H,) = the present
peepholes in the order i, f, o. ``lstmcore.cells.GRU``: ``W`` (3H, I), ``R`` (3H, H), ``b`` (3H,) with blocks z, r, n,
and with ``linear_before_reset`` the recurrent bias of n apart, ``b_rn`` (H,): the one recurrent bias not summed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lstmcore.variant import Variant


@dataclass(frozen=True)
class Layout:
    """How a framework stores the weights of one direction of an LSTM (``cell="LSTM"``) or a GRU (``cell="GRU"``).

    ``gates``: its row-block order of the input and recurrent matrices and of each bias, in our letters (LSTM: i input
    gate, f forget gate, o output gate, z block input = ONNX's "c" = PyTorch's and Keras' "g"; GRU: z update gate, r
    reset gate, n candidate = ONNX's "h"); ``peepholes``: its order of the peephole vector (empty if it has none);
    ``two_biases``: whether it keeps an input bias and a recurrent bias (summed into ours, exported as (b, 0), except
    the blocks of a cell's ``recurrent_bias_blocks``, whose recurrent bias is a parameter of its own).
    """

    name: str
    gates: tuple[str, ...]
    peepholes: tuple[str, ...] = ()
    two_biases: bool = True
    cell: str = "LSTM"


#: PyTorch ``nn.LSTM``: weight_ih/weight_hh/bias_ih/bias_hh with blocks (i, f, g, o); no peepholes.
TORCH = Layout("PyTorch", gates=("i", "f", "z", "o"))
#: ONNX ``LSTM``: W/R with blocks (i, o, f, c), B = [Wb, Rb] with the same order, P with (i, o, f).
ONNX = Layout("ONNX", gates=("i", "o", "f", "z"), peepholes=("i", "o", "f"))
#: Keras ``LSTM`` (documentation only): kernel/recurrent_kernel columns (i, f, c, o), one bias.
KERAS = Layout("Keras", gates=("i", "f", "z", "o"), two_biases=False)
#: PyTorch ``nn.GRU``: weight_ih/weight_hh/bias_ih/bias_hh with blocks (r, z, n); ``linear_before_reset`` always.
TORCH_GRU = Layout("PyTorch GRU", gates=("r", "z", "n"), cell="GRU")
#: ONNX ``GRU``: W/R with blocks (z, r, h), B = [Wb, Rb] with the same order.
ONNX_GRU = Layout("ONNX GRU", gates=("z", "r", "n"), cell="GRU")


def layout_cell(cell) -> str | None:
    """The kind of cell whose weights a ``Layout`` can describe (``"LSTM"``, ``"GRU"``), or None."""
    return getattr(cell, "interop_cell", None)


def separate_recurrent_bias(cell, H: int) -> tuple[slice, str] | None:
    """Our rows (in ``b``'s order) of the blocks whose recurrent bias is a parameter of its own, and its name, or None
    (the GRU's ``b_rn`` with ``linear_before_reset``: it sits inside the reset gate's product, so it is not summed)."""
    blocks = getattr(cell, "recurrent_bias_blocks", ())
    if not blocks:
        return None
    (block,) = blocks
    k = cell.gate_blocks.index(block)
    return slice(k * H, (k + 1) * H), f"b_r{block}"


def _block_slices(foreign: tuple[str, ...], ours: tuple[str, ...], H: int) -> list[tuple[slice, slice]]:
    """(our rows, their rows) for every block both sides have: THE gate permutation, used in both directions."""
    return [(slice(k * H, (k + 1) * H), slice(foreign.index(g) * H, (foreign.index(g) + 1) * H))
            for k, g in enumerate(ours) if g in foreign]


def check_cell(cell: Variant, layout: Layout, *, allow_dropped=(), extra_peepholes=False) -> Variant:
    """Raise a clear error unless ``cell``'s gates and peepholes can be represented in ``layout``.

    Every gate of ours must exist in the foreign layout, and so must every peephole unless ``extra_peepholes`` (on
    import: ours start at zero, the same function); foreign gates we lack are allowed only if listed in
    ``allow_dropped`` (ONNX's forget gate of a coupled cell, which ONNX keeps but ignores).
    """
    kind = layout_cell(cell)
    if kind is None:
        raise ValueError(f"variant {getattr(cell, 'name', cell)!r} is not a gated cell of the compiled family or a "
                         f"GRU; its weights cannot be mapped to {layout.name}")
    if kind != layout.cell:
        raise ValueError(f"variant {cell.name!r} is a{'n' if kind == 'LSTM' else ''} {kind} cell; {layout.name}'s "
                         f"weights are those of a{'n' if layout.cell == 'LSTM' else ''} {layout.cell}")
    missing = [g for g in cell.gate_blocks if g not in layout.gates]
    if not extra_peepholes:
        missing += [f"peephole {g}" for g in cell.peephole_blocks if g not in layout.peepholes]
    absent = [g for g in layout.gates if g not in cell.gate_blocks and g not in allow_dropped]
    if missing or absent:
        what = [f"{layout.name} has no {m}" for m in missing] + [f"the variant has no {g} gate" for g in absent]
        raise ValueError(f"variant {cell.name!r} (blocks {cell.gate_blocks}, peepholes {cell.peephole_blocks}) "
                         f"cannot be mapped to {layout.name}'s LSTM (blocks {layout.gates}): {'; '.join(what)}")
    return cell


def import_tensors(layout: Layout, cell: Variant, H: int, W, R, b_in=None, b_rec=None, p=None, *, dtype):
    """Foreign tensors of one direction -> our ``params`` dict for ``cell`` (arrays of ``dtype``, contiguous).

    ``W`` (G'*H, I), ``R`` (G'*H, H), biases (G'*H,) or None (zero), ``p`` (P'*H,) or None (zero peepholes).
    Foreign blocks the cell does not have are dropped; our peepholes the foreign side lacks are zero.
    """
    W, R = np.asarray(W), np.asarray(R)
    G = len(cell.gate_blocks)
    params = {"W": np.zeros((G * H, W.shape[1]), dtype), "R": np.zeros((G * H, R.shape[1]), dtype),
              "b": np.zeros(G * H, dtype)}  # R reads h, or r (proj_size wide) when projected
    b_in, b_rec = (None if v is None else np.asarray(v, dtype=np.float64) for v in (b_in, b_rec))
    apart = separate_recurrent_bias(cell, H)
    if apart:
        params[apart[1]] = np.zeros(H, dtype)
    for ours, theirs in _block_slices(layout.gates, cell.gate_blocks, H):
        params["W"][ours] = W[theirs]
        params["R"][ours] = R[theirs]
        if b_in is not None:
            params["b"][ours] += b_in[theirs]
        if b_rec is not None and apart and ours == apart[0]:
            params[apart[1]][...] = b_rec[theirs]
        elif b_rec is not None:  # the other recurrent biases are only ever summed with the input's
            params["b"][ours] += b_rec[theirs]
    if cell.peephole_blocks:
        params["p"] = np.zeros(len(cell.peephole_blocks) * H, dtype)
        if p is not None:
            p = np.asarray(p)
            for ours, theirs in _block_slices(layout.peepholes, cell.peephole_blocks, H):
                params["p"][ours] = p[theirs]
    return params


def export_tensors(layout: Layout, cell: Variant, H: int, params, *, dtype=None) -> dict:
    """Our ``params`` of one direction -> the foreign tensors ``W, R, b_in, b_rec, p`` (``p`` None without peepholes
    in the layout). Foreign blocks we lack are zero; our bias goes into ``b_in`` and ``b_rec`` is zero, but for a
    separate recurrent bias (the GRU's ``b_rn``)."""
    W = np.asarray(params["W"])
    dtype = dtype or W.dtype
    G = len(layout.gates)
    out = {"W": np.zeros((G * H, W.shape[1]), dtype), "R": np.zeros((G * H, params["R"].shape[1]), dtype),
           "b_in": np.zeros(G * H, dtype), "b_rec": np.zeros(G * H, dtype) if layout.two_biases else None,
           "p": np.zeros(len(layout.peepholes) * H, dtype) if layout.peepholes else None}
    apart = separate_recurrent_bias(cell, H)
    for ours, theirs in _block_slices(layout.gates, cell.gate_blocks, H):
        out["W"][theirs] = W[ours]
        out["R"][theirs] = params["R"][ours]
        out["b_in"][theirs] = params["b"][ours]
        if apart and ours == apart[0]:
            out["b_rec"][theirs] = params[apart[1]]
    if layout.peepholes and cell.peephole_blocks:
        for ours, theirs in _block_slices(layout.peepholes, cell.peephole_blocks, H):
            out["p"][theirs] = params["p"][ours]
    return out
