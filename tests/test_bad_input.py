"""Bad input gives a clear Python exception that names the culprit, never a crash or silent garbage."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lstmcore
from lstmcore._kernels import _driver

T, B, I, H = 5, 2, 3, 4


@pytest.fixture
def layer():
    return lstmcore.LSTM(I, H, variant="peephole", seed=0)


def x32(*shape):
    return np.random.default_rng(0).normal(size=shape or (T, B, I)).astype(np.float32)


def zeros_state(n=1, batch=B, dtype=np.float32):
    return np.zeros((n, batch, H), dtype), np.zeros((n, batch, H), dtype)


# ---------------------------------------------------------------------------------------------------------------------
# input shapes and types

@pytest.mark.parametrize("shape", [(T, I), (T, B, I, 1), (I,)])
def test_wrong_rank(layer, shape):
    with pytest.raises(ValueError, match=r"x must be 3-D"):
        layer(np.zeros(shape, np.float32))


def test_scalar_input(layer):
    with pytest.raises(ValueError, match=r"\bx\b"):
        layer(np.float32(1.0))


def test_wrong_feature_size(layer):
    with pytest.raises(ValueError, match=r"input_size"):
        layer(np.zeros((T, B, I + 1), np.float32))


def test_wrong_feature_size_batch_first():
    layer = lstmcore.LSTM(I, H, batch_first=True)
    with pytest.raises(ValueError, match=r"input_size"):
        layer(np.zeros((B, T, I + 2), np.float32))


def test_empty_batch(layer):
    with pytest.raises(ValueError, match=r"\bx\b.*batch|batch.*\bx\b"):
        layer(np.zeros((T, 0, I), np.float32))


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("shape", [(1, B + 1, H), (2, B, H), (1, B, H + 1), (B, H)])
def test_wrong_state_shape(layer, which, shape):
    state = list(zeros_state())
    state[which] = np.zeros(shape, np.float32)
    name = "h_0" if which == 0 else "c_0"
    with pytest.raises(ValueError, match=name):
        layer(x32(), tuple(state))


def test_state_shape_stacked_bidirectional():
    layer = lstmcore.LSTM(I, H, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match=r"h_0.*\(4, 2, 4\)"):
        layer(x32(), zeros_state(n=2))
    layer(x32(), zeros_state(n=4))  # the right one works


@pytest.mark.parametrize("state", [np.zeros((1, B, H), np.float32), (np.zeros((1, B, H), np.float32),),
                                   {"h": 0, "c": 0}, "state", 3.0])
def test_state_not_a_pair(layer, state):
    with pytest.raises(TypeError, match="state"):
        layer(x32(), state)


def test_state_as_list_is_accepted(layer):
    h, c = zeros_state()
    np.testing.assert_array_equal(layer(x32(), [h, c])[0], layer(x32(), (h, c))[0])


@pytest.mark.parametrize("layer_dtype,other", [(np.float32, np.float64), (np.float64, np.float32)])
def test_mismatched_float_dtypes(layer_dtype, other):
    layer = lstmcore.LSTM(I, H, dtype=layer_dtype)
    with pytest.raises(TypeError, match=r"\bx\b.*dtype"):
        layer(x32().astype(other))
    with pytest.raises(TypeError, match=r"h_0.*dtype"):
        layer(x32().astype(layer_dtype), zeros_state(dtype=other))
    out, _ = layer(x32().astype(layer_dtype))
    with pytest.raises(TypeError, match=r"d_output.*dtype"):
        layer.backward(out.astype(other))
    with pytest.raises(TypeError, match=r"d_h_n.*dtype"):
        layer.backward(out, np.zeros((1, B, H), other))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, bool, np.complex64, np.complex128, np.float16, object])
def test_unsupported_input_dtypes(layer, dtype):
    with pytest.raises(TypeError, match=r"\bx\b"):
        layer(np.zeros((T, B, I), dtype=dtype))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.complex128, np.float16, "float128", "nonsense", object])
def test_unsupported_layer_dtypes(dtype):
    if dtype == "float128" and not hasattr(np, "float128"):
        pytest.skip("no float128 here")
    with pytest.raises(TypeError, match="dtype"):
        lstmcore.LSTM(I, H, dtype=dtype)


def test_non_numeric_list_input_names_x(layer):
    with pytest.raises((TypeError, ValueError), match=r"\bx\b"):
        layer([[["a", "b", "c"]] * B] * T)


# ---------------------------------------------------------------------------------------------------------------------
# NaN and Inf

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(layer, bad):
    x = x32()
    x[2, 1, 0] = bad
    with pytest.raises(ValueError, match=r"\bx\b.*NaN or Inf"):
        layer(x)


@pytest.mark.parametrize("which", [0, 1])
def test_non_finite_state(layer, which):
    state = list(zeros_state())
    state[which][0, 1, 2] = np.nan
    with pytest.raises(ValueError, match=("h_0" if which == 0 else "c_0") + ".*NaN"):
        layer(x32(), tuple(state))


def test_non_finite_output_gradients(layer):
    out, (h, c) = layer(x32())
    bad = np.ones_like(out)
    bad[1, 1, 1] = np.inf
    with pytest.raises(ValueError, match="d_output.*NaN or Inf"):
        layer.backward(bad)
    bad_h = np.zeros_like(h)
    bad_h[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="d_h_n.*NaN"):
        layer.backward(np.ones_like(out), bad_h)
    with pytest.raises(ValueError, match="d_c_n.*NaN"):
        layer.backward(np.ones_like(out), None, bad_h)


@pytest.mark.parametrize("name", ["W_l0", "R_l0", "b_l0", "p_l0", "W_l1_reverse", "p_l1_reverse"])
def test_non_finite_params(name):
    layer = lstmcore.LSTM(I, H, variant="peephole", num_layers=2, bidirectional=True, seed=0)
    layer.params[name].flat[3] = np.nan
    with pytest.raises(ValueError, match=f"{name}.*NaN or Inf"):
        layer(x32())


def test_check_finite_false_propagates_nan():
    layer = lstmcore.LSTM(I, H, variant="peephole", seed=0, check_finite=False)
    x = x32()
    x[1, 0, 0] = np.nan
    out, (h, c) = layer(x)
    assert np.isnan(out[1:, 0]).all() and not np.isnan(out[:, 1]).any()  # only the poisoned sequence, from t = 1
    assert np.isnan(h[0, 0]).all() and not np.isnan(h[0, 1]).any()
    d_x = layer.backward(np.ones_like(out))
    assert np.isnan(d_x).any()
    # NaN weights and NaN gradients from above, likewise
    layer = lstmcore.LSTM(I, H, variant="peephole", seed=0, check_finite=False)
    layer.params["p_l0"][0] = np.nan
    out, _ = layer(x32())
    assert np.isnan(out).any()
    layer = lstmcore.LSTM(I, H, seed=0, check_finite=False)
    out, _ = layer(x32())
    d = np.ones_like(out)
    d[-1, 0, 0] = np.nan
    assert np.isnan(layer.backward(d)).any()


# ---------------------------------------------------------------------------------------------------------------------
# lengths

@pytest.mark.parametrize("lengths", [[-1, 2], [T + 1, 2], [0, 100]])
def test_lengths_out_of_range(layer, lengths):
    with pytest.raises(ValueError, match=r"lengths.*\[0, T\]"):
        layer(x32(), lengths=lengths)


@pytest.mark.parametrize("lengths", [[5, 2, 1], [5], [[5, 2]], 5, []])
def test_lengths_wrong_shape(layer, lengths):
    with pytest.raises(ValueError, match=r"lengths.*shape"):
        layer(x32(), lengths=lengths)


@pytest.mark.parametrize("lengths", [[2.5, 1], [np.nan, 1], ["a", "b"], [True, False], [1 + 1j, 2]])
def test_lengths_not_integers(layer, lengths):
    with pytest.raises(TypeError, match=r"lengths.*integer"):
        layer(x32(), lengths=lengths)


def test_huge_lengths_do_not_wrap(layer):
    """Lengths beyond int32 must be refused, not wrapped around on the way to the kernel's int32 array."""
    with pytest.raises(ValueError, match="lengths"):
        layer(x32(), lengths=np.array([2 ** 32 + 1, 1], dtype=np.int64))
    with pytest.raises(ValueError, match="lengths"):
        layer(x32(), lengths=np.array([2 ** 63, 1], dtype=np.uint64))


