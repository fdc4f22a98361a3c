"""Build of the one extension, ``lstmcore_ugrnn._ugrnn``, against the installed lstmcore.

Two search paths are needed, and they are different:

- Cython resolves ``cimport lstmcore._kernels._blas`` to ``lstmcore/_kernels/_blas.pxd`` under a folder of its include
  path: the folder that *holds* the ``lstmcore`` package. Cython also searches ``sys.path``, which is enough for a regular
  install, but an editable install of lstmcore is found through an import hook, not ``sys.path``; so pass it explicitly.
- The C compiler needs the headers that those ``.pxd`` files include (``lstmcore_fastmath.h``,
  ``lstmcore_smallgemm.h``): ``lstmcore.get_include()``.

Set ``LSTMCORE_DEBUG=1`` to build with bounds checks on, as lstmcore's own build does.
"""
import os

import lstmcore
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("LSTMCORE_DEBUG", "") not in ("", "0")
LSTMCORE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(lstmcore.__file__)))

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
}
if os.name == "nt":
    compile_args = []
else:
    compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]

extensions = [
    Extension(
        "lstmcore_ugrnn._ugrnn",
        ["src/lstmcore_ugrnn/_ugrnn.pyx"],
        include_dirs=[numpy.get_include(), lstmcore.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=compile_args,
    )
]

setup(ext_modules=cythonize(extensions, include_path=[LSTMCORE_PARENT], compiler_directives=directives))
