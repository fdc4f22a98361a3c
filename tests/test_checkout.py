"""A development checkout imports in place: ``import lstmcore`` from the source tree finds the top-level ``variants/``
folder as ``lstmcore.variants`` (pyproject's ``package-dir`` mapping does that only for installed copies).

The checkout is a copy of the tracked files in a temporary folder, imported by an interpreter started with ``-S`` (no
site-packages, so no installed or editable lstmcore can answer) and only the folders of lstmcore's dependencies on
its path."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lstmcore._kernels

ROOT = Path(__file__).resolve().parent.parent
PROBE = ("import lstmcore, lstmcore.variants; print(lstmcore.__file__); print(lstmcore.variants.__file__); "
         "print(','.join(lstmcore.list_variants()))")


def _copy_checkout(target: Path) -> Path:
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in files.decode().split("\0"):
        if name.startswith(("lstmcore/", "variants/", "setup.py", "pyproject.toml", "README.md")) and \
                (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def _import_in_place(checkout: Path) -> list[str]:
    import numpy
    import pluggy
    import scipy

    dependencies = {str(Path(module.__file__).resolve().parent.parent) for module in (numpy, scipy, pluggy)}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(checkout), *sorted(dependencies)]),
               LSTMCORE_DISABLE_PLUGINS="1")
    done = subprocess.run([sys.executable, "-S", "-c", PROBE], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def _check(lines: list[str], checkout: Path) -> None:
    package, variants, names = lines
    assert Path(package).resolve() == (checkout / "lstmcore" / "__init__.py").resolve()
    assert Path(variants).resolve() == (checkout / "variants" / "__init__.py").resolve()
    assert {"vanilla", "peephole", "coupled", "fgr"} <= set(names.split(","))


def test_a_checkout_with_built_extensions_imports_in_place(tmp_path):
    built = sorted(Path(lstmcore._kernels.__file__).parent.glob("_*.so")) + \
        sorted(Path(lstmcore._kernels.__file__).parent.glob("_*.pyd"))
    if not built:
        pytest.skip("no built extension files to copy")
    checkout = _copy_checkout(tmp_path / "checkout")
    for path in built:
        shutil.copy2(path, checkout / "lstmcore" / "_kernels" / path.name)
    _check(_import_in_place(checkout), checkout)


def test_an_installed_variants_package_is_found_before_the_checkout_folder():
    """The checkout's finder comes after the path-based and editable-install finders: it answers only when nothing
    else finds ``lstmcore.variants``, and for no other name."""
    import importlib.machinery

    from lstmcore._checkout import CheckoutVariantsFinder

    finders = [f if isinstance(f, type) else type(f) for f in sys.meta_path]  # some finders are classes
    if CheckoutVariantsFinder in finders:
        ours = finders.index(CheckoutVariantsFinder)
        assert ours > finders.index(importlib.machinery.PathFinder)
        assert all(ours > i for i, f in enumerate(finders) if "editable" in f.__module__.lower())
    assert CheckoutVariantsFinder("/nowhere").find_spec("lstmcore.other") is None


@pytest.mark.slow
def test_build_ext_inplace_then_import_from_the_checkout(tmp_path):
    pytest.importorskip("Cython")
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    checkout = _copy_checkout(tmp_path / "checkout")
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "--parallel", "2"],
                           cwd=checkout, capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
    _check(_import_in_place(checkout), checkout)
