"""Build of the compiled kernels: every extension is listed here, in one place.

Set ``LSTMCORE_DEBUG=1`` at build time to compile with bounds checks and wrap-around on (for hunting a crash).
"""
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("LSTMCORE_DEBUG", "") not in ("", "0")

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

# -fno-trapping-math lets GCC if-convert the clamps in the element-wise loops so that they vectorise;
# it changes no result and, unlike -ffast-math, links nothing that alters the process's floating-point state.
compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-trapping-math"]
# The online update (_online) must round as NumPy does, one operation at a time: no fused multiply-adds.
exact_args = ["-ffp-contract=off"]
# The sequence driver's thread team is POSIX threads (lstmcore_team.h), and it asks the BLAS library for its thread
# count through dladdr/dlsym.
posix = os.name == "posix"
link_args = ["-pthread"] if posix else []
libraries = ["dl"] if sys.platform.startswith("linux") else []

extensions = [
    Extension(
        f"lstmcore._kernels.{name}",
        [f"lstmcore/_kernels/{name}.pyx"],
        include_dirs=[numpy.get_include(), "lstmcore/_kernels"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=compile_args + (link_args if name == "_driver" else [])
        + (exact_args if name == "_online" else []),
        extra_link_args=link_args if name == "_driver" else [],
        libraries=libraries if name == "_driver" else [],
    )
    for name in ("_blas", "_activations", "_driver", "_gated", "_lnlstm", "_slstm", "_online", "_gru", "_mgu", "_janet")
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
