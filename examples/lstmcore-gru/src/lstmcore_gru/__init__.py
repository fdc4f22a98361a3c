"""lstmcore-gru: a GRU cell with ONNX semantics for lstmcore, as a third-party plugin written in pure NumPy.

Installing the distribution registers two variants through the ``lstmcore`` entry point:

- ``numpy-gru``: ONNX's default GRU (``linear_before_reset=0``);
- ``numpy-gru-lbr``: ``linear_before_reset=1`` (the GRU of PyTorch and cuDNN).

    >>> import lstmcore
    >>> layer = lstmcore.LSTM(8, 16, variant="numpy-gru", seed=0)                 # doctest: +SKIP
    >>> output, (h_n,) = layer(x)                                           # doctest: +SKIP
"""
import lstmcore
from lstmcore import ReverseOnly  # re-exported: runs a cell backwards in time (ONNX "reverse")
from lstmcore_gru.gru import GRU
from lstmcore_gru.onnx import from_onnx_gru, run_onnx_gru

__version__ = "0.1.0"
__all__ = ["GRU", "ReverseOnly", "from_onnx_gru", "run_onnx_gru", "register_variants", "VARIANTS"]

#: The variants this plugin registers.
VARIANTS = (GRU("numpy-gru", linear_before_reset=False), GRU("numpy-gru-lbr", linear_before_reset=True))


@lstmcore.hookimpl
def register_variants(register):
    """lstmcore's hook: register the GRU both ways."""
    for variant in VARIANTS:
        register(variant)
