"""The public layer contract: PyTorch-style shapes and ordering, Keras-style use, seeds, dtypes, memory layouts,
parameter naming and counts, the registry functions, zero-length sequences and padding."""
import re
import threading
import time

import numpy as np
import pytest

import lstmcore
from variant_names import GATED_VARIANTS

BUILTINS = ["coupled", "nfg", "niaf", "nig", "noaf", "nog", "peephole", "vanilla"]


def rand(*shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


# ---------------------------------------------------------------------------------------------------------------------
# package-level contract

def test_version():
    assert isinstance(lstmcore.__version__, str)
    assert re.match(r"^\d+\.\d+", lstmcore.__version__)


def test_list_variants_sorted_and_complete():
    names = lstmcore.list_variants()
    assert names == sorted(names)
    assert set(BUILTINS) <= set(names)


@pytest.mark.parametrize("name", BUILTINS)
def test_get_variant(name):
    cell = lstmcore.get_variant(name)
    assert isinstance(cell, lstmcore.Variant)
    assert cell.name == name


def test_get_variant_unknown_lists_names():
    with pytest.raises(KeyError) as info:
        lstmcore.get_variant("nope")
    message = str(info.value)
    assert "nope" in message
    for name in BUILTINS:
        assert name in message


# ---------------------------------------------------------------------------------------------------------------------
# shapes and ordering

@pytest.mark.parametrize("variant", ["vanilla", "peephole", "coupled", "nog"])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_shapes(variant, num_layers, bidirectional, batch_first):
    T, B, I, H = 7, 3, 5, 4
    D = 2 if bidirectional else 1
    layer = lstmcore.LSTM(I, H, variant=variant, num_layers=num_layers, bidirectional=bidirectional,
                          batch_first=batch_first, seed=0)
    x = rand(B, T, I, dtype=np.float32) if batch_first else rand(T, B, I, dtype=np.float32)
    out, (h_n, c_n) = layer(x)
    assert out.shape == ((B, T, D * H) if batch_first else (T, B, D * H))
    assert h_n.shape == c_n.shape == (num_layers * D, B, H)
    assert out.dtype == h_n.dtype == c_n.dtype == np.float32
    d_x = layer.backward(np.ones_like(out))
    assert d_x.shape == x.shape and d_x.dtype == np.float32
    assert set(layer.grads) == set(layer.params)
    for name, value in layer.params.items():
        assert layer.grads[name].shape == value.shape, name
    assert layer.state_grads[0].shape == layer.state_grads[1].shape == h_n.shape
    assert len(layer.cells) == D


@pytest.mark.parametrize("variant", GATED_VARIANTS)
def test_parameter_names_and_shapes(variant):
    I, H, L = 5, 4, 2
    layer = lstmcore.LSTM(I, H, variant=variant, num_layers=L, bidirectional=True, seed=0)
    cell = lstmcore.get_variant(variant)
    G, P = len(cell.gate_blocks), len(cell.peephole_blocks)
    expected = {}
    for k in range(L):
        in_size = I if k == 0 else 2 * H
        for suffix in (f"_l{k}", f"_l{k}_reverse"):
            expected["W" + suffix] = (G * H, in_size)
            expected["R" + suffix] = (G * H, H)
            expected["b" + suffix] = (G * H,)
            if P:
                expected["p" + suffix] = (P * H,)
            if cell.gate_recurrence:
                expected["Rg" + suffix] = (3 * H, 3 * H)
    assert {k: v.shape for k, v in layer.params.items()} == expected
    assert all(v.dtype == np.float32 for v in layer.params.values())


def test_gate_blocks():
    assert lstmcore.get_variant("vanilla").gate_blocks == ("i", "f", "o", "z")
    assert lstmcore.get_variant("vanilla").peephole_blocks == ()
    assert lstmcore.get_variant("peephole").peephole_blocks == ("i", "f", "o")
    assert lstmcore.get_variant("coupled").gate_blocks == ("i", "o", "z")
    assert lstmcore.get_variant("nig").gate_blocks == ("f", "o", "z")
    assert lstmcore.get_variant("nfg").gate_blocks == ("i", "o", "z")
    assert lstmcore.get_variant("nog").gate_blocks == ("i", "f", "z")
    assert lstmcore.get_variant("nog").peephole_blocks == ("i", "f")


@pytest.mark.parametrize("num_layers", [1, 2])
def test_last_step_equals_final_state(num_layers):
    """Full-length sequences: output[-1] forward half == h_n of the last layer's forward direction, output[0] reverse
    half == its reverse h_n."""
    H, L = 4, num_layers
    layer = lstmcore.LSTM(3, H, variant="peephole", num_layers=L, bidirectional=True, dtype=np.float64, seed=0)
    out, (h_n, c_n) = layer(rand(6, 2, 3))
    np.testing.assert_array_equal(out[-1, :, :H], h_n[2 * (L - 1)])
    np.testing.assert_array_equal(out[0, :, H:], h_n[2 * (L - 1) + 1])
    assert not np.allclose(h_n[2 * (L - 1)], h_n[2 * (L - 1) + 1])


def test_h_n_ordering_layer_by_layer_forward_first():
    """h_n of a 2-layer bidirectional stack is [layer 0 forward, layer 0 reverse, layer 1 forward, layer 1 reverse],
    checked against one-direction, one-layer layers built from the same parameters."""
    I, H = 3, 4
    stack = lstmcore.LSTM(I, H, variant="peephole", num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    x = rand(6, 2, I)
    h0, c0 = rand(4, 2, H, seed=1), rand(4, 2, H, seed=2)
    out, (h_n, c_n) = stack(x, (h0, c0))

    def one_direction(k, reverse, inp):
        layer = lstmcore.LSTM(inp.shape[2], H, variant="peephole", dtype=np.float64)
        suffix = f"_l{k}" + ("_reverse" if reverse else "")
        for name in layer.params:
            layer.params[name][...] = stack.params[name.replace("_l0", suffix)]
        idx = 2 * k + reverse
        if reverse:  # a reverse direction is a forward pass over the time-flipped input
            y, (h, c) = layer(inp[::-1].copy(), (h0[idx:idx + 1], c0[idx:idx + 1]))
            return y[::-1], h, c
        y, (h, c) = layer(inp, (h0[idx:idx + 1], c0[idx:idx + 1]))
        return y, h, c

    inp = x
    for k in range(2):
        ys = []
        for reverse in (0, 1):
            y, h, c = one_direction(k, reverse, inp)
            np.testing.assert_allclose(h_n[2 * k + reverse], h[0], rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(c_n[2 * k + reverse], c[0], rtol=1e-12, atol=1e-14)
            ys.append(y)
        inp = np.concatenate(ys, axis=2)  # forward direction first in the features
    np.testing.assert_allclose(out, inp, rtol=1e-12, atol=1e-14)


def test_keras_like_last_step():
    H = 5
    layer = lstmcore.LSTM(3, H, num_layers=2, seed=0, dtype=np.float64)
    x = rand(8, 4, 3)
    out, (h_n, c_n) = layer(x)
    np.testing.assert_array_equal(out[-1], h_n[-1])
    # padded batch: the last REAL step of each sequence is its final state
    lengths = np.array([8, 3, 1, 5])
    out, (h_n, c_n) = layer(x, lengths=lengths)
    last = out[lengths - 1, np.arange(4)]
    np.testing.assert_array_equal(last, h_n[-1])
    assert not np.allclose(out[-1], h_n[-1])


def test_batch_first_is_a_transpose():
    x = rand(6, 3, 4)
    a = lstmcore.LSTM(4, 5, bidirectional=True, seed=3, dtype=np.float64)
    b = lstmcore.LSTM(4, 5, bidirectional=True, seed=3, dtype=np.float64, batch_first=True)
    out_a, (h_a, c_a) = a(x, lengths=[6, 2, 4])
    out_b, (h_b, c_b) = b(x.transpose(1, 0, 2), lengths=[6, 2, 4])
    np.testing.assert_array_equal(out_a, out_b.transpose(1, 0, 2))
    np.testing.assert_array_equal(h_a, h_b)  # states are (L*D, B, H) in both cases
    np.testing.assert_array_equal(c_a, c_b)
    g = rand(*out_a.shape, seed=9)
    np.testing.assert_array_equal(a.backward(g), b.backward(g.transpose(1, 0, 2)).transpose(1, 0, 2))


# ---------------------------------------------------------------------------------------------------------------------
# seeds, dtypes, memory layouts, parameters

def test_seed_determinism():
    a = lstmcore.LSTM(4, 6, variant="peephole", num_layers=2, bidirectional=True, seed=42)
    b = lstmcore.LSTM(4, 6, variant="peephole", num_layers=2, bidirectional=True, seed=42)
    c = lstmcore.LSTM(4, 6, variant="peephole", num_layers=2, bidirectional=True, seed=43)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
        assert not np.array_equal(a.params[name], c.params[name]), name
    x = rand(5, 2, 4, dtype=np.float32)
    np.testing.assert_array_equal(a(x)[0], b(x)[0])
    assert not np.allclose(a(x)[0], c(x)[0])


def test_default_init_range():
    H = 16
    layer = lstmcore.LSTM(8, H, variant="peephole", seed=0)
    for value in layer.params.values():
        assert np.abs(value).max() <= 1 / np.sqrt(H)
        assert np.unique(value).size == value.size  # not constant


def test_repeatable_forward():
    layer = lstmcore.LSTM(4, 6, variant="coupled", seed=1)
    x = rand(5, 3, 4, dtype=np.float32)
    first = layer(x)[0].copy()
    np.testing.assert_array_equal(layer(x)[0], first)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes(dtype):
    layer = lstmcore.LSTM(4, 6, variant="peephole", dtype=dtype, seed=0)
    assert layer.dtype == np.dtype(dtype)
    assert all(v.dtype == dtype for v in layer.params.values())
    x = rand(5, 2, 4, dtype=dtype)
    out, (h, c) = layer(x)
    assert out.dtype == h.dtype == c.dtype == dtype
    d_x = layer.backward(np.ones_like(out))
    assert d_x.dtype == dtype and all(g.dtype == dtype for g in layer.grads.values())


def test_float32_close_to_float64():
    a = lstmcore.LSTM(4, 6, variant="peephole", dtype=np.float32, seed=0, num_layers=2)
    b = lstmcore.LSTM(4, 6, variant="peephole", dtype=np.float64, seed=0, num_layers=2)
    for name in a.params:
        b.params[name][...] = a.params[name]
    x = rand(5, 2, 4)
    np.testing.assert_allclose(a(x.astype(np.float32))[0], b(x)[0], rtol=1e-5, atol=1e-6)


def _run(layer, x, state=None, lengths=None, d_out=None):
    out, (h, c) = layer(x, state, lengths=lengths)
    out, h, c = out.copy(), h.copy(), c.copy()
    d_x = layer.backward(np.ones(out.shape, layer.dtype) if d_out is None else d_out).copy()
    grads = {k: v.copy() for k, v in layer.grads.items()}
    return out, h, c, d_x, grads, tuple(s.copy() for s in layer.state_grads)


def _assert_same_run(a, b):
    for u, v in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(u, v)
    for name in a[4]:
        np.testing.assert_array_equal(a[4][name], b[4][name])
    for u, v in zip(a[5], b[5]):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("batch_first", [False, True])
def test_read_only_inputs(batch_first):
    layer = lstmcore.LSTM(4, 5, variant="peephole", bidirectional=True, batch_first=batch_first, seed=0)
    x = rand(6, 3, 4, dtype=np.float32)
    state = (rand(2, 3, 5, seed=1, dtype=np.float32), rand(2, 3, 5, seed=2, dtype=np.float32))
    d_out = rand(6, 3, 10, seed=3, dtype=np.float32)
    if batch_first:
        x, d_out = np.ascontiguousarray(x.transpose(1, 0, 2)), np.ascontiguousarray(d_out.transpose(1, 0, 2))
    expected = _run(layer, x, state, [6, 2, 0], d_out)
    for arr in (x, *state, d_out):
        arr.setflags(write=False)
    got = _run(layer, x, state, np.array([6, 2, 0]), d_out)
    _assert_same_run(expected, got)


def test_read_only_params():
    layer = lstmcore.LSTM(4, 5, variant="coupled", num_layers=2, seed=0)
    x = rand(6, 3, 4, dtype=np.float32)
    expected = _run(layer, x)
    for name, value in layer.params.items():
        value.setflags(write=False)
    _assert_same_run(expected, _run(layer, x))


def test_non_contiguous_inputs_and_params():
    layer = lstmcore.LSTM(4, 5, variant="peephole", bidirectional=True, num_layers=2, seed=0, dtype=np.float64)
    x = rand(6, 3, 4)
    state = (rand(4, 3, 5, seed=1), rand(4, 3, 5, seed=2))
    d_out = rand(6, 3, 10, seed=3)
    expected = _run(layer, x, state, [6, 1, 3], d_out)

    big = np.zeros((6, 3, 8))
    big[:, :, ::2] = x
    x_nc = big[:, :, ::2]                             # strided last axis
    state_nc = tuple(np.asfortranarray(s) for s in state)  # Fortran order
    d_out_nc = np.ascontiguousarray(d_out.transpose(1, 0, 2)).transpose(1, 0, 2)  # transposed view
    lengths_nc = np.array([6, 0, 1, 0, 3, 0])[::2]
    assert not x_nc.flags.c_contiguous and not state_nc[0].flags.c_contiguous
    assert not d_out_nc.flags.c_contiguous and not lengths_nc.flags.c_contiguous
    for name in list(layer.params):
        value = layer.params[name]
        if value.ndim == 2:
            layer.params[name] = np.asfortranarray(value)
        else:
            wide = np.zeros(2 * value.size)
            wide[::2] = value
            layer.params[name] = wide[::2]
        assert not layer.params[name].flags.c_contiguous
    got = _run(layer, x_nc, state_nc, lengths_nc, d_out_nc)
    _assert_same_run(expected, got)


def test_batch_first_non_contiguous_output_gradient():
    layer = lstmcore.LSTM(3, 4, batch_first=True, bidirectional=True, seed=0, dtype=np.float64)
    x = rand(2, 5, 3)
    out, _ = layer(x)
    d = rand(*out.shape, seed=1)
    expected = layer.backward(d).copy()
    np.testing.assert_array_equal(layer.backward(np.asfortranarray(d)), expected)


def test_list_inputs_accepted():
    layer = lstmcore.LSTM(2, 3, seed=0, dtype=np.float64)
    x = rand(4, 1, 2)
    np.testing.assert_array_equal(layer(x.tolist())[0], layer(x)[0])


def test_params_writable_in_place():
    layer = lstmcore.LSTM(4, 5, variant="peephole", seed=0, dtype=np.float64)
    x = rand(5, 2, 4)
    before = layer(x)[0].copy()
    assert all(v.flags.writeable for v in layer.params.values())
    layer.params["b_l0"][...] += 0.5
    after = layer(x)[0].copy()
    assert not np.allclose(before, after)
    layer.params["b_l0"][...] -= 0.5
    np.testing.assert_allclose(layer(x)[0], before, rtol=1e-14, atol=1e-15)
    # each parameter matters, including the peepholes
    for name in layer.params:
        saved = layer.params[name].copy()
        layer.params[name][...] = 0
        assert not np.allclose(layer(x)[0], before), name
        layer.params[name][...] = saved


def test_params_replaced_by_assignment():
    layer = lstmcore.LSTM(4, 5, seed=0, dtype=np.float64)
    x = rand(5, 2, 4)
    before = layer(x)[0].copy()
    layer.params["W_l0"] = np.zeros_like(layer.params["W_l0"])
    assert not np.allclose(layer(x)[0], before)


# ---------------------------------------------------------------------------------------------------------------------
# parameter counts (docs/architecture.md section 4)

def formula(variant, M, N):
    if variant == "vanilla":
        return 4 * N * (M + N) + 4 * N
    if variant in ("peephole", "niaf", "noaf"):
        return 4 * N * (M + N) + 7 * N
    if variant in ("coupled", "nig", "nfg", "nog"):
        return 3 * N * (M + N) + 5 * N
    raise AssertionError(variant)


@pytest.mark.parametrize("variant", BUILTINS)
@pytest.mark.parametrize("M,N", [(1, 1), (7, 3), (20, 200)])
def test_parameter_count_formula(variant, M, N):
    assert lstmcore.get_variant(variant).parameter_count(M, N) == formula(variant, M, N)
    assert lstmcore.LSTM(M, N, variant=variant, seed=0).parameter_count() == formula(variant, M, N)


@pytest.mark.parametrize("variant", ["vanilla", "peephole", "coupled"])
def test_parameter_count_stacked_bidirectional(variant):
    M, N = 6, 4
    layer = lstmcore.LSTM(M, N, variant=variant, num_layers=3, bidirectional=True, seed=0)
    expected = 2 * formula(variant, M, N) + 2 * 2 * formula(variant, 2 * N, N)
    assert layer.parameter_count() == expected == sum(v.size for v in layer.params.values())


# ---------------------------------------------------------------------------------------------------------------------
# zero-length sequences and padding

@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_empty_sequence(bidirectional, batch_first):
    I, H, B, L = 3, 4, 2, 2
    D = 2 if bidirectional else 1
    layer = lstmcore.LSTM(I, H, variant="peephole", num_layers=L, bidirectional=bidirectional,
                          batch_first=batch_first, dtype=np.float64, seed=0)
    x = np.zeros((B, 0, I) if batch_first else (0, B, I))
    h0, c0 = rand(L * D, B, H, seed=1), rand(L * D, B, H, seed=2)
    out, (h_n, c_n) = layer(x, (h0, c0))
    assert out.shape == ((B, 0, D * H) if batch_first else (0, B, D * H))
    np.testing.assert_array_equal(h_n, h0)
    np.testing.assert_array_equal(c_n, c0)
    out, (h_n, c_n) = layer(x)
    assert not h_n.any() and not c_n.any()
    d_h, d_c = rand(L * D, B, H, seed=3), rand(L * D, B, H, seed=4)
    d_x = layer.backward(np.zeros(out.shape), d_h, d_c)
    assert d_x.shape == x.shape
    np.testing.assert_array_equal(layer.state_grads[0], d_h)
    np.testing.assert_array_equal(layer.state_grads[1], d_c)
    for name, g in layer.grads.items():
        assert g.shape == layer.params[name].shape and not g.any(), name


@pytest.mark.parametrize("variant", GATED_VARIANTS)  # (h, c); every cell's zero lengths: the conformance kit
@pytest.mark.parametrize("bidirectional", [False, True])
def test_zero_lengths_in_batch(variant, bidirectional):
    I, H, B, T = 3, 4, 3, 5
    D = 2 if bidirectional else 1
    layer = lstmcore.LSTM(I, H, variant=variant, bidirectional=bidirectional, dtype=np.float64, seed=0)
    x = rand(T, B, I)
    h0, c0 = rand(D, B, H, seed=1), rand(D, B, H, seed=2)
    lengths = np.array([5, 0, 2])
    out, (h_n, c_n) = layer(x, (h0, c0), lengths=lengths)
    assert not out[:, 1].any()
    np.testing.assert_array_equal(h_n[:, 1], h0[:, 1])
    np.testing.assert_array_equal(c_n[:, 1], c0[:, 1])
    assert not np.allclose(h_n[:, 0], h0[:, 0])
    d_out, d_h, d_c = rand(T, B, D * H, seed=3), rand(D, B, H, seed=4), rand(D, B, H, seed=5)
    d_x = layer.backward(d_out, d_h, d_c)
    np.testing.assert_array_equal(layer.state_grads[0][:, 1], d_h[:, 1])
    np.testing.assert_array_equal(layer.state_grads[1][:, 1], d_c[:, 1])
    assert not d_x[:, 1].any()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_outputs_zero_past_length_and_padding_ignored(bidirectional):
    T, B, I, H = 6, 3, 3, 4
    layer = lstmcore.LSTM(I, H, variant="peephole", num_layers=2, bidirectional=bidirectional, dtype=np.float64,
                          seed=0)
    lengths = np.array([6, 2, 4])
    x = rand(T, B, I)
    out, (h_n, c_n) = lstmcore.LSTM.forward(layer, x, lengths=lengths)
    for b, n in enumerate(lengths):
        assert not out[n:, b].any()
        assert np.abs(out[:n, b]).min() > 0
    # what is in the padding does not matter, forward or backward
    x2 = x.copy()
    for b, n in enumerate(lengths):
        x2[n:, b] = 100.0
    out2, (h2, c2) = layer.forward(x2, lengths=lengths)
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(h_n, h2)
    np.testing.assert_array_equal(c_n, c2)
    d_x = layer.backward(np.ones_like(out))
    for b, n in enumerate(lengths):
        assert not d_x[n:, b].any()
        assert np.abs(d_x[:n, b]).min() > 0


@pytest.mark.parametrize("variant", ["peephole", "coupled", "nog"])
def test_padded_batch_equals_separate_sequences(variant):
    """Each sequence of a padded batch gives what it gives alone, truncated to its length (both directions: the
    reverse direction starts at the sequence's own last step)."""
    T, B, I, H = 6, 4, 3, 4
    layer = lstmcore.LSTM(I, H, variant=variant, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    x = rand(T, B, I)
    h0, c0 = rand(4, B, H, seed=1), rand(4, B, H, seed=2)
    lengths = np.array([6, 3, 0, 1])
    d_out, d_h, d_c = rand(T, B, 2 * H, seed=3), rand(4, B, H, seed=4), rand(4, B, H, seed=5)
    out, (h_n, c_n) = layer(x, (h0, c0), lengths=lengths)
    out, h_n, c_n = out.copy(), h_n.copy(), c_n.copy()
    d_x = layer.backward(d_out, d_h, d_c).copy()
    grads = {k: v.copy() for k, v in layer.grads.items()}
    d_h0, d_c0 = (s.copy() for s in layer.state_grads)
    grad_sum = {k: 0 for k in grads}
    for b, n in enumerate(lengths):
        sl = slice(b, b + 1)
        o, (h, c) = layer(x[:n, sl], (h0[:, sl], c0[:, sl]))
        np.testing.assert_allclose(out[:n, sl], o, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(h_n[:, sl], h, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(c_n[:, sl], c, rtol=1e-12, atol=1e-14)
        dx = layer.backward(d_out[:n, sl], d_h[:, sl], d_c[:, sl])
        np.testing.assert_allclose(d_x[:n, sl], dx, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(d_h0[:, sl], layer.state_grads[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(d_c0[:, sl], layer.state_grads[1], rtol=1e-10, atol=1e-12)
        for k in grads:
            grad_sum[k] = grad_sum[k] + layer.grads[k]
    for k in grads:
        np.testing.assert_allclose(grads[k], grad_sum[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_lengths_accepts_lists_and_integral_floats():
    layer = lstmcore.LSTM(3, 4, seed=0, dtype=np.float64)
    x = rand(5, 3, 3)
    a = layer(x, lengths=np.array([5, 2, 0], dtype=np.int64))[0].copy()
    np.testing.assert_array_equal(layer(x, lengths=[5, 2, 0])[0], a)
    np.testing.assert_array_equal(layer(x, lengths=np.array([5, 2, 0], dtype=np.uint8))[0], a)
    np.testing.assert_array_equal(layer(x, lengths=np.array([5.0, 2.0, 0.0]))[0], a)


def test_backward_uses_the_last_forward():
    layer = lstmcore.LSTM(3, 4, seed=0, dtype=np.float64)
    x1, x2 = rand(5, 2, 3, seed=1), rand(3, 2, 3, seed=2)
    layer(x1)
    g1 = layer.backward(np.ones((5, 2, 4)))
    assert g1.shape == x1.shape
    layer(x2)
    g2 = layer.backward(np.ones((3, 2, 4)))
    assert g2.shape == x2.shape
    # backward twice after one forward gives the same result
    np.testing.assert_array_equal(layer.backward(np.ones((3, 2, 4))), g2)


def test_backward_defaults_final_state_gradients_to_zero():
    layer = lstmcore.LSTM(3, 4, variant="peephole", seed=0, dtype=np.float64)
    x = rand(5, 2, 3)
    out, (h, c) = layer(x)
    d_out = rand(*out.shape, seed=1)
    a = layer.backward(d_out).copy()
    b = layer.backward(d_out, np.zeros_like(h), np.zeros_like(c))
    np.testing.assert_array_equal(a, b)
    c_only = layer.backward(np.zeros_like(out), None, np.ones_like(c))
    assert c_only.any()


# ---------------------------------------------------------------------------------------------------------------------
# the GIL

def test_forward_releases_the_gil():
    """While a long forward runs in a worker thread, the main thread keeps running Python code. (With the GIL held by
    the kernel the main thread would be frozen for the whole kernel.) Best of three attempts, against machine load."""
    layer = lstmcore.LSTM(256, 256, seed=0, check_finite=False)
    x = rand(150, 64, 256, dtype=np.float32)
    layer(x)  # warm up (BLAS thread pool, page faults)

    def spin(duration):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration:
            n += 1
        return n / duration

    ratios = []
    for _ in range(3):
        base_rate = spin(0.05)
        done = threading.Event()
        worker = threading.Thread(target=lambda: (layer(x), done.set()))
        start = time.perf_counter()
        worker.start()
        n = 0
        while not done.is_set():
            n += 1
        elapsed = time.perf_counter() - start
        worker.join()
        if elapsed < 0.03:
            pytest.skip(f"forward too fast ({elapsed:.3f} s) to observe")
        ratios.append(n / elapsed / base_rate)
        if ratios[-1] > 0.15:
            return
    pytest.fail(f"the main thread ran at {max(ratios):.0%} of its speed during the forward: is the GIL held?")


@pytest.mark.parametrize("variant", ["vanilla", "coupled", "fgr"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_backward_without_input_grad_gives_the_same_weight_grads(variant, bidirectional):
    layer = lstmcore.LSTM(3, 4, variant=variant, num_layers=2, bidirectional=bidirectional, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).normal(size=(5, 3, 3))
    out, _ = layer(x, lengths=[5, 2, 0])
    d_out = np.random.default_rng(1).normal(size=out.shape)
    d_x = layer.backward(d_out)
    full = {k: v.copy() for k, v in layer.grads.items()}
    full_state = [s.copy() for s in layer.state_grads]
    assert layer.backward(d_out, need_input_grad=False) is None
    assert d_x.shape == x.shape
    for key, value in full.items():
        np.testing.assert_array_equal(layer.grads[key], value)
    for got, want in zip(layer.state_grads, full_state):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("batch, steps", [(1, 5), (3, 1), (1, 1)])
@pytest.mark.parametrize("batch_first", [True, False])
def test_bidirectional_backward_with_a_size_one_batch_or_time_axis(batch, steps, batch_first):
    """A size-1 axis has no meaningful stride: backward must accept it, and give the rows of a larger batch."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, steps, 2) if batch_first else (steps, batch, 2))
    single = lstmcore.LSTM(2, 3, bidirectional=True, batch_first=batch_first, dtype=np.float64, seed=0)
    out, _ = single(x)
    d_out = rng.normal(size=out.shape)
    d_x = single.backward(d_out)
    axis = 0 if batch_first else 1
    doubled = lstmcore.LSTM(2, 3, bidirectional=True, batch_first=batch_first, dtype=np.float64, seed=0)
    out2, _ = doubled(np.concatenate([x, x], axis))
    d_x2 = doubled.backward(np.concatenate([d_out, d_out], axis))
    first = (slice(None, batch),) if batch_first else (slice(None), slice(None, batch))
    np.testing.assert_allclose(out2[first], out, atol=1e-14)
    np.testing.assert_allclose(d_x2[first], d_x, atol=1e-13)
    for name, grad in single.grads.items():
        np.testing.assert_allclose(doubled.grads[name], 2 * grad, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("alpha, beta, error", [
    (float("nan"), 0.5, ValueError), (0.2, float("inf"), ValueError), (float("-inf"), 0.5, ValueError),
    ("a", 0.5, TypeError), (0.2, None, TypeError)])
def test_hard_sigmoid_alpha_and_beta_must_be_finite_numbers(alpha, beta, error):
    with pytest.raises(error, match="gate_activation (alpha|beta) must be a finite number"):
        lstmcore.LSTM(2, 3, gate_activation=("hard_sigmoid", alpha, beta))
    with pytest.raises(error, match="Activation (alpha|beta) must be a finite number"):
        lstmcore.variant.Activation("hard_sigmoid", alpha, beta)


@pytest.mark.parametrize("input_size, hidden_size, num_layers", [(3, 4, 2**63), (3, 2**63, 1), (2**62, 4, 1),
                                                                 (3, 60000, 1)])
def test_sizes_whose_parameters_cannot_fit_are_refused_before_allocating(input_size, hidden_size, num_layers):
    with pytest.raises(ValueError, match=r"needs [\d.,e+]+ GiB for its float32 parameters and gradients"):
        lstmcore.LSTM(input_size, hidden_size, num_layers=num_layers)
