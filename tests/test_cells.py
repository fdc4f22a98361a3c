"""The compiled cells of the LSTM family beyond the gated spec (``lstmcore.cells``: gru, mgu, janet): each against a
NumPy reference of its docstring's equations (float64 and float32, both directions, ragged lengths with 0), gradient-
checked in float64 for every parameter entry, the input and the initial state (2 layers, bidirectional, lengths with
0), run on 1, 2 and 3 threads, and through the conformance kit."""
from __future__ import annotations

import numpy as np
import pytest

import lstmcore
from cell_gradcheck import gradcheck
from lstmcore.testing import CHECKS, assert_conforms

ACTS = {
    "sigmoid": lambda v, a, b: 1 / (1 + np.exp(-v)),
    "tanh": lambda v, a, b: np.tanh(v),
    "identity": lambda v, a, b: v,
    "relu": lambda v, a, b: np.maximum(v, 0),
    "hard_sigmoid": lambda v, a, b: np.clip(a * v + b, 0, 1),
    "softsign": lambda v, a, b: v / (1 + np.abs(v)),
}


def _act(activation):
    return lambda v: ACTS[activation.name](v, activation.alpha, activation.beta)


# -- NumPy references: one unit of one sequence at a time, in float64, straight from the docstrings ------------------
def gru_step(cell, p, x, h):
    sigma, g = _act(cell.gate_activation), _act(cell.input_activation)
    H = h.size
    W, R, b = p["W"], p["R"], p["b"]
    z = sigma(W[:H] @ x + R[:H] @ h + b[:H])
    r = sigma(W[H:2 * H] @ x + R[H:2 * H] @ h + b[H:2 * H])
    if cell.linear_before_reset:
        n = g(W[2 * H:] @ x + b[2 * H:] + r * (R[2 * H:] @ h + p["b_rn"]))
    else:
        n = g(W[2 * H:] @ x + R[2 * H:] @ (r * h) + b[2 * H:])
    return (1 - z) * n + z * h


def mgu_step(cell, p, x, h):
    sigma, g = _act(cell.gate_activation), _act(cell.input_activation)
    H = h.size
    W, R, b = p["W"], p["R"], p["b"]
    f = sigma(W[:H] @ x + R[:H] @ h + b[:H])
    n = g(W[H:] @ x + R[H:] @ (f * h) + b[H:])
    return (1 - f) * h + f * n


def janet_step(cell, p, x, h):
    sigma, g = _act(cell.gate_activation), _act(cell.input_activation)
    H = h.size
    W, R, b = p["W"], p["R"], p["b"]
    s = W[:H] @ x + R[:H] @ h + b[:H]
    c_tilde = W[H:] @ x + R[H:] @ h + b[H:]
    return sigma(s) * h + (1 - sigma(s - cell.beta)) * g(c_tilde)


STEPS = {"gru": gru_step, "mgu": mgu_step, "janet": janet_step}


def reference(name, cell, params, x, h0, lengths, reverse):
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x, h0 = np.asarray(x, np.float64), np.asarray(h0, np.float64)
    T, B, _ = x.shape
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    out, h_n = np.zeros((T, B, h0.shape[1])), h0.copy()
    for r in range(B):
        h = h0[r].copy()
        for t in (range(lengths[r] - 1, -1, -1) if reverse else range(lengths[r])):
            h = out[t, r] = STEPS[name](cell, p, x[t, r], h)
        h_n[r] = h
    return out, h_n


#: (variant, options) cases: the defaults and every option with kinks or shifts
CASES = [
    ("gru", {}),
    ("gru", dict(linear_before_reset=False)),
    ("gru", dict(gate_activation=("hard_sigmoid", 0.3, 0.45), input_activation="softsign")),
    ("gru", dict(linear_before_reset=False, input_activation="relu")),
    ("mgu", {}),
    ("mgu", dict(gate_activation=("hard_sigmoid", 0.25, 0.5), input_activation="softsign")),
    ("janet", {}),
    ("janet", dict(beta=-0.7)),
    ("janet", dict(beta=2.5, gate_activation="softsign", input_activation="relu")),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in opts.items()) for name, opts in CASES]


