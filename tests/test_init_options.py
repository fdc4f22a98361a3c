"""Initialisation options of ``lstmcore.LSTM``: ``forget_bias`` (Jozefowicz et al. 2015) and ``chrono_init``
(Tallec & Ollivier 2018), their errors, and both as [model] options and [space] dimensions of a study."""
from __future__ import annotations

import numpy as np
import pytest

import lstmcore
from lstmcore.ablation.config import ConfigError, StudyConfig


def _block(layer, key, gate):
    cell, H = layer.cells[0], layer.hidden_size
    k = cell.gate_blocks.index(gate)
    return layer.params[key][k * H:(k + 1) * H]


def test_forget_bias_sets_the_forget_gate_only():
    plain = lstmcore.LSTM(3, 5, seed=1, num_layers=2, bidirectional=True)
    layer = lstmcore.LSTM(3, 5, seed=1, num_layers=2, bidirectional=True, forget_bias=1.0)
    for key in ("b_l0", "b_l1_reverse"):
        np.testing.assert_array_equal(_block(layer, key, "f"), 1.0)
        for gate in "ioz":
            np.testing.assert_array_equal(_block(layer, key, gate), _block(plain, key, gate))
    np.testing.assert_array_equal(layer.params["W_l0"], plain.params["W_l0"])  # the rest as without the option


def test_coupled_forget_bias_is_minus_the_input_bias():
    layer = lstmcore.LSTM(3, 5, variant="coupled", forget_bias=2.0, dtype=np.float64)
    np.testing.assert_array_equal(_block(layer, "b_l0", "i"), -2.0)  # f = 1 - sigma(i_bar) = sigma(2) at x = h = 0
    layer.params["W_l0"][:] = 0
    layer.params["R_l0"][:] = 0
    _block(layer, "b_l0", "z")[:] = 0  # z = tanh(0) = 0: c = f c_0
    layer.params.get("p_l0", np.zeros(1))[:] = 0  # coupled has peepholes (the paper's CIFG)
    _, (_, c) = layer(np.zeros((1, 1, 3)), (np.zeros((1, 1, 5)), np.ones((1, 1, 5))))
    f = 1 / (1 + np.exp(-2.0))
    np.testing.assert_allclose(c[0, 0], f, rtol=1e-12)


def test_chrono_init():
    layer = lstmcore.LSTM(3, 400, chrono_init=50, seed=2, num_layers=2)
    for key in ("b_l0", "b_l1"):
        b_f, b_i = _block(layer, key, "f"), _block(layer, key, "i")
        assert np.all(b_f >= 0) and np.all(b_f <= np.log(49) + 1e-6) and b_f.std() > 0.3
        np.testing.assert_array_equal(b_i, -b_f)
    np.testing.assert_array_equal(lstmcore.LSTM(3, 400, chrono_init=50, seed=2).params["b_l0"],
                                  lstmcore.LSTM(3, 400, chrono_init=50, seed=2).params["b_l0"])  # seeded
    nig = lstmcore.LSTM(3, 4, variant="nig", chrono_init=10)  # no input gate: b_f only
    assert np.all(_block(nig, "b_l0", "f") >= 0)


@pytest.mark.parametrize("options, error, match", [
    (dict(forget_bias="1"), TypeError, "forget_bias"),
    (dict(forget_bias=float("nan")), ValueError, "forget_bias"),
    (dict(chrono_init=2), ValueError, "chrono_init"),
    (dict(chrono_init=True), TypeError, "chrono_init"),
    (dict(forget_bias=1, chrono_init=10), ValueError, "forget_bias and chrono_init"),
    (dict(variant="nfg", forget_bias=1), ValueError, "forget_bias: variant 'nfg' has no forget gate"),
    (dict(variant="nfg", chrono_init=10), ValueError, "chrono_init: variant 'nfg' has no forget gate"),
])
def test_bad_init_options(options, error, match):
    with pytest.raises(error, match=match):
        lstmcore.LSTM(3, 4, **options)


def test_sequence_model_keeps_the_options(tmp_path):
    from lstmcore.training import SequenceModel, load_checkpoint, save_checkpoint

    model = SequenceModel(3, 4, 2, forget_bias=1.0, seed=0)
    assert model.config()["variant_options"] == {"forget_bias": 1.0}
    save_checkpoint(model, tmp_path / "m.npz")
    again = load_checkpoint(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.params["b_l0"], model.params["b_l0"])


def test_study_config_model_and_space():
    config = StudyConfig.from_tables({"study": {"variants": ["vanilla"]}, "model": {"forget_bias": 1.0}})
    assert config.model["forget_bias"] == 1.0
    config = StudyConfig.from_tables({"study": {"variants": ["vanilla"]},
                                      "space": {"chrono_init": {"distribution": "log_uniform", "low": 3, "high": 100}}})
    assert config.space.dimensions["chrono_init"].searched
    with pytest.raises(ConfigError, match="chrono_init"):
        StudyConfig.from_tables({"study": {"variants": ["vanilla"]},
                                 "space": {"chrono_init": {"distribution": "uniform", "low": 1, "high": 100}}})
    with pytest.raises(ConfigError, match="forget_bias"):
        StudyConfig.from_tables({"study": {"variants": ["vanilla"]}, "model": {"forget_bias": "one"}})
    with pytest.raises(ConfigError, match=r"both in \[model\] and in \[space\]"):
        StudyConfig.from_tables({"study": {"variants": ["vanilla"]}, "model": {"forget_bias": 1.0},
                                 "space": {"forget_bias": {"distribution": "uniform", "low": 0, "high": 2}}})


def test_a_trial_builds_the_searched_option():
    from lstmcore.ablation.trial import check_trial_setup

    config = StudyConfig.from_tables({"study": {"variants": ["nfg"], "dataset": "adding"},
                                      "dataset": {"length": 10, "n_train": 20, "n_valid": 10, "n_test": 10},
                                      "space": {"forget_bias": {"distribution": "uniform", "low": 0, "high": 2}}})
    with pytest.raises(ConfigError, match="forget_bias: variant 'nfg' has no forget gate"):
        check_trial_setup(config)
