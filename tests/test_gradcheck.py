"""Central finite differences (float64) of EVERY parameter entry, of x and of the initial state, against
``layer.backward``, for a random linear loss on the output, h_n and c_n."""
import numpy as np
import pytest

import lstmcore
from variant_names import GATED_VARIANTS
from cell_gradcheck import gradcheck

VARIANTS = GATED_VARIANTS

ACTIVATION_SETS = {
    "default": {},
    "hsig_relu_softsign": dict(gate_activation=("hard_sigmoid", 0.3, 0.45), input_activation="relu",
                               output_activation="softsign"),
    "softsign_identity_hsig": dict(gate_activation="softsign", input_activation="identity",
                                   output_activation="hard_sigmoid"),
}

CONFIGS = {
    "plain": dict(layer={}, lengths=None),
    "lengths": dict(layer={}, lengths=[5, 0, 2]),
    "stacked_bidirectional": dict(layer=dict(num_layers=2, bidirectional=True), lengths=[3, 5, 1]),
}


def make_layer(variant, seed=0, **kwargs):
    layer = lstmcore.LSTM(3, 4, variant=variant, dtype=np.float64, seed=seed, **kwargs)
    rng = np.random.default_rng(seed + 1)
    for value in layer.params.values():
        value[...] = rng.normal(scale=0.5, size=value.shape)
    return layer


def _exhaustive(config: str, acts: str):
    """The stacked bidirectional layer with the non-default activations: the most expensive third of the grid, in the
    slow tier (every variant still gets the stacked layer with default activations, and every activation set the
    single layer, in the fast one)."""
    slow = config == "stacked_bidirectional" and acts != "default"
    return pytest.param(acts, config, marks=[pytest.mark.slow] if slow else [], id=f"{acts}-{config}")


@pytest.mark.parametrize("acts,config", [_exhaustive(c, a) for a in ACTIVATION_SETS for c in CONFIGS])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck(variant, acts, config):
    cfg = CONFIGS[config]
    layer = make_layer(variant, **ACTIVATION_SETS[acts], **cfg["layer"])
    gradcheck(layer, lengths=cfg["lengths"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_clip(variant):
    layer = make_layer(variant, clip=0.6, bidirectional=True, batch_first=True)
    gradcheck(layer, lengths=[4, 5, 0])


def test_gradcheck_reverse_options_batch_of_one():
    layer = make_layer("coupled", bidirectional=True, gate_activation="hard_sigmoid",
                       reverse_options=dict(gate_activation="sigmoid", input_activation="softsign", clip=1.0))
    gradcheck(layer, B=1)


def test_gradcheck_detects_a_wrong_gradient():
    """The helper can fail: corrupt one gradient entry after backward and expect an assertion error."""
    layer = make_layer("peephole")
    original = layer.backward

    def corrupted(*args, **kwargs):
        d_x = original(*args, **kwargs)
        layer.grads["p_l0"][2] += 1e-4
        return d_x

    layer.backward = corrupted
    with pytest.raises(AssertionError, match="p_l0"):
        gradcheck(layer)
