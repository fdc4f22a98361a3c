"""Zoneout (Krueger et al. 2016) and recurrent dropout (Gal & Ghahramani 2016) of ``lstmcore.LSTM``: the compiled
step against a NumPy reference of the equations, with the same masks; finite differences with the masks fixed;
evaluation without random masks; seeding; errors."""
from __future__ import annotations

import numpy as np
import pytest

import lstmcore
from cell_gradcheck import gradcheck
from test_gradcheck import make_layer


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def reference(layer, x, masks, lengths):
    """One forward direction of a vanilla layer in NumPy, with the layer's step masks [d_h, d_c, m]."""
    p, H = layer.params, layer.hidden_size
    T, B, _ = x.shape
    h, c, out = np.zeros((B, H)), np.zeros((B, H)), np.zeros((T, B, H))
    zone, drop = layer.zoneout is not None, layer.recurrent_dropout is not None
    m = masks[0, :, (2 if zone else 0) * H:][:, :H] if drop else 1
    for t in range(T):
        pre = x[t] @ p["W_l0"].T + (m * h) @ p["R_l0"].T + p["b_l0"]
        i, f, o, z = (pre[:, k * H:(k + 1) * H] for k in range(4))
        c_new = np.tanh(z) * _sigmoid(i) + c * _sigmoid(f)
        h_new = np.tanh(c_new) * _sigmoid(o)
        if zone:
            d_h, d_c = masks[t, :, :H], masks[t, :, H:2 * H]
            c_new, h_new = c_new + d_c * (c - c_new), h_new + d_h * (h - h_new)
        real = (t < np.asarray(lengths))[:, None]
        h, c = np.where(real, h_new, h), np.where(real, c_new, c)
        out[t] = np.where(real, h_new, 0)
    return out, h, c


def _layer(**options):
    layer = lstmcore.LSTM(3, 5, dtype=np.float64, seed=0, **options)
    rng = np.random.default_rng(1)
    for value in layer.params.values():
        value[...] = rng.normal(scale=0.6, size=value.shape)
    return layer


OPTIONS = [dict(zoneout=(0.3, 0.6)), dict(recurrent_dropout=0.4), dict(zoneout=0.5, recurrent_dropout=0.3)]


@pytest.mark.parametrize("options", OPTIONS, ids=["zoneout", "dropout", "both"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_matches_the_equations(options, training):
    layer = _layer(**options)
    x, lengths = np.random.default_rng(2).normal(size=(6, 4, 3)), [6, 0, 3, 5]
    seed = np.random.default_rng(9)
    layer.mask_rng = np.random.default_rng(9)
    masks = layer._step_masks(6, 4, training)[0][0]
    layer.mask_rng = seed
    out, (h_n, c_n) = layer(x, lengths=lengths, training=training)
    ref_out, ref_h, ref_c = reference(layer, x, masks, lengths)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h_n[0], ref_h, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c_n[0], ref_c, rtol=1e-12, atol=1e-13)
    if training:
        H = 5
        if "zoneout" in options:
            assert set(np.unique(masks[:, :, :2 * H])) == {0.0, 1.0}
        if "recurrent_dropout" in options:
            kept = masks[:, :, -H:]
            assert np.all(kept == kept[0]) and set(np.unique(kept)) == {0.0, 1 / (1 - options["recurrent_dropout"])}
    else:
        plain = _layer()
        plain_out = plain(x, lengths=lengths)[0]
        if "zoneout" not in options:  # evaluation without zoneout: recurrent dropout is off
            np.testing.assert_allclose(out, plain_out, rtol=1e-12)


def _fixed_masks(layer, seed=7):
    def call(*args, **kwargs):
        layer.mask_rng = np.random.default_rng(seed)  # the same masks at every forward of the check
        return layer(*args, training=True, **kwargs)
    return call


@pytest.mark.parametrize("options", OPTIONS, ids=["zoneout", "dropout", "both"])
@pytest.mark.parametrize("variant", ["vanilla", "peephole", "coupled", "fgr"])
def test_gradcheck_with_fixed_masks(variant, options):
    layer = make_layer(variant, num_layers=2, bidirectional=True, **options)
    gradcheck(layer, lengths=[5, 0, 2], call=_fixed_masks(layer))


def test_gradcheck_zoneout_clip_evaluation():
    layer = make_layer("nig", zoneout=(0.2, 0.7), clip=0.8, batch_first=True)
    gradcheck(layer, lengths=[4, 5, 1])  # evaluation: the expectation


def test_training_masks_are_seeded_and_fresh():
    x = np.random.default_rng(3).normal(size=(8, 2, 3))
    a, b = _layer(zoneout=0.5), _layer(zoneout=0.5)
    first = a(x, training=True)[0]
    np.testing.assert_array_equal(first, b(x, training=True)[0])  # the same seed, the same masks
    assert not np.array_equal(first, a(x, training=True)[0])      # the next forward draws new ones
    np.testing.assert_array_equal(a(x)[0], a(x)[0])               # evaluation is deterministic


def test_sequence_model_trains_with_masks():
    from lstmcore.training import SequenceModel

    model = SequenceModel(3, 6, 2, zoneout=0.2, recurrent_dropout=0.2, output="linear", seed=0, dtype=np.float64)
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(4, 7, 3)), rng.normal(size=(4, 7, 2))
    model.loss_and_gradients(x, y)
    assert model.grads["R_l0"].any()
    np.testing.assert_array_equal(model.predict(x), model.predict(x))


