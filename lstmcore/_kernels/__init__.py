"""Compiled kernels (Cython). The ``.pxd`` files are the C-level API for Cython plugins."""
