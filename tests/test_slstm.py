"""xLSTM's sLSTM (``slstm``): a NumPy reference of the equations in docs/cells.md (stabilised, and the unstabilised
cell it equals), block-diagonal heads, both forget gates, finite differences of every parameter, input and initial
state in float64 (two bidirectional layers, ragged lengths with a 0), the conformance kit, float32 and overflow."""
import numpy as np
import pytest

import lstmcore
from lstmcore._kernels import _slstm
from lstmcore.testing import CHECKS, assert_conforms
from cell_gradcheck import gradcheck, randomised_layer

OPTIONS = {"sigmoid": {}, "exp": dict(forget_gate="exp"), "heads": dict(num_heads=2),
           "heads_exp": dict(num_heads=4, forget_gate="exp")}


def log_sigmoid(v):
    return -np.logaddexp(0, -v)


def recurrence(R, h, num_heads):
    """R h for the compact block-diagonal R (4H, H/num_heads): unit j of every gate reads its own head of h."""
    H, d = h.shape[1], h.shape[1] // num_heads
    out = np.empty((h.shape[0], 4 * H))
    for k in range(4):
        for head in range(num_heads):
            units = slice(head * d, (head + 1) * d)
            out[:, k * H + head * d:k * H + (head + 1) * d] = h[:, units] @ R[k * H + head * d:k * H + (head + 1) * d].T
    return out


def reference(params, x, state, lengths=None, forget_gate="sigmoid", num_heads=1, stabilised=True):
    """One direction, forward in time. ``stabilised=False`` runs the cell with exp(ĩ) and sigmoid(f̃) / exp(f̃)
    themselves (no m: the initial c and n stand for c_0 e^{m_0} and n_0 e^{m_0}), which overflows for large
    pre-activations but otherwise gives the same h."""
    h, c, n, m = (s.copy() for s in state)
    if not stabilised:
        c, n = c * np.exp(m), n * np.exp(m)
    H = h.shape[1]
    outputs = np.zeros(x.shape[:2] + (H,))
    for t in range(x.shape[0]):
        pre = x[t] @ params["W"].T + recurrence(params["R"], h, num_heads) + params["b"]
        it, ft, zt, ot = (pre[:, k * H:(k + 1) * H] for k in range(4))
        log_f = log_sigmoid(ft) if forget_gate == "sigmoid" else ft
        if stabilised:
            m_new = np.maximum(it, log_f + m)
            i, f = np.exp(it - m_new), np.exp(log_f + m - m_new)
        else:
            m_new, i, f = m, np.exp(it), np.exp(log_f)
        c_new = f * c + i * np.tanh(zt)
        n_new = f * n + i
        h_new = 1 / (1 + np.exp(-ot)) * c_new / n_new
        real = (np.ones(x.shape[1], bool) if lengths is None else t < np.asarray(lengths))[:, None]
        h, c, n, m = (np.where(real, new, old) for new, old in ((h_new, h), (c_new, c), (n_new, n), (m_new, m)))
        outputs[t] = np.where(real, h_new, 0)
    return outputs, (h, c, n, m)


