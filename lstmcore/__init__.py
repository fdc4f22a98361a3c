"""lstmcore: compiled LSTM forward and BPTT kernels with pluggable gate variants, for ablation studies.

    >>> import numpy as np, lstmcore
    >>> layer = lstmcore.LSTM(input_size=8, hidden_size=16, variant="peephole", seed=0)
    >>> output, (h_n, c_n) = layer(np.zeros((5, 2, 8), np.float32))
    >>> output.shape, h_n.shape
    ((5, 2, 16), (1, 2, 16))
"""
from lstmcore._version import __version__
from lstmcore import _checkout

_checkout.install(__path__[0])  # a source checkout imported in place finds variants/ as lstmcore.variants
from lstmcore._kernels import _driver  # noqa: F401  (the compiled extension: fail early and clearly if it is missing)
from lstmcore.diagrams import diagram
from lstmcore.hookspecs import hookimpl
from lstmcore.layers import LSTM, ReverseOnly
from lstmcore.plugins import GROUPS, PluginError, PluginWarning, get_group, get_variant, list_variants
from lstmcore.variant import ACTIVATION_NAMES, Activation, CompiledCell, GatedCell, Variant

__all__ = [
    "__version__", "LSTM", "ReverseOnly", "Variant", "CompiledCell", "GatedCell", "Activation", "ACTIVATION_NAMES", "hookimpl",
    "list_variants", "get_variant", "get_group", "GROUPS", "PluginError", "PluginWarning", "get_include",
    "diagram",
]


def __getattr__(name):
    if name == "plot":  # lstmcore.plot imports matplotlib: only on first use
        import importlib

        return importlib.import_module("lstmcore.plot")
    raise AttributeError(f"module 'lstmcore' has no attribute {name!r}")


def get_include() -> str:
    """The folder of lstmcore's C headers, for building a Cython plugin that cimports ``lstmcore._kernels``
    (pass it to the C compiler's include_dirs, next to ``numpy.get_include()``)."""
    import os

    return os.path.join(os.path.dirname(__file__), "_kernels")
