"""The layer-norm LSTM (``lnlstm``, both forms of its carried cell): a NumPy reference of the equations in
docs/cells.md, finite differences of every parameter, input and initial state in float64 (two bidirectional layers,
ragged lengths with a 0), the conformance kit, float32, and the driver's ``whole_rows`` split on 1, 2 and 3 threads."""
import numpy as np
import pytest

import lstmcore
from lstmcore._kernels import _driver
from lstmcore.testing import CHECKS, assert_conforms
from cell_gradcheck import gradcheck, randomised_layer

FORMS = {"haste": False, "carry_normalised": True}
EPS = 1e-5


def layer_norm(v):
    return (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + EPS)


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def reference(params, x, h0, c0, lengths=None, carry_normalised=False):
    """One direction, forward in time; ``lengths`` as the layer's (padded steps carry the state, output 0)."""
    H = h0.shape[1]
    h, c = h0.copy(), c0.copy()
    outputs = np.zeros(x.shape[:2] + (H,))
    for t in range(x.shape[0]):
        a = (params["gain_x"] * layer_norm(x[t] @ params["W"].T) + params["gain_r"] * layer_norm(h @ params["R"].T)
             + params["b"])
        i, f, o, z = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])
        s = f * c + i * z
        cn = params["gain_c"] * layer_norm(s) + params["bias_c"]
        h_new, c_new = o * np.tanh(cn), (cn if carry_normalised else s)
        real = np.ones(x.shape[1], bool) if lengths is None else t < np.asarray(lengths)
        h, c = np.where(real[:, None], h_new, h), np.where(real[:, None], c_new, c)
        outputs[t] = np.where(real[:, None], h_new, 0)
    return outputs, h, c