def random_case(options, dtype, T=6, B=4, I=5, H=8, seed=1):
    rng = np.random.default_rng(seed)
    variant = lstmcore.get_variant("slstm").with_options(**options)
    params = {k: rng.normal(scale=0.7, size=s) for k, s in variant.parameter_shapes(I, H).items()}
    x = rng.normal(size=(T, B, I))
    state = (rng.normal(size=(B, H)), rng.normal(size=(B, H)), rng.uniform(0.5, 2, size=(B, H)),
             rng.normal(size=(B, H)))
    layer = lstmcore.LSTM(I, H, variant="slstm", dtype=dtype, **options)
    for k, v in params.items():
        layer.params[f"{k}_l0"][...] = v
    return layer, params, x, state


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_matches_the_numpy_reference(options, dtype):
    layer, params, x, state = random_case(OPTIONS[options], dtype)
    lengths = [6, 0, 3, 5]
    output, finals = layer(x.astype(dtype), tuple(s[None].astype(dtype) for s in state), lengths=lengths)
    ref_out, ref_finals = reference(params, x, state, lengths, **OPTIONS[options])
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(output, ref_out, **tol)
    for name, final, ref in zip("hcnm", finals, ref_finals, strict=True):
        np.testing.assert_allclose(final[0], ref, **tol, err_msg=name)
    # the stabiliser changes c, n and m by a common factor, never h
    plain_out, _ = reference(params, x, state, lengths, stabilised=False, **OPTIONS[options])
    np.testing.assert_allclose(ref_out, plain_out, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_no_overflow_where_the_unstabilised_cell_overflows(dtype):
    layer, params, x, state = random_case({}, dtype)
    layer.params["b_l0"][:8] = 800  # exp(ĩ) overflows float32 and float64
    state = tuple(np.zeros_like(s) for s in state)
    output, finals = layer(x.astype(dtype), tuple(s[None].astype(dtype) for s in state))
    assert np.isfinite(output).all() and all(np.isfinite(f).all() for f in finals)
    with np.errstate(over="ignore", invalid="ignore"):
        params["b"][:8] = 800
        plain_out, _ = reference(params, x, state, stabilised=False)
    assert not np.isfinite(plain_out).all()
    ref_out, _ = reference(params, x, state)
    np.testing.assert_allclose(output, ref_out, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-5)


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("config", ["single", "stacked_bidirectional"])
def test_gradients_match_finite_differences(options, config):
    opts = dict(OPTIONS[options])
    kw = dict(num_layers=2, bidirectional=True) if config != "single" else {}
    layer = randomised_layer("slstm", **opts, **kw)

    def positive_normaliser(rng, shape, name):  # n, a sum of exponentials, is positive in use
        return rng.uniform(0.5, 2, size=shape) if name == "n" else rng.normal(size=shape)

    gradcheck(layer, lengths=[5, 0, 2] if config != "single" else None, initial_state=positive_normaliser)


@pytest.mark.parametrize("options", list(OPTIONS))
def test_conforms(options):
    report = assert_conforms("slstm", options=OPTIONS[options])
    assert report.ok and report.names == list(CHECKS)


def constant_stabiliser_gradients(params, x, state, d_out, d_c_n):
    """BPTT as xLSTM's CUDA kernel (slstm_pointwise.cu) computes it, m treated as a constant (one layer, one head,
    sigmoid forget gate): dW, dR, db."""
    T, H = x.shape[0], state[0].shape[1]
    states, gates = [tuple(state)], []
    for t in range(T):  # the forward, keeping what the backward reads
        h, c, n, m = states[-1]
        pre = x[t] @ params["W"].T + h @ params["R"].T + params["b"]
        it, ft, zt, ot = (pre[:, k * H:(k + 1) * H] for k in range(4))
        m_new = np.maximum(it, log_sigmoid(ft) + m)
        i, f = np.exp(it - m_new), np.exp(log_sigmoid(ft) + m - m_new)
        z, o = np.tanh(zt), 1 / (1 + np.exp(-ot))
        c_new, n_new = f * c + i * z, f * n + i
        states.append((o * c_new / n_new, c_new, n_new, m_new))
        gates.append((i, f, z, o, ft))
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dh_rec, dc, dn = np.zeros_like(state[0]), d_c_n.copy(), np.zeros_like(state[0])
    for t in reversed(range(T)):
        (h_prev, c_prev, n_prev, _), (h, c, n, _) = states[t], states[t + 1]
        i, f, z, o, ft = gates[t]
        dy = d_out[t] + dh_rec
        dc = dc + dy * o / n
        dn = dn - dy * h / n
        delta = np.concatenate([i * (z * dc + dn), f * (dc * c_prev + dn * n_prev) * (1 - 1 / (1 + np.exp(-ft))),
                                dc * i * (1 - z * z), (1 - o) * h * dy], axis=1)
        grads["W"] += delta.T @ x[t]
        grads["R"] += delta.T @ h_prev
        grads["b"] += delta.sum(0)
        dh_rec, dc, dn = delta @ params["R"], dc * f, dn * f
    return grads


def test_the_stabiliser_gradient_against_xlstms_constant_m():
    """For a loss on the outputs alone the exact gradient (through m's max) equals xLSTM's kernel, which treats m as
    a constant: the terms through m cancel. A loss on the final c gets its share through m (the kit's finite
    differences confirm ours), and the initial m gets a gradient that a constant m would miss."""
    layer, params, x, state = random_case({}, np.float64, H=6)
    rng = np.random.default_rng(3)
    d_out, d_c_n = rng.normal(size=(x.shape[0], x.shape[1], 6)), rng.normal(size=state[1].shape)
    for d_c in (np.zeros_like(d_c_n), d_c_n):
        layer(x, tuple(s[None] for s in state))
        layer.backward(d_out, d_c_n=d_c[None])
        theirs = constant_stabiliser_gradients(params, x, state, d_out, d_c)
        ours = {k: layer.grads[f"{k}_l0"] for k in theirs}
        if not d_c.any():
            for k in theirs:
                np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-9, atol=1e-11, err_msg=k)
            assert np.abs(layer.state_grads[3]).max() > 1e-3  # d m_0: m_0 scales the initial c and n
        else:
            assert not np.allclose(ours["W"], theirs["W"], rtol=1e-3)


