"""Central finite differences (float64) of EVERY parameter entry, of x and of the initial state, against
``layer.backward``, for a random linear loss on the output, h_n and c_n."""
import numpy as np
import pytest

import lstmcore
from variant_names import BUILTIN_VARIANTS
from lstmcore.testing import numerical_gradient

VARIANTS = BUILTIN_VARIANTS

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


def gradcheck(layer, T=5, B=3, lengths=None, seed=0, rtol=1e-5, atol=1e-7):
    """Compare ``layer.backward`` with finite differences for every parameter entry, x, h0 and c0."""
    assert layer.dtype == np.float64
    rng = np.random.default_rng(seed)
    D = 2 if layer.bidirectional else 1
    LD, H = layer.num_layers * D, layer.hidden_size
    x = rng.normal(size=(B, T, layer.input_size) if layer.batch_first else (T, B, layer.input_size))
    h0, c0 = rng.normal(size=(LD, B, layer.output_width)), rng.normal(size=(LD, B, H))  # h: proj_size wide
    out, (h_n, c_n) = layer(x, (h0, c0), lengths=lengths)
    a_out, a_h, a_c = rng.normal(size=out.shape), rng.normal(size=h_n.shape), rng.normal(size=c_n.shape)

    def loss():
        out, (h_n, c_n) = layer(x, (h0, c0), lengths=lengths)
        return np.sum(a_out * out) + np.sum(a_h * h_n) + np.sum(a_c * c_n)

    loss()
    d_x = layer.backward(a_out, a_h, a_c)
    analytic = {name: g.copy() for name, g in layer.grads.items()}
    analytic.update(x=d_x.copy(), h0=layer.state_grads[0].copy(), c0=layer.state_grads[1].copy())
    targets = dict(layer.params, x=x, h0=h0, c0=c0)
    assert set(targets) == set(analytic)
    for name, array in targets.items():
        numeric = numerical_gradient(loss, array)
        np.testing.assert_allclose(analytic[name], numeric, rtol=rtol, atol=atol,
                                   err_msg=f"gradient of {name} ({layer!r}, lengths={lengths})")
        if name not in ("x", "h0", "c0"):
            assert np.abs(numeric).max() > 1e-6, f"{name}: the loss does not depend on it, the check is empty"


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