def random_params(variant, I, H, rng, dtype=np.float64):
    return {k: rng.normal(scale=0.6, size=v.shape).astype(dtype) + (1 if k.startswith("gain") else 0)
            for k, v in variant.init_parameters(I, H, rng, dtype).items()}


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_matches_the_numpy_reference(form, dtype):
    rng = np.random.default_rng(1)
    T, B, I, H = 6, 4, 5, 7
    layer = lstmcore.LSTM(I, H, variant="lnlstm", dtype=dtype, carry_normalised_cell=FORMS[form])
    params = random_params(layer.cells[0], I, H, rng)
    for k, v in params.items():
        layer.params[f"{k}_l0"][...] = v
    x, h0, c0 = rng.normal(size=(T, B, I)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    lengths = [6, 0, 3, 5]
    output, (h_n, c_n) = layer(x.astype(dtype), (h0[None].astype(dtype), c0[None].astype(dtype)), lengths=lengths)
    ref_out, ref_h, ref_c = reference(params, x, h0, c0, lengths, FORMS[form])
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(output, ref_out, **tol)
    np.testing.assert_allclose(h_n[0], ref_h, **tol)
    np.testing.assert_allclose(c_n[0], ref_c, **tol)


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("config", ["single", "stacked_bidirectional"])
def test_gradients_match_finite_differences(form, config):
    kw = dict(num_layers=2, bidirectional=True) if config != "single" else {}
    layer = randomised_layer("lnlstm", carry_normalised_cell=FORMS[form], **kw)
    gradcheck(layer, lengths=[5, 0, 2] if config != "single" else None)


@pytest.mark.parametrize("form", list(FORMS))
def test_conforms(form):
    report = assert_conforms("lnlstm", options=dict(carry_normalised_cell=FORMS[form]))
    assert report.ok and report.names == list(CHECKS)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_whole_rows_on_every_team_size(dtype):
    """``whole_rows``: the threads split the batch rows (each step sees a whole row, as its norms need) after the
    recurrent product split by units; 1, 2 and 3 threads (more than some runs of real rows) agree with the reference
    and with each other, and each repeats itself bit for bit, padded rows included."""
    variant = lstmcore.get_variant("lnlstm")
    rng = np.random.default_rng(4)
    T, B, I, H = 5, 5, 3, 24
    params = random_params(variant, I, H, rng, dtype)
    x = rng.normal(size=(T, B, I)).astype(dtype)
    h0, c0 = rng.normal(size=(B, H)).astype(dtype), rng.normal(size=(B, H)).astype(dtype)
    lengths = np.array([5, 0, 2, 5, 1], np.int32)
    d_out = rng.normal(size=(T, B, H)).astype(dtype)
    d_h, d_c = rng.normal(size=(B, H)).astype(dtype), rng.normal(size=(B, H)).astype(dtype)
    assert variant.kernel_for(H).description["whole_rows"]
    ref_out, ref_h, ref_c = reference({k: v.astype(np.float64) for k, v in params.items()}, x, h0, c0, lengths)
    tol = dict(rtol=1e-11, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=2e-5)

    def run(threads):
        out = np.zeros((T, B, H), dtype)
        W, b, weights, step = variant.driver_arrays(params)
        (h_n, c_n), tape = _driver.forward(variant.kernel_for(H), False, x, W, b, weights, step, lengths, (h0, c0),
                                           out, threads=threads)
        assert tape.threads == threads
        d = (np.empty_like(W), np.empty_like(b), (np.empty_like(weights[0]),), np.empty_like(step))
        dx = np.empty_like(x)
        dh0, dc0 = _driver.backward(tape, d_out, (d_h, d_c), d[0], d[1], d[2], d[3], dx, False)
        return dict(out=out, h_n=h_n, c_n=c_n, dx=dx, dh0=dh0, dc0=dc0, **variant.gradients(params, d))

    results = {n: run(n) for n in (1, 2, 3)}
    for n, result in results.items():
        np.testing.assert_allclose(result["out"], ref_out, **tol, err_msg=f"{n} threads")
        np.testing.assert_allclose(result["c_n"], ref_c, **tol, err_msg=f"{n} threads")
        again = run(n)
        for key, value in result.items():
            np.testing.assert_array_equal(again[key], value, err_msg=f"{n} threads, {key}: not reproducible")
            np.testing.assert_allclose(value, results[1][key], **tol, err_msg=f"{n} vs 1 threads, {key}")


def test_whole_rows_team_is_capped_by_the_batch():
    assert _driver.team_size(10 ** 9, 512, batch=1, whole_rows=True) == 1
    assert _driver.team_size(10 ** 9, 512, batch=1, whole_rows=False) > 1 or _driver.blas_threads() <= 1


def test_parameters_and_option():
    variant = lstmcore.get_variant("lnlstm")
    assert variant.parameter_count(88, 100) == 4 * 100 * (88 + 100) + 14 * 100
    params = variant.init_parameters(3, 4, np.random.default_rng(0))
    assert (params["gain_x"] == 1).all() and (params["gain_c"] == 1).all() and (params["bias_c"] == 0).all()
    with pytest.raises(TypeError, match="carry_normalised_cell"):
        lstmcore.LSTM(3, 4, variant="lnlstm", carry_normalised_cell="yes")
    with pytest.raises(TypeError, match="unknown option"):
        lstmcore.LSTM(3, 4, variant="lnlstm", clip=1.0)


@pytest.mark.slow
def test_lstmcore_ablate_runs_the_new_cells(tmp_path):
    """``lstmcore ablate --variants`` accepts lnlstm and slstm and trains each (one quick trial, a real worker)."""
    import json
    import subprocess
    import sys

    out = tmp_path / "study"
    done = subprocess.run([sys.executable, "-m", "lstmcore", "ablate", "--variants", "vanilla,lnlstm,slstm", "--quick",
                           "--trials", "1", "--epochs", "1", "--jobs", "1", "--threads", "1", "--quiet",
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "3 of 3 planned trials complete, 0 failed" in done.stdout + done.stderr
    assert list(json.loads((out / "study.json").read_text())["variants"]) == ["vanilla", "lnlstm", "slstm"]