# ---------------------------------------------------------------------------------------------------------------------
# backward

def test_backward_before_forward(layer):
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.zeros((T, B, H), np.float32))


@pytest.mark.parametrize("shape", [(T, B, H + 1), (T - 1, B, H), (T, B + 1, H), (B, T, H), (T, B * H)])
def test_d_output_wrong_shape(layer, shape):
    layer(x32())
    with pytest.raises(ValueError, match="d_output"):
        layer.backward(np.zeros(shape, np.float32))


def test_d_output_wrong_shape_bidirectional_batch_first():
    layer = lstmcore.LSTM(I, H, bidirectional=True, batch_first=True)
    layer(x32(B, T, I))
    with pytest.raises(ValueError, match=r"d_output.*\(2, 5, 8\)"):
        layer.backward(np.zeros((T, B, 2 * H), np.float32))
    layer.backward(np.zeros((B, T, 2 * H), np.float32))


@pytest.mark.parametrize("which", ["d_h_n", "d_c_n"])
def test_final_state_gradient_wrong_shape(layer, which):
    out, _ = layer(x32())
    kwargs = {which: np.zeros((2, B, H), np.float32)}
    with pytest.raises(ValueError, match=which):
        layer.backward(np.zeros_like(out), **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# construction

def test_unknown_variant():
    with pytest.raises(KeyError, match="nope.*vanilla"):
        lstmcore.LSTM(I, H, variant="nope")


def test_unknown_variant_option():
    with pytest.raises(TypeError, match="forget_gate_offset"):
        lstmcore.LSTM(I, H, forget_gate_offset=1.0)


@pytest.mark.parametrize("option", ["gate_activation", "input_activation", "output_activation"])
def test_bad_activation_name(option):
    with pytest.raises(ValueError, match=f"{option}.*swish"):
        lstmcore.LSTM(I, H, **{option: "swish"})


@pytest.mark.parametrize("value", [3, None, ("hard_sigmoid", 0.2), ("swish", 1, 2)])
def test_bad_activation_value(value):
    with pytest.raises((TypeError, ValueError), match="gate_activation"):
        lstmcore.LSTM(I, H, gate_activation=value)


def test_activation_names_case_insensitive_and_tuple():
    layer = lstmcore.LSTM(I, H, gate_activation=("Hard_Sigmoid", 0.3, 0.4), input_activation="RELU")
    cell = layer.cells[0]
    assert (cell.gate_activation.name, cell.gate_activation.alpha, cell.gate_activation.beta) == \
        ("hard_sigmoid", 0.3, 0.4)
    assert cell.input_activation.name == "relu"


@pytest.mark.parametrize("clip", [0, -1.0, float("nan"), float("inf")])
def test_bad_clip(clip):
    with pytest.raises(ValueError, match="clip"):
        lstmcore.LSTM(I, H, clip=clip)


@pytest.mark.parametrize("argument,kwargs", [
    ("input_size", dict(input_size=0)), ("input_size", dict(input_size=-3)), ("input_size", dict(input_size=2.5)),
    ("hidden_size", dict(hidden_size=0)), ("hidden_size", dict(hidden_size=-1)), ("hidden_size", dict(hidden_size="4")),
    ("num_layers", dict(num_layers=0)), ("num_layers", dict(num_layers=-2)), ("input_size", dict(input_size=True)),
])
def test_bad_sizes(argument, kwargs):
    args = dict(input_size=I, hidden_size=H)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=argument):
        lstmcore.LSTM(**args)


