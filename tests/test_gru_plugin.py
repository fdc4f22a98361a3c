"""End to end: the sample third-party plugin ``examples/lstmcore-gru`` (a pure NumPy GRU with ONNX semantics).

The distribution is built and installed once per module with pip, discovered through its ``lstmcore`` entry point like
any plugin, run through the conformance kit, trained, and compared with the ONNX GRU reference vectors and with
``torch.nn.GRU``. It is installed with ``pip install --target`` into a temporary folder that is put on ``sys.path`` for
the module (and so seen by ``importlib.metadata``), not into site-packages: other processes using this Python never see
it, and nothing is left to uninstall. The module skips if pip cannot build it (offline without setuptools, say).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # builds and installs examples/lstmcore-gru with pip

import lstmcore
from shared_data import shared_data_dir
from lstmcore.plugins import registry
from lstmcore.testing import check_variant

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "lstmcore-gru"
DIST = "lstmcore-gru"


def _pip_install(source: Path, target: Path) -> subprocess.CompletedProcess:
    base = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--disable-pip-version-check",
            "--no-input", "--target", str(target)]
    # without build isolation first: offline, the setuptools of this environment builds it
    result = subprocess.run(base + ["--no-build-isolation", str(source)], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        result = subprocess.run(base + [str(source)], capture_output=True, text=True, timeout=300)
    return result


def _forget_plugin_modules():
    for name in [m for m in sys.modules if m == "lstmcore_gru" or m.startswith("lstmcore_gru.")]:
        del sys.modules[name]


@pytest.fixture(scope="module", autouse=True)
def installed(tmp_path_factory):
    """Build and install the example; yields the folder it is installed in. Restores the registry afterwards."""
    if not EXAMPLE.is_dir():
        pytest.skip(f"{EXAMPLE} not found")
    work = tmp_path_factory.mktemp("lstmcore-gru")
    source, target = work / "src", work / "site"
    # build from a copy so that build/ and *.egg-info never land in the repository
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    result = _pip_install(source, target)
    if result.returncode != 0:
        pytest.skip(f"pip could not install {EXAMPLE.name}: {(result.stderr or result.stdout).strip()[-800:]}")
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    _forget_plugin_modules()
    registry.reload()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        importlib.invalidate_caches()
        _forget_plugin_modules()
        registry.reload()  # the next user of the registry sees the normal set of variants again


# ---------------------------------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------------------------------
def test_discovered_through_the_entry_point(installed):
    names = lstmcore.list_variants()
    assert "numpy-gru" in names and "numpy-gru-lbr" in names
    version = importlib.metadata.version(DIST)
    source = registry.source("numpy-gru")
    assert source.replace("_", "-") == f"{DIST} {version}", source
    assert registry.source("numpy-gru-lbr") == source
    variant = lstmcore.get_variant("numpy-gru")
    assert type(variant).__module__ == "lstmcore_gru.gru"
    # the installed copy, not the source tree
    assert Path(sys.modules["lstmcore_gru"].__file__).resolve().is_relative_to(installed.resolve())
    assert variant.state_names == ("h",) and not variant.linear_before_reset
    assert lstmcore.get_variant("numpy-gru-lbr").linear_before_reset
    assert not registry.failures
    # the built-ins are still all there
    assert {"vanilla", "peephole", "coupled"} <= set(names)


def test_discovered_by_a_fresh_interpreter(installed):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")]))
    code = "import lstmcore; from lstmcore.plugins import registry; print(registry.source('numpy-gru'), lstmcore.list_variants())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=installed.parent,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "lstmcore-gru 0.1.0" in out.stdout.replace("_", "-") and "'numpy-gru-lbr'" in out.stdout


def test_disable_plugins_hides_it(monkeypatch):
    monkeypatch.setenv("LSTMCORE_DISABLE_PLUGINS", "1")
    registry.reload()
    try:
        assert "numpy-gru" not in lstmcore.list_variants() and "gru" in lstmcore.list_variants()
    finally:
        monkeypatch.delenv("LSTMCORE_DISABLE_PLUGINS")
        registry.reload()
    assert "numpy-gru" in lstmcore.list_variants()


# ---------------------------------------------------------------------------------------------------------------------
# conformance and training
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["numpy-gru", "numpy-gru-lbr"])
def test_passes_the_conformance_kit(name):
    report = check_variant(name)
    assert report.ok, str(report)


def test_layer_api_with_one_state():
    layer = lstmcore.LSTM(3, 4, variant="numpy-gru", num_layers=2, bidirectional=True, batch_first=True, seed=0)
    x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype(np.float32)
    output, state = layer(x, lengths=[6, 2])
    assert output.shape == (2, 6, 8) and len(state) == 1 and state[0].shape == (4, 2, 4)
    (h_n,) = state
    np.testing.assert_array_equal(output[1, 2:], 0)
    d_x = layer.backward(np.ones_like(output), np.ones_like(h_n))
    assert d_x.shape == x.shape and set(layer.grads) == set(layer.params) and len(layer.state_grads) == 1
    assert sorted(layer.params) == sorted(f"{p}_l{k}{s}" for p in ("W", "R", "Wb", "Rb") for k in (0, 1)
                                          for s in ("", "_reverse"))
    with pytest.raises(ValueError, match="no state 'c'"):
        layer.backward(np.ones_like(output), None, np.ones_like(h_n))
    # an option of the variant, through the layer
    lbr = lstmcore.LSTM(3, 4, variant="numpy-gru", linear_before_reset=True, seed=0)
    assert lbr.cells[0].linear_before_reset
    with pytest.raises(TypeError, match="linear_before_reset"):
        lstmcore.LSTM(3, 4, variant="numpy-gru", clip=1.0)


@pytest.mark.parametrize("name", ["numpy-gru", "numpy-gru-lbr"])
def test_trains(name):
    """Regress a running sum of the inputs from h_n with a linear read-out: plain SGD reduces the loss."""
    rng = np.random.default_rng(1)
    T, B, I, H = 8, 32, 2, 8
    layer = lstmcore.LSTM(I, H, variant=name, dtype=np.float64, seed=2)
    V, c = rng.normal(scale=0.3, size=(H, 1)), np.zeros(1)
    x = rng.normal(size=(T, B, I))
    lengths = rng.integers(1, T + 1, size=B)
    mask = np.arange(T)[:, None] < lengths[None, :]
    target = 0.3 * (x[:, :, 0] * mask).sum(axis=0, keepdims=True).T  # (B, 1)

    def step(lr):
        output, (h_n,) = layer(x, lengths=lengths)
        pred = h_n[0] @ V + c
        err = pred - target
        loss = float(np.mean(err ** 2))
        d_pred = 2 * err / err.size
        d_h = np.zeros_like(h_n)
        d_h[0] = d_pred @ V.T
        layer.backward(np.zeros_like(output), d_h)
        V[...] -= lr * (h_n[0].T @ d_pred)
        c[...] -= lr * d_pred.sum(axis=0)
        for k, g in layer.grads.items():
            layer.params[k] -= lr * g
        return loss

    losses = [step(0.2) for _ in range(60)]
    assert losses[-1] < 0.3 * losses[0] and losses[30] < losses[0], losses[::10]
    assert all(np.isfinite(losses))


# ---------------------------------------------------------------------------------------------------------------------
# ONNX reference vectors
# ---------------------------------------------------------------------------------------------------------------------


DATA = shared_data_dir("onnx-lstm", "test_gru_*.npz")
GRU_VECTORS = sorted(DATA.glob("test_gru_*.npz")) if DATA else []


def _load(path: Path) -> dict:
    with np.load(path) as z:
        case = {k: z[k] for k in z.files if z[k].dtype.kind not in "US"}
        case["attrs"] = json.loads(str(z["attributes_effective"]))
    return case


@pytest.mark.skipif(not GRU_VECTORS, reason="ONNX GRU vectors not found (set LSTMCORE_SHARED_DATA)")
@pytest.mark.parametrize("path", GRU_VECTORS, ids=lambda p: p.stem)
def test_onnx_gru_vectors(path):
    from lstmcore_gru import from_onnx_gru, run_onnx_gru

    case = _load(path)
    attrs = case["attrs"]
    assert attrs["activations"] is None and attrs["clip"] is None  # what the helper supports
    kwargs = dict(hidden_size=attrs["hidden_size"], direction=attrs["direction"],
                  linear_before_reset=attrs["linear_before_reset"])
    Y, Y_h = run_onnx_gru(case["X"], case["W"], case["R"], case.get("B"), case.get("sequence_lens"),
                          case.get("initial_h"), layout=attrs["layout"], **kwargs)
    if "Y" in case:
        np.testing.assert_allclose(Y, case["Y"], rtol=1e-5, atol=1e-6)
    if "Y_h" in case:
        np.testing.assert_allclose(Y_h, case["Y_h"], rtol=1e-5, atol=1e-6)
    # the same through from_onnx_gru directly (layout 0), in float64 too
    X = case["X"].transpose(1, 0, 2) if attrs["layout"] == 1 else case["X"]
    for dtype in (np.float32, np.float64):
        layer = from_onnx_gru(case["W"].astype(dtype), case["R"].astype(dtype),
                              None if "B" not in case else case["B"].astype(dtype), **kwargs)
        assert layer.dtype == dtype
        output, (h_n,) = layer(np.ascontiguousarray(X, dtype=dtype))
        expected_h = case["Y_h"].transpose(1, 0, 2) if attrs["layout"] == 1 else case["Y_h"]
        np.testing.assert_allclose(h_n, expected_h, rtol=1e-5, atol=1e-6)
    if "B" in case and np.any(case["B"]):  # the bias matters in this vector: dropping it must change the result
        no_bias = from_onnx_gru(case["W"], case["R"], None, **kwargs)
        assert not np.allclose(no_bias(np.ascontiguousarray(X))[1][0], expected_h, atol=1e-4)


def test_onnx_vectors_cover_layout_and_bias():
    if not GRU_VECTORS:
        pytest.skip("ONNX GRU vectors not found")
    attrs = [_load(p)["attrs"] for p in GRU_VECTORS]
    assert any(a["layout"] == 1 for a in attrs)
    assert any("B" in _load(p) for p in GRU_VECTORS)


# ---------------------------------------------------------------------------------------------------------------------
# what the official vectors do not cover (one step, constant weights, no sequence_lens, no linear_before_reset, forward
# only): an independent per-sample transcription of the ONNX GRU equations, and PyTorch's GRU
# ---------------------------------------------------------------------------------------------------------------------
def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def onnx_gru_reference(X, W, R, B, sequence_lens, initial_h, direction, linear_before_reset):
    """The ONNX GRU operator, one sample and one step at a time, straight from the spec (layout 0)."""
    T, batch, _ = X.shape
    D, G, _ = W.shape
    H = G // 3
    Y = np.zeros((T, D, batch, H))
    Y_h = np.zeros((D, batch, H))
    for d in range(D):
        Wz, Wr, Wh = np.split(W[d], 3)
        Rz, Rr, Rh = np.split(R[d], 3)
        Wbz, Wbr, Wbh, Rbz, Rbr, Rbh = np.split(B[d], 6)
        backwards = direction == "reverse" or d == 1
        for b in range(batch):
            n = int(sequence_lens[b])
            h = initial_h[d, b].astype(np.float64)
            for t in (reversed(range(n)) if backwards else range(n)):
                x = X[t, b]
                z = _sigmoid(Wz @ x + Rz @ h + Wbz + Rbz)
                r = _sigmoid(Wr @ x + Rr @ h + Wbr + Rbr)
                if linear_before_reset:
                    hh = np.tanh(Wh @ x + r * (Rh @ h + Rbh) + Wbh)
                else:
                    hh = np.tanh(Wh @ x + Rh @ (r * h) + Rbh + Wbh)
                h = (1 - z) * hh + z * h
                Y[t, d, b] = h
            Y_h[d, b] = h
    return Y, Y_h


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("layout", [0, 1])
def test_against_the_onnx_equations(direction, lbr, layout):
    from lstmcore_gru import run_onnx_gru

    rng = np.random.default_rng(lbr * 10 + layout)
    T, batch, I, H = 6, 4, 3, 5
    D = 2 if direction == "bidirectional" else 1
    X = rng.normal(size=(T, batch, I))
    W, R = rng.normal(scale=0.6, size=(D, 3 * H, I)), rng.normal(scale=0.6, size=(D, 3 * H, H))
    B = rng.normal(scale=0.5, size=(D, 6 * H))
    lens = np.array([6, 3, 0, 1], dtype=np.int32)
    h0 = rng.normal(size=(D, batch, H))
    Y_ref, Y_h_ref = onnx_gru_reference(X, W, R, B, lens, h0, direction, lbr)
    if layout == 1:
        X, h0 = X.transpose(1, 0, 2), h0.transpose(1, 0, 2)
        Y_ref, Y_h_ref = Y_ref.transpose(2, 0, 1, 3), Y_h_ref.transpose(1, 0, 2)
    Y, Y_h = run_onnx_gru(X, W, R, B, lens, h0, hidden_size=H, direction=direction, linear_before_reset=lbr,
                          layout=layout)
    np.testing.assert_allclose(Y, Y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Y_h, Y_h_ref, rtol=1e-12, atol=1e-12)


def test_from_onnx_gru_validates():
    from lstmcore_gru import from_onnx_gru

    W, R = np.zeros((1, 9, 2), np.float32), np.zeros((1, 9, 3), np.float32)
    with pytest.raises(ValueError, match="direction"):
        from_onnx_gru(W, R, hidden_size=3, direction="sideways")
    with pytest.raises(ValueError, match=r"input W has shape"):
        from_onnx_gru(W, R, hidden_size=4)
    with pytest.raises(ValueError, match=r"input R has shape"):
        from_onnx_gru(W, R[:, :, :2], hidden_size=3)
    with pytest.raises(ValueError, match=r"input B has shape"):
        from_onnx_gru(W, R, np.zeros((1, 9)), hidden_size=3)
    with pytest.raises(ValueError, match="bidirectional|num_directions"):
        from_onnx_gru(W, R, hidden_size=3, direction="bidirectional")
    layer = from_onnx_gru(W, R, hidden_size=3, direction="reverse", linear_before_reset=1)
    assert layer.num_directions == 1 and layer.cells[0].cell.linear_before_reset


def test_matches_torch_gru_forward_and_backward():
    """linear_before_reset=1 is PyTorch's nn.GRU (gate order r, z, n): outputs and every gradient, with lengths."""
    torch = pytest.importorskip("torch")
    from lstmcore_gru import from_onnx_gru

    torch.manual_seed(0)
    T, batch, I, H = 7, 4, 3, 5
    module = torch.nn.GRU(I, H, bidirectional=True, dtype=torch.float64)
    lens = np.array([7, 4, 1, 5])
    W, R, B = [], [], []
    for suffix in ("", "_reverse"):
        get = {k: getattr(module, f"{k}_l0{suffix}").detach().numpy() for k in ("weight_ih", "weight_hh", "bias_ih",
                                                                              "bias_hh")}
        order = lambda a: np.concatenate([a[H:2 * H], a[:H], a[2 * H:]])  # torch (r, z, n) -> ONNX (z, r, h)
        W.append(order(get["weight_ih"]))
        R.append(order(get["weight_hh"]))
        B.append(np.concatenate([order(get["bias_ih"]), order(get["bias_hh"])]))
    layer = from_onnx_gru(np.stack(W), np.stack(R), np.stack(B), hidden_size=H, direction="bidirectional",
                          linear_before_reset=1)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(T, batch, I))
    h0 = rng.normal(size=(2, batch, H))
    d_out, d_h = rng.normal(size=(T, batch, 2 * H)), rng.normal(size=(2, batch, H))
    d_out *= (np.arange(T)[:, None] < lens[None, :])[:, :, None]  # torch's padded outputs are constants

    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lens), enforce_sorted=False)
    out_p, h_nt = module(packed, h0t)
    out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, total_length=T)
    ((out_t * torch.tensor(d_out)).sum() + (h_nt * torch.tensor(d_h)).sum()).backward()

    output, (h_n,) = layer(x, (h0,), lengths=lens)
    np.testing.assert_allclose(output, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n, h_nt.detach().numpy(), rtol=1e-10, atol=1e-12)
    d_x = layer.backward(d_out, d_h)
    np.testing.assert_allclose(d_x, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(layer.state_grads[0], h0t.grad.numpy(), rtol=1e-9, atol=1e-12)
    for d, suffix in enumerate(("", "_reverse")):
        g = {k: getattr(module, f"{k}_l0{suffix}").grad.numpy() for k in ("weight_ih", "weight_hh", "bias_ih",
                                                                       "bias_hh")}
        order = lambda a: np.concatenate([a[H:2 * H], a[:H], a[2 * H:]])
        np.testing.assert_allclose(layer.grads[f"W_l0{suffix}"], order(g["weight_ih"]), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer.grads[f"R_l0{suffix}"], order(g["weight_hh"]), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer.grads[f"Wb_l0{suffix}"], order(g["bias_ih"]), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer.grads[f"Rb_l0{suffix}"], order(g["bias_hh"]), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("lbr", [False, True])
def test_the_numpy_example_and_the_compiled_builtin_agree(lbr):
    """Two implementations written apart, the example's NumPy GRU and lstmcore's compiled ``gru``, compute the same
    function and gradients from the same ONNX tensors (mapped through ``lstmcore.interop``'s ``ONNX_GRU`` layout)."""
    from lstmcore.interop._layout import ONNX_GRU, import_tensors

    rng = np.random.default_rng(int(lbr))
    I, H, T, B = 3, 5, 6, 4
    example = lstmcore.LSTM(I, H, variant="numpy-gru", linear_before_reset=lbr, bidirectional=True,
                            dtype=np.float64, seed=0)
    builtin = lstmcore.LSTM(I, H, variant="gru", linear_before_reset=lbr, bidirectional=True, dtype=np.float64)
    for d in range(2):
        theirs = {k: rng.normal(scale=0.6, size=example.params[example.param_name(k, 0, d)].shape)
                  for k in ("W", "R", "Wb", "Rb")}
        for k, v in theirs.items():
            example.params[example.param_name(k, 0, d)][...] = v
        ours = import_tensors(ONNX_GRU, builtin.cells[d], H, theirs["W"], theirs["R"], theirs["Wb"], theirs["Rb"],
                              dtype=np.float64)
        for k, v in ours.items():
            builtin.params[builtin.param_name(k, 0, d)][...] = v
    x, h0 = rng.normal(size=(T, B, I)), rng.normal(size=(2, B, H))
    lengths = [6, 0, 3, 1]
    d_out = rng.normal(size=(T, B, 2 * H))
    results = []
    for layer in (example, builtin):
        out, (h_n,) = layer(x, (h0,), lengths=lengths)
        d_x = layer.backward(d_out, np.ones_like(h_n))
        results.append((out, h_n, d_x, layer.state_grads[0], dict(layer.grads)))
    for a, b in zip(results[0][:4], results[1][:4]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    ex, bi = results[0][4], results[1][4]
    for d in range(2):
        name = lambda k: example.param_name(k, 0, d)  # noqa: E731
        for k in ("W", "R"):
            np.testing.assert_allclose(ex[name(k)], bi[name(k)], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ex[name("Wb")], bi[name("b")], rtol=1e-10, atol=1e-12)
        if lbr:
            np.testing.assert_allclose(ex[name("Rb")][2 * H:], bi[name("b_rn")], rtol=1e-10, atol=1e-12)
