"""The compiled kernels agree with the independent NumPy reference (tests/numpy_reference.py): outputs, final states and
every gradient, in float64 (to ~1e-10) and float32 (to ~1e-5 relative), for every registered variant and option."""
import numpy as np
import pytest

import lstmcore
from variant_names import GATED_VARIANTS
import numpy_reference
from lstmcore._kernels import _driver
from numpy_reference import (activation, reference_backward, reference_forward, reference_layer,
                             reference_layer_backward)

VARIANTS = GATED_VARIANTS

ACTIVATION_SETS = {
    "default": {},
    "hsig_relu_softsign": dict(gate_activation=("hard_sigmoid", 0.3, 0.45), input_activation="relu",
                               output_activation="softsign"),
    "softsign_identity_tanh": dict(gate_activation="softsign", input_activation="identity", output_activation="tanh"),
    "hsig_softsign_identity": dict(gate_activation="hard_sigmoid", input_activation="softsign",
                                   output_activation="identity"),
    "relu_tanh_hsig": dict(gate_activation="relu", input_activation="tanh",
                           output_activation=("hard_sigmoid", 0.25, 0.4)),
    "sigmoid_sigmoid_relu": dict(gate_activation="sigmoid", input_activation="sigmoid", output_activation="relu"),
    "identity_tanh_sigmoid": dict(gate_activation="identity", input_activation="tanh", output_activation="sigmoid"),
    "tanh_hsig_tanh": dict(gate_activation="tanh", input_activation=("hard_sigmoid", 0.5, 0.1)),
}

TOL = {np.float64: 1e-10, np.float32: 1e-5}


