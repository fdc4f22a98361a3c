"""The sample Cython plugin, ``examples/cython-variant`` (the update-gate RNN, only its element-wise step on
lstmcore's sequence driver), built and installed from a temporary copy as a plugin author would, then checked: its entry
point registers it, its forward matches a NumPy reference of the same equations, its gradients match finite
differences in float64, it runs inside ``lstmcore.LSTM`` (lengths, reverse direction, stacking, batch_first), on 1, 2
and 3 threads, and passes the conformance kit.

The build is ``pip install --no-build-isolation --no-deps --target <tmp>`` (nothing is installed into the running
environment) with ``LSTMCORE_DEBUG=1``: bounds checks on in the wrappers and ``-O0``, which compiles in a third of the
time of the release flags. It is skipped when Cython, pip, a C compiler or the Python headers are missing; once they are
all present, a failing build is a failure of this test (the build log is printed).
"""
import importlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # builds examples/cython-variant with pip and a C compiler

import lstmcore
from cell_gradcheck import gradcheck
import lstmcore.plugins

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cython-variant"
DIST, VERSION, MODULE = "lstmcore-ugrnn", "0.1.0", "lstmcore_ugrnn"


# -- build ---------------------------------------------------------------------------------------------------------------
def _missing_build_tool():
    """Why the example cannot be built here (a reason to skip), or None."""
    try:
        import Cython
    except ImportError:
        return "Cython is not installed"
    if int(Cython.__version__.split(".")[0]) < 3:
        return f"Cython {Cython.__version__} is too old (the example needs Cython 3)"
    if importlib.util.find_spec("pip") is None:
        return "pip is not available"
    if os.name != "nt":
        cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
        compiler = os.environ.get("CC", cc[0] if cc else "cc").split()[0]
        if shutil.which(compiler) is None:
            return f"no C compiler ({compiler!r} is not on PATH)"
    if not Path(sysconfig.get_paths()["include"], "Python.h").is_file():
        return "the Python development headers (Python.h) are not installed"
    return None


@pytest.fixture(scope="module")
def ugrnn_site(tmp_path_factory):
    """A folder holding the built plugin and its dist-info (entry point included), as ``pip install`` leaves them."""
    assert EXAMPLE.is_dir(), f"the example package is missing: {EXAMPLE}"
    reason = _missing_build_tool()
    if reason:
        pytest.skip(f"cannot build examples/cython-variant: {reason}")
    work = tmp_path_factory.mktemp("cython-variant")
    source = work / "cython-variant"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "*.so", "*.pyd", "*.c",
                                                                   "__pycache__"))
    site = work / "site"
    env = dict(os.environ, LSTMCORE_DEBUG="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    command = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
               "--target", str(site), str(source)]
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        log = f"$ {' '.join(command)}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        print(log)
        pytest.fail("building examples/cython-variant failed although Cython, pip, a C compiler and the Python "
                    f"headers are present, so the error is in the example; last lines of the log:\n{log[-4000:]}")
    return site