def test_numpy_integer_sizes_accepted():
    layer = lstmcore.LSTM(np.int64(I), np.int32(H), num_layers=np.int16(2))
    assert layer(x32())[0].shape == (T, B, H)


def test_reverse_options_without_bidirectional():
    with pytest.raises(ValueError, match="reverse_options.*bidirectional"):
        lstmcore.LSTM(I, H, reverse_options=dict(clip=1.0))


def test_bad_reverse_options():
    with pytest.raises(TypeError, match="nope"):
        lstmcore.LSTM(I, H, bidirectional=True, reverse_options=dict(nope=1))
    with pytest.raises(ValueError, match="clip"):
        lstmcore.LSTM(I, H, bidirectional=True, reverse_options=dict(clip=-1))


# ---------------------------------------------------------------------------------------------------------------------
# replaced parameters

@pytest.mark.parametrize("value,error,pattern", [
    (np.zeros((4 * H, I + 1), np.float32), ValueError, r"W_l0.*shape"),
    (np.zeros((4 * H, I), np.float64), TypeError, r"W_l0.*dtype"),
    ([[0.0] * I] * (4 * H), TypeError, r"W_l0"),
])
def test_replaced_params_checked(layer, value, error, pattern):
    layer.params["W_l0"] = value
    with pytest.raises(error, match=pattern):
        layer(x32())


def test_missing_param(layer):
    del layer.params["p_l0"]
    with pytest.raises((KeyError, TypeError, ValueError), match="p_l0"):
        layer(x32())


# ---------------------------------------------------------------------------------------------------------------------
# the raw kernel wrappers: inconsistent arrays raise, they never read or write out of bounds

