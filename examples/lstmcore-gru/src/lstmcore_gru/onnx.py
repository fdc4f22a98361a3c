"""ONNX ``GRU`` (opset 7/14/22) tensors -> an ``lstmcore.LSTM`` layer of this plugin's GRU cell.

ONNX keeps ``W`` ``[num_directions, 3H, input_size]``, ``R`` ``[num_directions, 3H, H]`` and ``B`` ``[num_directions,
6H]`` = ``[Wb, Rb]``, all with the gate blocks (z, r, h): the GRU's own parameter blocks, so the mapping is one slice
per direction and no permutation.
"""
from __future__ import annotations

import numbers

import numpy as np

import lstmcore
from lstmcore import ReverseOnly
from lstmcore_gru.gru import GRU

__all__ = ["from_onnx_gru", "run_onnx_gru"]

DIRECTIONS = ("forward", "reverse", "bidirectional")


def from_onnx_gru(W, R, B=None, *, hidden_size, direction="forward", linear_before_reset=0) -> lstmcore.LSTM:
    """A one-layer ``lstmcore.LSTM`` computing what an ONNX ``GRU`` node with these inputs and attributes computes.

    Call it as ``output, (h_n,) = layer(X, (initial_h,), lengths=sequence_lens)`` with ONNX's ``layout=0`` shapes
    (X ``[seq, batch, input]``, initial_h ``[num_directions, batch, H]``); ``output.reshape(T, batch, D, H)``
    transposed to ``[T, D, batch, H]`` is ``Y`` and ``h_n`` is ``Y_h``. ``direction="reverse"`` gives a one-direction
    layer whose cell runs backwards in time. Activations other than the defaults (Sigmoid, Tanh) and ``clip`` are not
    supported. The layer's dtype is float64 when ``W`` is float64, float32 otherwise.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if linear_before_reset not in (0, 1, False, True):
        raise ValueError(f"linear_before_reset must be 0 or 1, got {linear_before_reset!r}")
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, numbers.Integral) or hidden_size < 1:
        raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}")
    H, D = int(hidden_size), 2 if direction == "bidirectional" else 1
    W, R = np.asarray(W), np.asarray(R)
    dtype = np.float64 if W.dtype == np.float64 else np.float32
    if W.ndim != 3 or W.shape[:2] != (D, 3 * H):
        raise ValueError(f"ONNX GRU input W has shape {W.shape}, expected [num_directions, 3*hidden_size, "
                         f"input_size] = [{D}, {3 * H}, input_size]")
    I = W.shape[2]
    if I < 1:
        raise ValueError(f"ONNX GRU input W has shape {W.shape}: input_size must be at least 1")
    if R.shape != (D, 3 * H, H):
        raise ValueError(f"ONNX GRU input R has shape {R.shape}, expected [num_directions, 3*hidden_size, "
                         f"hidden_size] = {(D, 3 * H, H)}")
    if B is None:
        B = np.zeros((D, 6 * H), dtype)
    B = np.asarray(B)
    if B.shape != (D, 6 * H):
        raise ValueError(f"ONNX GRU input B has shape {B.shape}, expected [num_directions, 6*hidden_size] = "
                         f"{(D, 6 * H)}")
    cell = GRU("numpy-gru-lbr" if linear_before_reset else "gru", linear_before_reset=bool(linear_before_reset))
    variant = ReverseOnly(cell) if direction == "reverse" else cell
    layer = lstmcore.LSTM(I, H, variant=variant, bidirectional=D == 2, dtype=dtype)
    for d in range(D):
        tensors = {"W": W[d], "R": R[d], "Wb": B[d, : 3 * H], "Rb": B[d, 3 * H:]}
        for name, value in tensors.items():
            layer.params[layer.param_name(name, 0, d)][...] = value
    return layer


def run_onnx_gru(X, W, R, B=None, sequence_lens=None, initial_h=None, *, hidden_size, direction="forward",
                 linear_before_reset=0, layout=0):
    """Evaluate an ONNX ``GRU`` node: returns ``(Y, Y_h)`` in the node's ``layout`` (0: ``Y`` ``[seq, D, batch, H]``,
    ``Y_h`` ``[D, batch, H]``; 1: ``Y`` ``[batch, seq, D, H]``, ``Y_h`` ``[batch, D, H]``)."""
    if layout not in (0, 1):
        raise ValueError(f"layout must be 0 or 1, got {layout!r}")
    layer = from_onnx_gru(W, R, B, hidden_size=hidden_size, direction=direction,
                          linear_before_reset=linear_before_reset)
    X = np.asarray(X, dtype=layer.dtype)
    if layout == 1:
        X = X.transpose(1, 0, 2)
    T, batch, _ = X.shape
    D, H = layer.num_directions, layer.hidden_size
    state = None
    if initial_h is not None:
        h0 = np.asarray(initial_h, dtype=layer.dtype)
        state = (np.ascontiguousarray(h0.transpose(1, 0, 2) if layout == 1 else h0),)
    output, (h_n,) = layer(np.ascontiguousarray(X), state, lengths=sequence_lens)
    Y = output.reshape(T, batch, D, H).transpose(0, 2, 1, 3)
    if layout == 1:
        return np.ascontiguousarray(Y.transpose(2, 0, 1, 3)), np.ascontiguousarray(h_n.transpose(1, 0, 2))
    return np.ascontiguousarray(Y), h_n