@pytest.fixture(scope="module")
def ugrnn(ugrnn_site):
    """The plugin module, imported from the built copy; sys.path and sys.modules are restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ugrnn_site))
        importlib.invalidate_caches()
        module = importlib.import_module(MODULE)
        assert Path(module.__file__).resolve().is_relative_to(ugrnn_site.resolve())
        yield module
        for name in [n for n in sys.modules if n == MODULE or n.startswith(MODULE + ".")]:
            del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture
def registry(ugrnn, monkeypatch):
    """A fresh default registry (so that ``LSTM(variant="ugrnn")`` finds the plugin through its entry point)."""
    monkeypatch.delenv("LSTMCORE_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("LSTMCORE_STRICT_PLUGINS", raising=False)
    fresh = lstmcore.plugins.Registry()
    monkeypatch.setattr(lstmcore.plugins, "registry", fresh)
    return fresh


# -- the NumPy reference: the same equations, one sequence and one step at a time -----------------------------------------
def _hard_sigmoid(v, alpha, beta):
    return np.clip(alpha * v + beta, 0, 1)


ACTS = {
    "sigmoid": lambda v, a, b: 1 / (1 + np.exp(-v)),
    "tanh": lambda v, a, b: np.tanh(v),
    "identity": lambda v, a, b: v,
    "relu": lambda v, a, b: np.maximum(v, 0),
    "hard_sigmoid": _hard_sigmoid,
    "softsign": lambda v, a, b: v / (1 + np.abs(v)),
}


def ugrnn_reference(x, W, R, b, h0, lengths=None, reverse=False, gate=("sigmoid", 0, 0), cand=("tanh", 0, 0)):
    """u = sigma(W_u x + R_u h + b_u); c = g(W_c x + R_c h + b_c); h = u h + (1 - u) c, in float64."""
    x, W, R, b, h0 = (np.asarray(a, np.float64) for a in (x, W, R, b, h0))
    T, B, _ = x.shape
    H = R.shape[1]
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    sigma = lambda v: ACTS[gate[0]](v, *gate[1:])  # noqa: E731
    g = lambda v: ACTS[cand[0]](v, *cand[1:])  # noqa: E731
    out, h_n = np.zeros((T, B, H)), h0.copy()
    for r in range(B):
        h = h0[r].copy()
        steps = range(lengths[r] - 1, -1, -1) if reverse else range(lengths[r])
        for t in steps:
            u = sigma(W[:H] @ x[t, r] + R[:H] @ h + b[:H])
            c = g(W[H:] @ x[t, r] + R[H:] @ h + b[H:])
            h = u * h + (1 - u) * c
            out[t, r] = h
        h_n[r] = h
    return out, h_n


OPTION_SETS = {
    "default": ({}, ("sigmoid", 0, 0), ("tanh", 0, 0)),
    "hardsig_softsign": (dict(gate_activation=("hard_sigmoid", 0.25, 0.5), input_activation="softsign"),
                         ("hard_sigmoid", 0.25, 0.5), ("softsign", 0, 0)),
}


# -- tests ---------------------------------------------------------------------------------------------------------------
def test_entry_point_registers_the_plugin(registry, ugrnn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", lstmcore.PluginWarning)
        names = lstmcore.list_variants()
    assert "ugrnn" in names and names == sorted(names)
    variant = lstmcore.get_variant("ugrnn")
    assert isinstance(variant, ugrnn.UpdateGateRNN) and isinstance(variant, lstmcore.Variant)
    assert registry.source("ugrnn") == f"{DIST} {VERSION}"
    assert variant.state_names == ("h",) and variant.compiled
    I, H = 7, 5
    assert variant.parameter_count(I, H) == 2 * H * (I + H) + 2 * H


def test_cli_lists_the_plugin(registry, capsys):
    from lstmcore import cli

    assert cli.main(["variants", "--input-size", "3", "--hidden-size", "4"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("ugrnn "))
    assert f"{DIST} {VERSION}" in row and str(2 * 4 * 7 + 8) in row


@pytest.mark.parametrize("options", list(OPTION_SETS))
@pytest.mark.parametrize("lengths", [None, [6, 0, 3, 1]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_forward_matches_numpy_reference(ugrnn, dtype, reverse, lengths, options):
    opts, gate, cand = OPTION_SETS[options]
    variant = ugrnn.UpdateGateRNN().with_options(**opts)
    rng = np.random.default_rng(7)
    T, B, I, H = 6, 4, 3, 5
    params = variant.init_parameters(I, H, rng, dtype)
    params = {k: (v * 2).astype(dtype) for k, v in params.items()}  # away from the linear regime of the gates
    x = rng.normal(size=(T, B, I)).astype(dtype)
    h0 = rng.normal(size=(B, H)).astype(dtype)
    lens = None if lengths is None else np.asarray(lengths, np.int32)
    layer_out = np.full((T, B, 2 * H), np.nan, dtype)  # the layer hands over a strided view of its output
    out = layer_out[:, :, H:]
    (h_n,), _ = variant.forward(params, x, (h0,), lens, reverse, out)
    ref_out, ref_h = ugrnn_reference(x, params["W"], params["R"], params["b"], h0, lens, reverse, gate, cand)
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    assert h_n.dtype == dtype and out.dtype == dtype
    np.testing.assert_allclose(out, ref_out, **tol)
    np.testing.assert_allclose(h_n, ref_h, **tol)
    assert np.isnan(layer_out[:, :, :H]).all(), "the kernel wrote outside its direction's columns"
    if lens is not None:
        for r, n in enumerate(lens):
            assert not out[n:, r].any(), "outputs past a sequence's length must be zero"
        np.testing.assert_array_equal(h_n[lens == 0], h0[lens == 0])


@pytest.mark.parametrize("options", list(OPTION_SETS))
def test_gradients_match_finite_differences(registry, options):
    """Every parameter entry of a 2-layer bidirectional stack, x and h0, with a padded batch (lengths 5, 0, 2)."""
    layer = lstmcore.LSTM(3, 4, variant="ugrnn", num_layers=2, bidirectional=True, dtype=np.float64, seed=3,
                          **OPTION_SETS[options][0])
    gradcheck(layer, lengths=[5, 0, 2], seed=11)


def test_runs_inside_lstm(registry):
    I, H, B, T = 5, 7, 3, 6
    layer = lstmcore.LSTM(I, H, variant="ugrnn", bidirectional=True, batch_first=True, seed=1)
    assert layer.variant_name == "ugrnn" and layer.dtype == np.float32
    assert set(layer.params) == {f"{p}_l0{s}" for p in "WRb" for s in ("", "_reverse")}
    rng = np.random.default_rng(5)
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    lengths = np.array([6, 2, 0])
    output, state = layer(x, lengths=lengths)
    assert output.shape == (B, T, 2 * H) and output.dtype == np.float32
    assert isinstance(state, tuple) and len(state) == 1 and state[0].shape == (2, B, H)
    (h_n,) = state
    for r, n in enumerate(lengths):
        assert not output[r, n:].any()
        if n:
            np.testing.assert_array_equal(h_n[0, r], output[r, n - 1, :H])  # forward: last real step
            np.testing.assert_array_equal(h_n[1, r], output[r, 0, H:])      # reverse: ends at step 0
        else:
            assert not h_n[:, r].any()  # zero initial state returned as the final state

    # the same layer in float64 computes the same function
    layer64 = lstmcore.LSTM(I, H, variant="ugrnn", bidirectional=True, batch_first=True, dtype=np.float64)
    for key, value in layer.params.items():
        layer64.params[key][...] = value
    out64, (h64,) = layer64(x.astype(np.float64), lengths=lengths)
    np.testing.assert_allclose(output, out64, rtol=1e-5, atol=1e-6)

    d_out = rng.normal(size=output.shape).astype(np.float32)
    d_x = layer.backward(d_out)
    assert d_x.shape == x.shape and d_x.dtype == np.float32
    assert set(layer.grads) == set(layer.params)
    assert all(layer.grads[k].shape == v.shape and layer.grads[k].dtype == np.float32 for k, v in layer.params.items())
    assert not d_x[2].any(), "a sequence of length 0 gets no input gradient"
    grads = {k: v.copy() for k, v in layer.grads.items()}
    assert layer.backward(d_out, need_input_grad=False) is None  # the variant accepts d_x=None
    for key, value in grads.items():
        np.testing.assert_allclose(layer.grads[key], value, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="no state 'c'"):
        layer.backward(d_out, d_c_n=np.zeros_like(h_n))


def test_options_and_read_only_inputs(registry, ugrnn):
    layer = lstmcore.LSTM(2, 3, variant="ugrnn", gate_activation="hard_sigmoid", input_activation="relu", seed=0)
    cell = layer.cells[0]
    assert (cell.gate_activation.name, cell.input_activation.name) == ("hard_sigmoid", "relu")
    assert lstmcore.get_variant("ugrnn").gate_activation.name == "sigmoid", "with_options must not mutate the variant"
    with pytest.raises(TypeError, match="unknown option"):
        lstmcore.LSTM(2, 3, variant="ugrnn", clip=3.0)
    x = np.random.default_rng(0).normal(size=(4, 2, 2)).astype(np.float32)
    expected, _ = layer(x)
    x.setflags(write=False)
    for value in layer.params.values():
        value.setflags(write=False)
    output, _ = layer(x)  # const memoryviews: read-only buffers are accepted
    np.testing.assert_array_equal(output, expected)
    layer.backward(np.ones_like(output))


@pytest.mark.parametrize("options", list(OPTION_SETS))
def test_conformance_kit(ugrnn, options):
    from lstmcore.testing import CHECKS, assert_conforms

    report = assert_conforms(ugrnn.UpdateGateRNN().with_options(**OPTION_SETS[options][0]))
    assert report.ok and report.names == list(CHECKS)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_step_on_every_team_size(ugrnn, dtype):
    """The driver runs the step on 1, 2 and 3 threads: each agrees with the NumPy reference (forward) and with the
    others (gradients, to summation tolerance), and repeats itself bit for bit."""
    from cell_checks import check_team_sizes

    def reference(params, x, h0, lengths):
        return ugrnn_reference(x, params["W"], params["R"], params["b"], h0, lengths, True)[0]

    check_team_sizes(ugrnn.UpdateGateRNN(), reference, dtype)