def assert_close(actual, expected, dtype, what):
    """Relative to the array's magnitude (at least 1)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype}, expected {np.dtype(dtype)}"
    tol = TOL[dtype]
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


def make_layer(variant="vanilla", dtype=np.float64, input_size=4, hidden_size=5, seed=0, scale=0.6, **kwargs):
    """A layer with N(0, scale) parameters (larger than the default init, to reach the nonlinear regimes)."""
    layer = lstmcore.LSTM(input_size, hidden_size, variant=variant, dtype=dtype, seed=seed, **kwargs)
    rng = np.random.default_rng(seed + 1000)
    for value in layer.params.values():
        value[...] = rng.normal(scale=scale, size=value.shape)
    return layer


def check_against_reference(layer, T=6, B=4, lengths=None, state=True, seed=0):
    """Run the layer and the reference on the same random input, state and output gradients; compare everything."""
    rng = np.random.default_rng(seed)
    dtype = layer.dtype.type
    D = 2 if layer.bidirectional else 1
    LD, H = layer.num_layers * D, layer.hidden_size
    x_shape = (B, T, layer.input_size) if layer.batch_first else (T, B, layer.input_size)
    x = rng.normal(size=x_shape).astype(dtype)
    st = (rng.normal(size=(LD, B, H)).astype(dtype), rng.normal(size=(LD, B, H)).astype(dtype)) if state else None

    out, (h_n, c_n) = layer(x, st, lengths=lengths)
    ref_out, (ref_h, ref_c), tape = reference_layer(layer, x, st, lengths=lengths)
    assert_close(out, ref_out, dtype, "output")
    assert_close(h_n, ref_h, dtype, "h_n")
    assert_close(c_n, ref_c, dtype, "c_n")

    d_out = rng.normal(size=out.shape).astype(dtype)
    d_h = rng.normal(size=h_n.shape).astype(dtype)
    d_c = rng.normal(size=c_n.shape).astype(dtype)
    d_x = layer.backward(d_out, d_h, d_c)
    ref_dx, ref_grads, (ref_dh0, ref_dc0) = reference_layer_backward(tape, d_out, d_h, d_c)
    assert_close(d_x, ref_dx, dtype, "d_x")
    assert_close(layer.state_grads[0], ref_dh0, dtype, "d_h0")
    assert_close(layer.state_grads[1], ref_dc0, dtype, "d_c0")
    assert set(layer.grads) == set(layer.params) == set(ref_grads)
    for name in layer.params:
        assert_close(layer.grads[name], ref_grads[name], dtype, f"grads[{name!r}]")
    return tape


# ---------------------------------------------------------------------------------------------------------------------
# the oracle itself

def test_reference_single_step_by_hand():
    """One step of the peephole cell, written out with scalars-per-gate formulas, matches the reference."""
    rng = np.random.default_rng(3)
    cell = lstmcore.get_variant("peephole")
    I, H, B = 3, 2, 2
    Wi, Wf, Wo, Wz = (rng.normal(size=(H, I)) for _ in range(4))
    Ri, Rf, Ro, Rz = (rng.normal(size=(H, H)) for _ in range(4))
    bi, bf, bo, bz, pi, pf, po = (rng.normal(size=H) for _ in range(7))
    assert cell.gate_blocks == ("i", "f", "o", "z") and cell.peephole_blocks == ("i", "f", "o")
    params = {"W": np.vstack([Wi, Wf, Wo, Wz]), "R": np.vstack([Ri, Rf, Ro, Rz]),
              "b": np.concatenate([bi, bf, bo, bz]), "p": np.concatenate([pi, pf, po])}
    x, h0, c0 = rng.normal(size=(1, B, I)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    z = np.tanh(x[0] @ Wz.T + h0 @ Rz.T + bz)
    i = sig(x[0] @ Wi.T + h0 @ Ri.T + pi * c0 + bi)
    f = sig(x[0] @ Wf.T + h0 @ Rf.T + pf * c0 + bf)
    c = z * i + c0 * f
    o = sig(x[0] @ Wo.T + h0 @ Ro.T + po * c + bo)
    y = np.tanh(c) * o
    ry, rh, rc, _ = reference_forward(cell, params, x, h0, c0)
    np.testing.assert_allclose(ry[0], y, rtol=1e-14)
    np.testing.assert_allclose(rh, y, rtol=1e-14)
    np.testing.assert_allclose(rc, c, rtol=1e-14)


@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_backward_matches_its_own_finite_differences(variant):
    """The reference's hand-written BPTT is checked independently of the kernels (a few random directions)."""
    cell = lstmcore.get_variant(variant).with_options(clip=1.5)
    rng = np.random.default_rng(5)
    H, I, T, B = 3, 2, 4, 2
    params = {k: rng.normal(scale=0.7, size=s) for k, s in cell.parameter_shapes(I, H).items()}
    x, h0, c0 = rng.normal(size=(T, B, I)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    lengths = np.array([4, 2])
    a_y, a_h, a_c = rng.normal(size=(T, B, H)), rng.normal(size=(B, H)), rng.normal(size=(B, H))

    def loss(params, x, h0, c0):
        y, h, c, _ = reference_forward(cell, params, x, h0, c0, lengths=lengths, reverse=True)
        return np.sum(a_y * y) + np.sum(a_h * h) + np.sum(a_c * c)

    _, _, _, cache = reference_forward(cell, params, x, h0, c0, lengths=lengths, reverse=True)
    d_x, d_h0, d_c0, grads = reference_backward(cell, params, cache, a_y, a_h, a_c)
    eps = 1e-6
    inputs = {"x": (x, d_x), "h0": (h0, d_h0), "c0": (c0, d_c0)}
    inputs.update({k: (params[k], grads[k]) for k in params})
    for name, (value, grad) in inputs.items():
        for _ in range(3):
            direction = rng.normal(size=value.shape)
            value += eps * direction
            plus = loss(params, x, h0, c0)
            value -= 2 * eps * direction
            minus = loss(params, x, h0, c0)
            value += eps * direction
            np.testing.assert_allclose((plus - minus) / (2 * eps), np.sum(grad * direction), rtol=1e-6, atol=1e-7,
                                       err_msg=f"{variant}: {name}")


def test_reference_activations():
    x = np.linspace(-4, 4, 17)
    np.testing.assert_allclose(activation("hard_sigmoid", x), np.clip(0.2 * x + 0.5, 0, 1))
    np.testing.assert_allclose(activation(("hard_sigmoid", 1.0, 0.0), x), np.clip(x, 0, 1))
    np.testing.assert_allclose(activation("softsign", x), x / (1 + abs(x)))


# ---------------------------------------------------------------------------------------------------------------------
# kernels vs reference

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("acts", list(ACTIVATION_SETS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_and_activations(variant, acts, dtype):
    layer = make_layer(variant, dtype, **ACTIVATION_SETS[acts])
    check_against_reference(layer)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("variant", VARIANTS)
def test_full_stack_with_lengths(variant, dtype):
    """Stacked, bidirectional, padded batch with lengths 0 and T, non-zero initial state."""
    layer = make_layer(variant, dtype, num_layers=2, bidirectional=True)
    check_against_reference(layer, T=6, B=5, lengths=np.array([6, 0, 3, 1, 6]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("clip", [0.3, 1.0, 3.0])
@pytest.mark.parametrize("variant", VARIANTS)
def test_clip(variant, clip, dtype):
    layer = make_layer(variant, dtype, clip=clip, bidirectional=True, scale=0.9)
    tape = check_against_reference(layer, lengths=np.array([6, 2, 0, 5]))
    if clip < 1:
        # the clamp really acts: some pre-activation or cell value of the reference was clamped
        masks = [v for k_caches in tape["caches"] for _, cache in k_caches
                 for s in cache["steps"].values() for k, v in s.items() if k.endswith("_mask") and k != "cc_mask"]
        assert any((m == 0).any() for m in masks)


def test_clip_changes_the_result():
    x = np.random.default_rng(0).normal(size=(5, 2, 4))
    a = make_layer("peephole")(x)[0]
    b = make_layer("peephole", clip=0.3)(x)[0]
    assert not np.allclose(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("variant", ["vanilla", "peephole", "coupled", "nfg"])
def test_clip_with_custom_activations(variant, dtype):
    layer = make_layer(variant, dtype, clip=0.8, gate_activation=("hard_sigmoid", 0.7, 0.3),
                       input_activation="relu", output_activation="identity", num_layers=2)
    check_against_reference(layer, lengths=np.array([6, 3, 0, 1]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("variant", VARIANTS)
def test_lengths_unidirectional(variant, dtype):
    layer = make_layer(variant, dtype)
    check_against_reference(layer, T=5, B=4, lengths=[5, 0, 2, 1])


@pytest.mark.parametrize("lengths", [[0, 0, 0], [7, 7, 7], [1, 7, 0]])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lengths_edge_cases(lengths, bidirectional):
    layer = make_layer("peephole", bidirectional=bidirectional, num_layers=2)
    check_against_reference(layer, T=7, B=3, lengths=np.array(lengths))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("variant", VARIANTS)
def test_bidirectional_batch_first_zero_state(variant, dtype):
    layer = make_layer(variant, dtype, bidirectional=True, batch_first=True)
    check_against_reference(layer, state=False, lengths=[6, 4, 1, 6])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_batch_of_one(num_layers, dtype):
    """B == 1 takes the GEMV path in the kernels."""
    layer = make_layer("peephole", dtype, num_layers=num_layers, bidirectional=True)
    check_against_reference(layer, T=5, B=1)
    check_against_reference(layer, T=5, B=1, lengths=[3])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_single_step(dtype):
    layer = make_layer("coupled", dtype, bidirectional=True)
    check_against_reference(layer, T=1, B=3, lengths=[1, 0, 1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_reverse_options(dtype):
    layer = make_layer("peephole", dtype, bidirectional=True, num_layers=2, gate_activation="hard_sigmoid",
                       reverse_options=dict(gate_activation="sigmoid", output_activation="softsign", clip=0.7))
    assert layer.cells[1].output_activation.name == "softsign" and layer.cells[0].output_activation.name == "tanh"
    check_against_reference(layer, lengths=[6, 5, 0, 2])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_larger_sizes(dtype):
    """Sizes that are not tiny (BLAS blocking, odd dimensions)."""
    layer = make_layer("peephole", dtype, input_size=33, hidden_size=47, num_layers=2, bidirectional=True, scale=0.15)
    check_against_reference(layer, T=9, B=7, lengths=np.array([9, 8, 1, 0, 5, 9, 3]))


def test_reverse_single_direction_by_reference():
    """reference_forward(reverse=True) equals the forward pass over the time-flipped sequence (full lengths), and the
    kernel's reverse half of a bidirectional layer agrees with it."""
    layer = make_layer("peephole", bidirectional=True)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 3, 4))
    out, (h_n, _) = layer(x)
    params = {k: layer.params[f"{k}_l0_reverse"] for k in ("W", "R", "b", "p")}
    zeros = np.zeros((3, 5))
    y_rev, h_rev, _, _ = reference_forward(layer.cells[1], params, x, zeros, zeros, reverse=True)
    y_flip, h_flip, _, _ = reference_forward(layer.cells[1], params, x[::-1], zeros, zeros)
    np.testing.assert_allclose(y_rev, y_flip[::-1], rtol=1e-12)
    np.testing.assert_allclose(h_rev, h_flip, rtol=1e-12)
    np.testing.assert_allclose(out[:, :, 5:], y_rev, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n[1], h_rev, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_large_batch(dtype):
    """A batch large enough for the recurrence to be split between threads (where the machine has them)."""
    B = 37
    layer = make_layer("coupled", dtype, bidirectional=True, scale=0.3)
    lengths = np.random.default_rng(0).integers(0, 7, size=B)
    check_against_reference(layer, T=6, B=B, lengths=lengths)


def test_clip_semantics_of_the_cell_fed_to_h():
    """Pin whether ``clip`` clamps the cell fed to h, with h = identity and no forget gate: the cell grows past clip
    step after step, so |y| = o |c| <= clip exactly when the cell fed to h is clamped."""
    clip = 0.5
    layer = lstmcore.LSTM(2, 3, variant="nfg", output_activation="identity", clip=clip, dtype=np.float64, seed=0)
    for value in layer.params.values():
        value[...] = 0
    layer.params["b_l0"][...] = 5.0  # every pre-activation sits at the clamp: i = o = sigma(clip), z = tanh(clip)
    x = np.zeros((20, 1, 2))
    out, (h, c) = layer(x)
    assert np.abs(c).max() > 4 * clip  # the cell itself is never clamped
    if numpy_reference.CLAMP_CELL_FED_TO_H:
        assert np.abs(out).max() <= clip
    else:
        np.testing.assert_allclose(out[-1], c[0] / (1 + np.exp(-clip)), rtol=1e-12)
        assert np.abs(out).max() > 2 * clip
    ref_out, _, _ = reference_layer(layer, x)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("B", [1, 3, 40])
@pytest.mark.parametrize("variant", ["peephole", "fgr"])
def test_driver_team_sizes_agree(B, variant):
    """The sequence driver run on 1, 2 and 3 threads (each a slice of the hidden units) gives the reference's numbers,
    with clipping, lengths and the reverse direction."""
    cell = lstmcore.get_variant(variant).with_options(clip=2.0)
    T, I, H = 5, 3, 20
    rng = np.random.default_rng(B)
    params = {k: rng.normal(scale=0.4, size=s) for k, s in cell.parameter_shapes(I, H).items()}
    x, h0, c0 = rng.normal(size=(T, B, I)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    lengths = rng.integers(0, T + 1, size=B).astype(np.int32)
    d_y, d_h, d_c = rng.normal(size=(T, B, H)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    ref_y, ref_h, ref_c, cache = reference_forward(cell, params, x, h0, c0, lengths=lengths, reverse=True)
    ref_dx, ref_dh0, ref_dc0, ref_grads = reference_backward(cell, params, cache, d_y, d_h, d_c)
    W, b, weights, p = cell.driver_parameters(params)
    for threads in (1, 2, 3):
        out = np.zeros((T, B, H))
        (h_n, c_n), tape = _driver.forward(cell.step_kernel(), True, x, W, b, weights, p, lengths, (h0, c0), out,
                                           threads=threads)
        assert tape.threads == threads
        np.testing.assert_allclose(out, ref_y, rtol=1e-10, atol=1e-12, err_msg=str(threads))
        np.testing.assert_allclose(h_n, ref_h, rtol=1e-10, atol=1e-12, err_msg=str(threads))
        np.testing.assert_allclose(c_n, ref_c, rtol=1e-10, atol=1e-12, err_msg=str(threads))
        grads = {k: np.zeros_like(v) for k, v in params.items()}
        dW, db, d_weights, dp = cell.driver_parameters(grads)
        dx = np.zeros_like(x)
        dh0, dc0 = _driver.backward(tape, d_y, (d_h, d_c), dW, db, d_weights, dp, dx, False)
        np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-12, err_msg=str(threads))
        np.testing.assert_allclose(dh0, ref_dh0, rtol=1e-10, atol=1e-12, err_msg=str(threads))
        np.testing.assert_allclose(dc0, ref_dc0, rtol=1e-10, atol=1e-12, err_msg=str(threads))
        for k in params:
            np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-10, atol=1e-12, err_msg=f"{threads} {k}")