def _raw_arrays(variant="peephole", clip=None, lengths=True, dtype=np.float64):
    cell = lstmcore.get_variant(variant).with_options(clip=clip)
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=shape).astype(dtype) for k, shape in cell.parameter_shapes(I, H).items()}
    W, b, weights, p = cell.driver_parameters(params)
    fwd = dict(x=rng.normal(size=(T, B, I)).astype(dtype), W=W, b=b, weights=weights, p=p,
               lengths=np.array([T, 2], np.int32) if lengths else None,
               h0=np.zeros((B, H), dtype), c0=np.zeros((B, H), dtype), out=np.zeros((T, B, H), dtype))
    return cell, fwd


def _call_forward(cell, arrays, reverse=False):
    a = arrays
    return _driver.forward(cell.step_kernel(), reverse, a["x"], a["W"], a["b"], a["weights"], a["p"], a["lengths"],
                           (a["h0"], a["c0"]), a["out"])


def _backward_arrays(cell, fwd):
    _, tape = _call_forward(cell, fwd)
    grads = {k: np.zeros(shape, fwd["x"].dtype) for k, shape in cell.parameter_shapes(I, H).items()}
    dW, db, d_weights, dp = cell.driver_parameters(grads)
    return dict(tape=tape, d_out=np.ones((T, B, H)), dh=np.zeros((B, H)), dc=np.zeros((B, H)), dW=dW, db=db,
                d_weights=d_weights, dp=dp, dx=np.zeros((T, B, I)))


def _call_backward(cell, arrays, accumulate=False):
    a = arrays
    return _driver.backward(a["tape"], a["d_out"], (a["dh"], a["dc"]), a["dW"], a["db"], a["d_weights"], a["dp"],
                            a["dx"], accumulate)


def test_raw_kernels_consistent_arrays_work():
    for clip in (None, 1.0):
        cell, fwd = _raw_arrays(clip=clip)
        _call_forward(cell, fwd)
        assert fwd["out"].any()
        bwd = _backward_arrays(cell, fwd)
        _call_backward(cell, bwd)
        assert bwd["dW"].any() and bwd["dx"].any()


FORWARD_BREAKS = {
    "W rows": ("W", lambda a: a[:-1]),
    "W columns": ("W", lambda a: np.zeros((a.shape[0], I + 1))),
    "R rows": ("weights", lambda a: (a[0][:-H],)),
    "R columns": ("weights", lambda a: (np.zeros((a[0].shape[0], H + 1)),)),
    "R missing": ("weights", lambda a: ()),
    "R not contiguous": ("weights", lambda a: (np.asfortranarray(a[0]),)),
    "R a list": ("weights", lambda a: (list(a[0]),)),
    "b size": ("b", lambda a: a[:-1]),
    "p size": ("p", lambda a: a[:-1]),
    "p missing": ("p", lambda a: None),
    "lengths size": ("lengths", lambda a: np.array([T], np.int32)),
    "lengths too large": ("lengths", lambda a: np.array([T + 1, 0], np.int32)),
    "lengths negative": ("lengths", lambda a: np.array([-1, 0], np.int32)),
    "h0 B": ("h0", lambda a: np.zeros((B + 1, H))),
    "c0 H": ("c0", lambda a: np.zeros((B, H - 1))),
    "out H": ("out", lambda a: np.zeros((T, B, H + 1))),
    "out T": ("out", lambda a: np.zeros((T - 1, B, H))),
    "out overlapping rows": ("out", lambda a: np.lib.stride_tricks.as_strided(a, strides=(8 * H, 8, 8))),
    "out reversed": ("out", lambda a: a[::-1]),
    "x not contiguous": ("x", lambda a: np.asfortranarray(a)),
    "float32 mixed in": ("h0", lambda a: a.astype(np.float32)),
    "lengths int64": ("lengths", lambda a: a.astype(np.int64)),
}


@pytest.mark.parametrize("case", list(FORWARD_BREAKS))
def test_raw_forward_inconsistent(case):
    key, mutate = FORWARD_BREAKS[case]
    cell, fwd = _raw_arrays()
    fwd[key] = mutate(fwd[key])
    with pytest.raises((ValueError, TypeError)):
        _call_forward(cell, fwd)


def test_raw_forward_peephole_given_to_vanilla():
    cell, fwd = _raw_arrays("vanilla")
    fwd["p"] = np.zeros(3 * H)
    with pytest.raises(ValueError, match="parameter vectors"):
        _call_forward(cell, fwd)


