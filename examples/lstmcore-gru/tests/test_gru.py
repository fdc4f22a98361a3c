"""The plugin's own tests: lstmcore's conformance kit, as any variant author would run it.

    pip install -e . && pytest tests        (or, without installing: PYTHONPATH=src pytest tests)
"""
import numpy as np
import pytest

import lstmcore
from lstmcore.testing import assert_conforms
from lstmcore_gru import GRU, from_onnx_gru


@pytest.mark.parametrize("linear_before_reset", [False, True])
def test_conforms(linear_before_reset):
    assert_conforms(GRU(linear_before_reset=linear_before_reset))


def test_conforms_at_other_sizes():
    assert_conforms(GRU(), input_size=1, hidden_size=2, steps=7, batch=2, seed=3, checks=["gradient", "lengths"])


def test_onnx_layout_is_ours():
    rng = np.random.default_rng(0)
    W, R, B = rng.normal(size=(1, 9, 2)), rng.normal(size=(1, 9, 3)), rng.normal(size=(1, 18))
    layer = from_onnx_gru(W, R, B, hidden_size=3)
    np.testing.assert_array_equal(layer.params["W_l0"], W[0])
    np.testing.assert_array_equal(layer.params["Wb_l0"], B[0, :9])
    np.testing.assert_array_equal(layer.params["Rb_l0"], B[0, 9:])
    output, (h_n,) = layer(rng.normal(size=(4, 2, 2)))
    np.testing.assert_array_equal(output[-1], h_n[0])
    assert isinstance(layer, lstmcore.LSTM)
