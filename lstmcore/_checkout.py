"""A source checkout imported in place (after ``python setup.py build_ext --inplace``): the top-level ``variants/``
folder is ``lstmcore.variants``, as ``package-dir`` in pyproject.toml maps it in an installed copy or an editable
install. The folder's place is fixed by the design, so the mapping is made here, for the checkout only."""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

PACKAGE = "lstmcore.variants"


class CheckoutVariantsFinder(importlib.abc.MetaPathFinder):
    """Finds ``lstmcore.variants`` in the checkout's ``variants/`` folder. It sits last on ``sys.meta_path``, so an
    installed or editable ``lstmcore.variants`` is always found first."""

    def __init__(self, folder: str):
        self.folder = folder

    def find_spec(self, name, path=None, target=None):
        if name != PACKAGE:
            return None
        return importlib.util.spec_from_file_location(name, os.path.join(self.folder, "__init__.py"),
                                                      submodule_search_locations=[self.folder])


def install(package_dir: str) -> None:
    """Add the finder when ``package_dir`` (lstmcore's folder) is in a checkout: beside ``setup.py`` and
    ``variants/``, and without a ``variants`` subpackage of its own."""
    root = os.path.dirname(os.path.abspath(package_dir))
    folder = os.path.join(root, "variants")
    if (os.path.exists(os.path.join(package_dir, "variants")) or not os.path.isfile(os.path.join(folder, "__init__.py"))
            or not os.path.isfile(os.path.join(root, "setup.py"))):
        return
    if not any(isinstance(f, CheckoutVariantsFinder) for f in sys.meta_path):
        sys.meta_path.append(CheckoutVariantsFinder(folder))