BACKWARD_BREAKS = {
    "d_out H": ("d_out", lambda a: np.ones((T, B, H - 1))),
    "d_out T": ("d_out", lambda a: np.ones((T + 1, B, H))),
    "d_out overlapping rows": ("d_out", lambda a: np.lib.stride_tricks.as_strided(a, strides=(0, 8 * H, 8))),
    "dh": ("dh", lambda a: np.zeros((B + 1, H))),
    "dc": ("dc", lambda a: np.zeros((B, H - 1))),
    "dW": ("dW", lambda a: np.zeros((a.shape[0], I + 1))),
    "dR": ("d_weights", lambda a: (a[0][:-1],)),
    "dR read-only": ("d_weights", lambda a: (np.lib.stride_tricks.as_strided(a[0], writeable=False),)),
    "dR missing": ("d_weights", lambda a: ()),
    "db": ("db", lambda a: a[:-1]),
    "dp size": ("dp", lambda a: a[:-1]),
    "dp missing": ("dp", lambda a: None),
    "dx": ("dx", lambda a: np.zeros((T, B + 1, I))),
    "dx read-only": ("dx", lambda a: np.lib.stride_tricks.as_strided(a, writeable=False)),
    "float32 mixed in": ("dW", lambda a: a.astype(np.float32)),
    "tape of another call": ("tape", lambda a: "not a tape"),
}


@pytest.mark.parametrize("case", list(BACKWARD_BREAKS))
def test_raw_backward_inconsistent(case):
    key, mutate = BACKWARD_BREAKS[case]
    cell, fwd = _raw_arrays()
    bwd = _backward_arrays(cell, fwd)
    bwd[key] = mutate(bwd[key])
    with pytest.raises((ValueError, TypeError)):
        _call_backward(cell, bwd)


def _run_isolated(code):
    """Run ``code`` in a fresh interpreter (so a crash is a test failure, not the end of the test session)."""
    prelude = textwrap.dedent("""
        import numpy as np, lstmcore
        from lstmcore._kernels import _driver, _gated
        nan = float("nan")
        T, B, I, H = 3, 2, 4, 5
        x = np.zeros((T, B, I)); W = np.zeros((4 * H, I)); R = np.zeros((4 * H, H)); b = np.zeros(4 * H)
        h0 = np.zeros((B, H)); c0 = np.zeros((B, H)); out = np.zeros((T, B, H))
    """)
    # cwd="/": ``python -c`` puts the working directory first on sys.path, and the repository root holds the
    # uncompiled source tree, which would shadow the installed package.
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, cwd="/")


INCONSISTENT_SPECS = [dict(blocks="zifo"), dict(blocks="ifoz", peepholes="oi"), dict(blocks="ifoz", peepholes="x"),
                      dict(blocks="iz", coupled=False, peepholes="f"), dict(blocks="ifz", coupled=True),
                      dict(blocks="ioz", gate_recurrence=True), dict(blocks="ifoz", clip=-1.0),
                      dict(blocks="ifoz", gate_activation=("relu6", 0, 0)),
                      dict(blocks="ifoz", gate_activation=("hard_sigmoid", float("nan"), 0.5))]


@pytest.fixture(scope="module")
def inconsistent_spec_outcomes():
    """Every spec of ``INCONSISTENT_SPECS`` tried in one fresh interpreter, in order: one line per spec it survived
    (a crash leaves the specs from there on without a line)."""
    result = _run_isolated(f"""
        for spec in {INCONSISTENT_SPECS!r}:
            try:
                _gated.GatedKernel(**spec)
                print("accepted", flush=True)
            except ValueError as exc:
                print("ValueError", exc, flush=True)
    """)
    return result, result.stdout.splitlines()


@pytest.mark.parametrize("index", range(len(INCONSISTENT_SPECS)), ids=[str(s) for s in INCONSISTENT_SPECS])
def test_gated_kernel_refuses_inconsistent_specs(index, inconsistent_spec_outcomes):
    result, lines = inconsistent_spec_outcomes
    assert index < len(lines), f"crashed with return code {result.returncode}: {result.stderr[-500:]}"
    assert lines[index].startswith("ValueError")


def test_driver_checks_the_cell_description():
    """A CellKernel whose description was never filled (all zero) is refused before anything runs."""
    result = _run_isolated("""
        try:
            _driver.forward(_driver.CellKernel(), False, x, W, b, (R,), None, None, (h0, c0), out)
        except ValueError as exc:
            print("ValueError", exc)
    """)
    assert result.returncode == 0, f"crashed with return code {result.returncode}: {result.stderr[-500:]}"
    assert "ValueError" in result.stdout and "n_blocks" in result.stdout