def _cell(name, options):
    return lstmcore.get_variant(name).with_options(**options)


def _params(cell, I, H, rng, dtype, scale=2.0):
    return {k: (v * scale).astype(dtype) for k, v in cell.init_parameters(I, H, rng, dtype).items()}


@pytest.mark.parametrize("lengths", [None, [6, 0, 3, 1]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name, options", CASES, ids=IDS)
def test_forward_matches_numpy_reference(name, options, dtype, reverse, lengths):
    cell = _cell(name, options)
    rng = np.random.default_rng(7)
    T, B, I, H = 6, 4, 3, 5
    params = _params(cell, I, H, rng, dtype)  # away from the gates' linear regime
    x = rng.normal(size=(T, B, I)).astype(dtype)
    h0 = rng.normal(size=(B, H)).astype(dtype)
    lens = None if lengths is None else np.asarray(lengths, np.int32)
    layer_out = np.full((T, B, 2 * H), np.nan, dtype)  # the layer hands over a strided view of its output
    out = layer_out[:, :, H:]
    (h_n,), _ = cell.forward(params, x, (h0,), lens, reverse, out)
    ref_out, ref_h = reference(name, cell, params, x, h0, lens, reverse)
    scale = max(1.0, np.abs(ref_out).max())  # float32 cancels against the largest values of the sequence
    tol = dict(rtol=1e-12, atol=1e-13 * scale) if dtype == np.float64 else dict(rtol=2e-5, atol=4e-6 * scale)
    assert h_n.dtype == dtype
    np.testing.assert_allclose(out, ref_out, **tol)
    np.testing.assert_allclose(h_n, ref_h, **tol)
    assert np.isnan(layer_out[:, :, :H]).all(), "the kernel wrote outside its direction's columns"
    if lens is not None:
        np.testing.assert_array_equal(h_n[lens == 0], h0[lens == 0])


@pytest.mark.parametrize("name, options", CASES, ids=IDS)
def test_gradients_match_finite_differences(name, options):
    """Every parameter entry of a 2-layer bidirectional stack, x and h0, with a padded batch (lengths 5, 0, 2)."""
    layer = lstmcore.LSTM(3, 4, variant=name, num_layers=2, bidirectional=True, dtype=np.float64, seed=3, **options)
    rng = np.random.default_rng(11)
    for value in layer.params.values():
        value[...] = rng.normal(scale=0.6, size=value.shape)
    gradcheck(layer, lengths=[5, 0, 2], seed=11)


@pytest.mark.parametrize("name, options", CASES, ids=IDS)
def test_conformance_kit(name, options):
    report = assert_conforms(_cell(name, options))
    assert report.ok and report.names == list(CHECKS)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name, options", [CASES[0], CASES[1], CASES[4], CASES[6]], ids=[IDS[0], IDS[1], IDS[4], IDS[6]])
def test_every_team_size(name, options, dtype):
    """On 1, 2 and 3 threads each agrees with the NumPy reference (forward) and with the others (gradients, to
    summation tolerance), and repeats itself bit for bit."""
    from cell_checks import check_team_sizes

    cell = _cell(name, options)

    def ref(params, x, h0, lengths):
        return reference(name, cell, params, x, h0, lengths, True)[0]

    check_team_sizes(cell, ref, dtype, grad_tol=dict(rtol=1e-10, atol=1e-11) if dtype == np.float64
                     else dict(rtol=1e-4, atol=1e-5))


@pytest.mark.parametrize("name, count", [
    ("gru", lambda I, H: 3 * H * (I + H) + 4 * H),
    ("mgu", lambda I, H: 2 * H * (I + H) + 2 * H),
    ("janet", lambda I, H: 2 * H * (I + H) + 2 * H),
])
def test_registered_as_builtins_with_their_parameter_count(name, count, capsys):
    from lstmcore import cli
    from lstmcore.plugins import BUILTIN_SOURCE, registry

    cell = lstmcore.get_variant(name)
    assert registry.source(name) == BUILTIN_SOURCE and cell.compiled and cell.state_names == ("h",)
    assert cell.parameter_count(7, 5) == count(7, 5)
    assert cli.main(["variants", "--input-size", "3", "--hidden-size", "4"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(name + " "))
    assert BUILTIN_SOURCE in row and f" {count(3, 4)} " in row
    assert cli.main(["variants", "--show", name]) == 0
    shown = capsys.readouterr().out
    assert "h_t" in shown and type(cell).__doc__.split("\n")[0].strip() in shown  # the equations, from the docstring


def test_gru_without_linear_before_reset_has_no_b_rn():
    cell = lstmcore.get_variant("gru").with_options(linear_before_reset=False)
    assert set(cell.parameter_shapes(3, 4)) == {"W", "R", "b"} and cell.parameter_count(3, 4) == 3 * 4 * 7 + 12


@pytest.mark.parametrize("name, options, error, match", [
    ("gru", dict(linear_before_reset=1), TypeError, "linear_before_reset must be True or False"),
    ("gru", dict(clip=1.0), TypeError, "unknown option.*clip.*linear_before_reset"),
    ("janet", dict(beta=float("nan")), ValueError, "beta must be a finite number"),
    ("janet", dict(beta="1"), TypeError, "beta must be a finite number"),
    ("mgu", dict(gate_activation="swish"), ValueError, "unknown gate_activation 'swish'"),
    ("mgu", dict(beta=1.0), TypeError, "unknown option.*beta"),
])
def test_bad_options_are_named(name, options, error, match):
    with pytest.raises(error, match=match):
        lstmcore.LSTM(3, 4, variant=name, **options)


def test_janet_beta_opens_the_input_gate():
    """The input gate is 1 - sigma(s - beta): beta = 0 couples it to the forget gate (their sum is 1), a larger beta
    lets the cell keep and write at once. From a zero state the first step holds only what the input gate let in."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 2, 3))
    first = {}
    for beta in (0.0, 1.0, 3.0):
        layer = lstmcore.LSTM(3, 4, variant="janet", beta=beta, dtype=np.float64, seed=2)
        first[beta], _ = layer(x)
    assert np.all(np.abs(first[0.0]) < np.abs(first[1.0])) and np.all(np.abs(first[1.0]) < np.abs(first[3.0]))


def test_the_family_group_runs_as_a_study(tmp_path):
    """``--variants family`` expands to the group (vanilla, the baseline, first), and a tiny study trains the cells
    with one state through the training loop and the coordinator."""
    from lstmcore.ablation.config import StudyConfig
    from lstmcore.ablation.storage import load_study, trial_rows
    from lstmcore.ablation.study import run_study

    family = lstmcore.get_group("family")
    assert family[0] == "vanilla" and {"peephole", "gru", "mgu", "janet"} <= set(family)
    config = StudyConfig.from_tables({"study": {"variants": "family", "baseline": "vanilla"}})
    assert config.variants == family and config.baseline == "vanilla"
    config = StudyConfig.from_tables({
        "study": {"variants": "vanilla,gru,mgu,janet", "dataset": "adding", "trials": 1, "seed": 3},
        "dataset": {"length": 10, "n_train": 64, "n_valid": 32, "n_test": 32},
        "training": {"batch_size": 8, "max_epochs": 2},
        "space": {"hidden_size": {"distribution": "fixed", "value": 6}}})
    run_study(config, tmp_path, jobs=1, blas_threads=1, quiet=True)
    rows = {r["variant"]: r for r in trial_rows(load_study(tmp_path))}
    assert set(rows) == {"vanilla", "gru", "mgu", "janet"}
    for name, row in rows.items():
        assert row["state"] == "COMPLETE" and np.isfinite(row["test"]), (name, row)
    assert rows["gru"]["parameter_count"] < rows["vanilla"]["parameter_count"]


@pytest.mark.parametrize("config", ["family_long_range.toml", "family_jsb.toml"])
def test_the_family_study_configs_load(config):
    from pathlib import Path

    from lstmcore.ablation.config import StudyConfig, load_toml

    path = Path(__file__).resolve().parents[1] / "examples" / "ablation" / config
    study = StudyConfig.from_tables(load_toml(path))
    assert study.variants == lstmcore.get_group("family") and study.baseline == "vanilla"
    if study.dataset == "adding":
        assert study.dataset_options["length"] >= 200  # a long-range task