def test_log_sigmoid_is_accurate():
    x = np.concatenate([np.linspace(-100, 100, 20001), [-1e-8, 1e-8, 0.0, 17.0, -17.0]])
    for dtype, rtol in ((np.float64, 2e-15), (np.float32, 4e-7)):
        values = x.astype(dtype)
        exact = values.astype(np.float64)  # the rounded input: log sigmoid's condition number is ~|x|
        derivatives = np.empty_like(values)
        _slstm.log_sigmoid_block(values, derivatives)
        np.testing.assert_allclose(values, log_sigmoid(exact), rtol=rtol, atol=np.finfo(dtype).tiny * 1e8,
                                   err_msg=dtype.__name__)
        np.testing.assert_allclose(derivatives, 1 / (1 + np.exp(exact)), rtol=4 * rtol, atol=np.finfo(dtype).tiny * 1e8,
                                   err_msg=dtype.__name__)


def test_options_and_parameters():
    variant = lstmcore.get_variant("slstm")
    assert variant.state_names == ("h", "c", "n", "m")
    assert variant.parameter_count(88, 100) == 4 * 100 * (88 + 100) + 4 * 100
    assert variant.with_options(num_heads=4).parameter_count(88, 100) == 4 * 100 * (88 + 25) + 4 * 100
    with pytest.raises(ValueError, match="num_heads=3 must divide hidden_size=8"):
        lstmcore.LSTM(3, 8, variant="slstm", num_heads=3)
    with pytest.raises(ValueError, match="num_heads must be a positive integer"):
        lstmcore.LSTM(3, 8, variant="slstm", num_heads=0)
    with pytest.raises(ValueError, match="forget_gate must be one of sigmoid, exp"):
        lstmcore.LSTM(3, 8, variant="slstm", forget_gate="tanh")
    layer = lstmcore.LSTM(3, 8, variant="slstm", num_layers=2, bidirectional=True)
    output, (h, c, n, m) = layer(np.ones((4, 2, 3), np.float32))
    layer.backward(np.ones_like(output), d_m_n=np.ones_like(m))
    assert len(layer.state_grads) == 4
    with pytest.raises(ValueError, match="no state 'q': d_q_n must be None"):
        layer.backward(np.ones_like(output), d_q_n=np.ones_like(m))
    with pytest.raises(ValueError, match="has 4 state"):
        layer.backward(np.ones_like(output), h, c, n, m, m)