@pytest.mark.parametrize("options, error, match", [
    (dict(zoneout=1.0), ValueError, "zoneout"), (dict(zoneout=-0.1), ValueError, "zoneout"),
    (dict(zoneout=(0.1, 0.2, 0.3)), ValueError, "zoneout"), (dict(zoneout="0.1"), TypeError, "zoneout"),
    (dict(recurrent_dropout=1), ValueError, "recurrent_dropout"),
    (dict(recurrent_dropout=0.1, proj_size=2), ValueError, "proj_size"),
])
def test_bad_options(options, error, match):
    with pytest.raises(error, match=match):
        lstmcore.LSTM(3, 4, **options)


def test_non_gated_variant_refuses():
    from test_projection import NotGated

    with pytest.raises(ValueError, match="zoneout: variant 'plain-test'"):
        lstmcore.LSTM(3, 4, variant=NotGated(), zoneout=0.1)
    with pytest.raises(ValueError, match="recurrent_dropout: variant 'plain-test'"):
        lstmcore.LSTM(3, 4, variant=NotGated(), recurrent_dropout=0.1)


def test_rates_of_zero_are_off():
    layer = lstmcore.LSTM(3, 4, zoneout=0, recurrent_dropout=0.0)
    assert layer.zoneout is None and layer.recurrent_dropout is None and not layer.cells[0].zoneout


def test_study_searches_them():
    from lstmcore.ablation.config import ConfigError, StudyConfig

    config = StudyConfig.from_tables({"study": {"variants": ["vanilla"]}, "model": {"recurrent_dropout": 0.25},
                                      "space": {"zoneout": {"distribution": "uniform", "low": 0, "high": 0.5}}})
    assert config.model["recurrent_dropout"] == 0.25 and config.space.dimensions["zoneout"].searched
    with pytest.raises(ConfigError, match="zoneout"):
        StudyConfig.from_tables({"study": {"variants": ["vanilla"]},
                                 "space": {"zoneout": {"distribution": "uniform", "low": 0, "high": 1.5}}})
    with pytest.raises(ConfigError, match="recurrent_dropout"):
        StudyConfig.from_tables({"study": {"variants": ["vanilla"]}, "model": {"recurrent_dropout": 1}})


def test_a_trial_trains_with_them():
    from lstmcore.ablation.config import StudyConfig
    from lstmcore.ablation.plan import make_plan
    from lstmcore.ablation.trial import make_task, run_trial

    config = StudyConfig.from_tables({
        "study": {"variants": ["vanilla"], "dataset": "adding", "trials": 1},
        "dataset": {"length": 8, "n_train": 16, "n_valid": 8, "n_test": 8},
        "training": {"max_epochs": 1, "batch_size": 8},
        "model": {"zoneout": 0.1},
        "space": {"recurrent_dropout": {"distribution": "uniform", "low": 0.1, "high": 0.3},
                  "hidden_size": {"distribution": "fixed", "value": 4}}})
    planned = make_plan(config)[0]
    assert 0.1 <= planned.hyperparameters["recurrent_dropout"] <= 0.3
    result = run_trial(make_task(config, planned, 1))
    assert result["state"] == "COMPLETE", result.get("reason")
