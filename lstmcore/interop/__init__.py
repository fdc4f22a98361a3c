"""Weights to and from other frameworks' LSTMs: PyTorch ``torch.nn.LSTM`` and the ONNX ``LSTM`` operator.

    >>> from lstmcore.interop import from_onnx, to_onnx, from_torch, to_torch   # doctest: +SKIP
    >>> layer = from_torch(torch_module)            # same function, weights copied (biases summed)
    >>> module = to_torch(layer)                    # vanilla layers only
    >>> layer = from_onnx(W, R, B, P, direction="bidirectional", activations=[...])
    >>> node_inputs = to_onnx(layer)                # dict with from_onnx's keys: from_onnx(**to_onnx(layer))

Each framework's weight order (gate order, peephole order, two biases) is one ``Layout`` table in ``_layout.py``; the
same two functions permute blocks and sum/split biases in both directions. torch is imported only inside
``from_torch``/``to_torch``. See docs/interop.md for the gate-order table.
"""
from lstmcore.interop._layout import KERAS, ONNX, TORCH, Layout
from lstmcore.interop._onnx import from_onnx, to_onnx
from lstmcore.layers import ReverseOnly  # where it lives; here for the callers of from_onnx(direction="reverse")
from lstmcore.interop._torch import from_torch, to_torch

__all__ = ["from_torch", "to_torch", "from_onnx", "to_onnx", "ReverseOnly", "Layout", "TORCH", "ONNX", "KERAS"]
