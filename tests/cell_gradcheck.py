"""Central finite differences (float64) of EVERY parameter entry, of x and of every initial state, against
``layer.backward``, for a random linear loss on the output and the final states: shared by the gradient checks of
every cell (tests/test_gradcheck.py and the cells' own test files)."""
import numpy as np

import lstmcore
from lstmcore.testing import numerical_gradient


def gradcheck(layer, T=5, B=3, lengths=None, seed=0, rtol=1e-5, atol=1e-7, initial_state=None, call=None):
    """Compare ``layer.backward`` with finite differences for every parameter entry, x and each initial state
    (``initial_state(rng, shape)`` draws one state array of the layer's states, standard normal by default; ``call``
    runs the forward, by default ``layer`` itself)."""
    call = call or layer
    assert layer.dtype == np.float64
    rng = np.random.default_rng(seed)
    D = 2 if layer.bidirectional else 1
    LD, H = layer.num_layers * D, layer.hidden_size
    x = rng.normal(size=(B, T, layer.input_size) if layer.batch_first else (T, B, layer.input_size))
    draw = initial_state or (lambda rng, shape, name: rng.normal(size=shape))
    names = layer.cells[0].state_names
    state = tuple(draw(rng, (LD, B, layer.output_width if name == "h" else H), name) for name in names)  # h: proj_size
    out, finals = call(x, state, lengths=lengths)
    a_out = rng.normal(size=out.shape)
    a_finals = tuple(rng.normal(size=f.shape) for f in finals)

    def loss():
        out, finals = call(x, state, lengths=lengths)
        return np.sum(a_out * out) + sum(np.sum(a * f) for a, f in zip(a_finals, finals))

    loss()
    d_x = layer.backward(a_out, *a_finals)
    analytic = {name: g.copy() for name, g in layer.grads.items()}
    initial = [f"{n}0" for n in names]
    analytic.update(x=d_x.copy(), **{k: g.copy() for k, g in zip(initial, layer.state_grads)})
    targets = dict(layer.params, x=x, **dict(zip(initial, state)))
    assert set(targets) == set(analytic)
    for name, array in targets.items():
        numeric = numerical_gradient(loss, array)
        np.testing.assert_allclose(analytic[name], numeric, rtol=rtol, atol=atol,
                                   err_msg=f"gradient of {name} ({layer!r}, lengths={lengths})")
        if name in layer.params:
            assert np.abs(numeric).max() > 1e-6, f"{name}: the loss does not depend on it, the check is empty"


def randomised_layer(variant, seed=0, scale=0.5, **kwargs):
    """A float64 layer (I=3, H=4) whose parameters are all redrawn N(init, scale^2), so that no gain is exactly 1."""
    layer = lstmcore.LSTM(3, 4, variant=variant, dtype=np.float64, seed=seed, **kwargs)
    rng = np.random.default_rng(seed + 1)
    for value in layer.params.values():
        value[...] += rng.normal(scale=scale, size=value.shape)
    return layer
