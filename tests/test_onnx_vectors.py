"""``lstmcore.interop.from_onnx`` / ``to_onnx`` against the ONNX LSTM reference vectors.

The vectors (``shared/data/onnx-lstm``, see its README) were computed by code nobody on this project wrote: the ONNX
project's own node tests (one time step, constant weights) and ONNX Runtime 1.31.1 on random weights over 5 steps with
non-zero initial state (the discriminating ones: gate order, recurrence, peepholes, coupling, activations, lengths).
The data is found beside the repository (``../shared/data/onnx-lstm``) or through ``LSTMCORE_SHARED_DATA``; without it
these tests skip.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lstmcore
from shared_data import shared_data_dir
from lstmcore import ReverseOnly
from lstmcore.interop import from_onnx, to_onnx

ATOL = 1e-5
ATTRIBUTES = ("hidden_size", "direction", "input_forget", "activations", "activation_alpha", "activation_beta", "clip")


DATA = shared_data_dir("onnx-lstm", "test_lstm_*.npz")
if DATA is None:
    pytest.skip("ONNX LSTM reference vectors not found (set LSTMCORE_SHARED_DATA to the shared data folder)",
                allow_module_level=True)

VECTORS = sorted([*DATA.glob("test_lstm_*.npz"), *DATA.glob("generated/test_lstm_*.npz"),
                  *DATA.glob("ort_random/lstm_*.npz")])
ORT_VECTORS = [p for p in VECTORS if p.parent.name == "ort_random"]


def _id(path: Path) -> str:
    return str(path.relative_to(DATA).with_suffix(""))


def load(path: Path) -> dict:
    """A vector as a dict: the arrays by ONNX slot name, plus ``attrs`` (defaults filled in)."""
    with np.load(path) as z:
        case = {k: z[k] for k in z.files if z[k].dtype.kind not in "US"}
        case["attrs"] = json.loads(str(z["attributes_effective"]))
    return case


def onnx_attributes(case: dict) -> dict:
    return {k: case["attrs"][k] for k in ATTRIBUTES}


def run_onnx(layer, case: dict, dtype=np.float32) -> dict:
    """Run ``layer`` as the ONNX node of ``case`` would run: inputs and outputs in the case's ``layout``."""
    layout = case["attrs"].get("layout", 0)
    X = case["X"].astype(dtype)
    if layout == 1:  # [batch, seq, input] -> [seq, batch, input]
        X = X.transpose(1, 0, 2)
    T, B, _ = X.shape
    H = layer.hidden_size
    D = layer.num_directions
    state = None
    if "initial_h" in case or "initial_c" in case:
        zeros = np.zeros((D, B, H) if layout == 0 else (B, D, H), dtype)
        h0, c0 = (case.get(k, zeros).astype(dtype) for k in ("initial_h", "initial_c"))
        if layout == 1:
            h0, c0 = h0.transpose(1, 0, 2), c0.transpose(1, 0, 2)
        state = (np.ascontiguousarray(h0), np.ascontiguousarray(c0))
    output, (h_n, c_n) = layer(np.ascontiguousarray(X), state, lengths=case.get("sequence_lens"))
    Y = output.reshape(T, B, D, H).transpose(0, 2, 1, 3)  # [seq, num_directions, batch, hidden]
    if layout == 1:
        return {"Y": Y.transpose(2, 0, 1, 3), "Y_h": h_n.transpose(1, 0, 2), "Y_c": c_n.transpose(1, 0, 2)}
    return {"Y": Y, "Y_h": h_n, "Y_c": c_n}


def layer_from_case(case: dict, dtype=np.float32):
    tensors = {k: case[k].astype(dtype) if k in case else None for k in ("W", "R", "B", "P")}
    return from_onnx(**tensors, **onnx_attributes(case))


def assert_outputs(ours: dict, case: dict, atol=ATOL):
    compared = [k for k in ("Y", "Y_h", "Y_c") if k in case]
    assert compared
    for key in compared:
        np.testing.assert_allclose(ours[key], case[key], rtol=0, atol=atol, err_msg=f"{key} differs")


# -- the vectors -------------------------------------------------------------------------------------------------------
def test_all_vectors_found():
    names = {p.stem for p in VECTORS}
    assert {"test_lstm_defaults", "test_lstm_with_peepholes", "test_lstm_batchwise", "test_lstm_reverse",
            "test_lstm_bidirectional", "lstm_ort_fwd_basic", "lstm_ort_fwd_seq_lens"} <= names


@pytest.mark.parametrize("path", [pytest.param(p, id=_id(p)) for p in VECTORS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector(path, dtype):
    case = load(path)
    layer = layer_from_case(case, dtype)
    assert layer.dtype == dtype
    assert_outputs(run_onnx(layer, case, dtype), case)


def test_variant_follows_the_inputs():
    by_name = {p.stem: load(p) for p in VECTORS}
    assert layer_from_case(by_name["lstm_ort_fwd_basic"]).variant_name == "vanilla"
    assert layer_from_case(by_name["lstm_ort_fwd_peephole_h0_c0"]).variant_name == "peephole"
    assert layer_from_case(by_name["lstm_ort_fwd_input_forget"]).variant_name == "coupled"
    case = by_name["lstm_ort_fwd_basic"]
    cell = from_onnx(case["W"], case["R"], case["B"], input_forget=1).cells[0]
    assert cell.coupled and not cell.peephole_blocks and cell.gate_blocks == ("i", "o", "z")


def _to_layout1(case: dict) -> dict:
    out = dict(case, attrs=dict(case["attrs"], layout=1))
    out["X"] = case["X"].transpose(1, 0, 2)
    for key in ("initial_h", "initial_c", "Y_h", "Y_c"):
        if key in case:
            out[key] = case[key].transpose(1, 0, 2)
    if "Y" in case:
        out["Y"] = case["Y"].transpose(2, 0, 1, 3)
    return out


@pytest.mark.parametrize("path", [pytest.param(p, id=_id(p)) for p in ORT_VECTORS])
def test_vector_layout1_derived(path):
    """ONNX ``layout=1`` (batch-major) handled by transposing: the random ORT cases, transposed."""
    case = _to_layout1(load(path))
    assert_outputs(run_onnx(layer_from_case(case), case), case)


def _direction_half(case: dict, d: int, direction: str) -> dict:
    """One direction of a bidirectional case as a one-direction case."""
    out = {k: v[d:d + 1] for k, v in case.items() if k in ("W", "R", "B", "P", "initial_h", "initial_c", "Y_h", "Y_c")}
    out["X"] = case["X"]
    out["Y"] = case["Y"][:, d:d + 1]
    acts = case["attrs"]["activations"]
    out["attrs"] = dict(case["attrs"], direction=direction, activations=acts[3 * d:3 * d + 3] if acts else None)
    return out


@pytest.mark.parametrize("d, direction", [(0, "forward"), (1, "reverse")])
def test_reverse_only_from_bidirectional_ort(d, direction):
    """direction="reverse" alone, checked on the random ORT weights: the reverse half of the bidirectional vector."""
    case = _direction_half(load(DATA / "ort_random" / "lstm_ort_bidirectional_activations.npz"), d, direction)
    layer = layer_from_case(case)
    assert layer.num_directions == 1
    assert isinstance(layer.cells[0], ReverseOnly) == (direction == "reverse")
    assert_outputs(run_onnx(layer, case), case)


def _reverse_per_length(a: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Reverse each sequence's first ``lengths[b]`` steps of a (T, B, ...) array, leaving the padding in place."""
    out = a.copy()
    for b, n in enumerate(lengths):
        out[:n, b] = a[:n, b][::-1]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reverse_only_with_lengths_matches_reversed_input(dtype):
    """A reverse layer with sequence_lens equals a forward layer run on each sequence reversed within its length
    (ORT's seq_lens weights, lengths 5, 2, 4 and a zero-length one added), forward and backward."""
    case = load(DATA / "ort_random" / "lstm_ort_fwd_seq_lens.npz")
    lengths = np.array([5, 2, 0, 4], dtype=np.int32)
    rng = np.random.default_rng(0)
    T, B, H = case["X"].shape[0], len(lengths), case["attrs"]["hidden_size"]
    x = rng.standard_normal((T, B, case["X"].shape[2])).astype(dtype)
    state = tuple(rng.standard_normal((1, B, H)).astype(dtype) for _ in range(2))
    tensors = {k: case[k].astype(dtype) for k in ("W", "R", "B", "P")}
    reverse = from_onnx(**tensors, direction="reverse")
    forward = from_onnx(**tensors)
    out_r, (h_r, c_r) = reverse(x, state, lengths=lengths)
    out_f, (h_f, c_f) = forward(_reverse_per_length(x, lengths), state, lengths=lengths)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out_r, _reverse_per_length(out_f, lengths), atol=tol, rtol=0)
    np.testing.assert_allclose(h_r, h_f, atol=tol, rtol=0)
    np.testing.assert_allclose(c_r, c_f, atol=tol, rtol=0)
    np.testing.assert_array_equal(out_r[:, 2], 0)
    np.testing.assert_array_equal(h_r[0, 2], state[0][0, 2])

    d_out = rng.standard_normal(out_r.shape).astype(dtype)
    d_h, d_c = (rng.standard_normal(h_r.shape).astype(dtype) for _ in range(2))
    dx_r = reverse.backward(d_out, d_h, d_c)
    dx_f = forward.backward(_reverse_per_length(d_out, lengths), d_h, d_c)
    np.testing.assert_allclose(dx_r, _reverse_per_length(dx_f, lengths), atol=tol, rtol=0)
    for key in reverse.grads:
        np.testing.assert_allclose(reverse.grads[key], forward.grads[key], atol=10 * tol, rtol=0, err_msg=key)
    for a, b in zip(reverse.state_grads, forward.state_grads):
        np.testing.assert_allclose(a, b, atol=tol, rtol=0)


# -- round trips -------------------------------------------------------------------------------------------------------
def _blocks(a: np.ndarray, H: int, axis: int) -> dict:
    """ONNX gate blocks (i, o, f, c) of a [D, 4H, ...] or [D, 4H] array along ``axis``."""
    return dict(zip("iofc", np.split(a, 4, axis=axis)))


@pytest.mark.parametrize("path", [pytest.param(p, id=_id(p)) for p in VECTORS])
def test_round_trip_to_onnx(path):
    case = load(path)
    layer = layer_from_case(case)
    exported = to_onnx(layer)
    attrs = case["attrs"]
    H, D = attrs["hidden_size"], case["W"].shape[0]
    coupled = bool(attrs["input_forget"])
    # W and R come back exactly, except ONNX's unused forget block of a coupled cell (exported as zeros)
    for key in ("W", "R"):
        assert exported[key].shape == case[key].shape and exported[key].dtype == np.float32
        ours, theirs = _blocks(exported[key], H, 1), _blocks(case[key], H, 1)
        for gate in "iofc":
            if coupled and gate == "f":
                np.testing.assert_array_equal(ours[gate], 0)
            else:
                np.testing.assert_array_equal(ours[gate], theirs[gate], err_msg=f"{key} block {gate}")
    # B: ONNX's Wb + Rb is our one bias; it comes back in the Wb half with Rb = 0
    assert exported["B"].shape == (D, 8 * H)
    given = case.get("B", np.zeros((D, 8 * H), np.float32))
    ours_sum = _blocks(exported["B"][:, :4 * H] + exported["B"][:, 4 * H:], H, 1)
    theirs_sum = _blocks(given[:, :4 * H] + given[:, 4 * H:], H, 1)
    for gate in "iofc":
        if not (coupled and gate == "f"):
            np.testing.assert_allclose(ours_sum[gate], theirs_sum[gate], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(exported["B"][:, 4 * H:], 0)
    # P (order i, o, f): the coupled cell has no forget peephole
    if "P" in case:
        for k, gate in enumerate("iof"):
            block = slice(k * H, (k + 1) * H)
            expected = 0 if (coupled and gate == "f") else case["P"][:, block]
            np.testing.assert_array_equal(exported["P"][:, block], expected)
    else:
        assert exported["P"] is None
    # attributes
    assert exported["hidden_size"] == H
    assert exported["direction"] == attrs["direction"]
    assert exported["input_forget"] == attrs["input_forget"]
    assert exported["activations"] == (attrs["activations"] or ["Sigmoid", "Tanh", "Tanh"] * D)
    assert (exported["clip"] is None) == (attrs["clip"] is None)
    if attrs["clip"] is not None:
        assert exported["clip"] == pytest.approx(attrs["clip"])
    # and the re-imported layer computes the same thing
    again = from_onnx(**exported)
    for key, value in layer.params.items():
        np.testing.assert_allclose(again.params[key], value, rtol=0, atol=1e-7, err_msg=key)
    first, second = run_onnx(layer, case), run_onnx(again, case)
    for key in first:
        np.testing.assert_allclose(second[key], first[key], rtol=0, atol=1e-6, err_msg=key)


ROUND_TRIP_LAYERS = [
    ("vanilla", {}),
    ("peephole", {}),
    ("coupled", {}),
    ("niaf", {}),
    ("noaf", {}),
    ("peephole", {"gate_activation": ("hard_sigmoid", 0.3, 0.4), "output_activation": "softsign", "clip": 2.5}),
    ("vanilla", {"bidirectional": True, "reverse_options": {"input_activation": "relu"}}),
    ("coupled", {"bidirectional": True, "gate_activation": "hard_sigmoid"}),
]


@pytest.mark.parametrize("variant, options", ROUND_TRIP_LAYERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_from_onnx_of_to_onnx(variant, options, dtype):
    layer = lstmcore.LSTM(3, 4, variant=variant, dtype=dtype, seed=1, **options)
    exported = to_onnx(layer)
    assert exported["W"].dtype == dtype
    again = from_onnx(**exported)
    assert again.dtype == dtype and again.bidirectional == layer.bidirectional
    assert [c.kernel_spec for c in again.cells] == [c.kernel_spec for c in layer.cells]
    assert again.params.keys() == layer.params.keys()
    for key, value in layer.params.items():
        np.testing.assert_array_equal(again.params[key], value, err_msg=key)
    x = np.random.default_rng(2).standard_normal((6, 2, 3)).astype(dtype)
    lengths = np.array([6, 3])
    out, (h_n, c_n) = layer(x, lengths=lengths)
    out2, (h_n2, c_n2) = again(x, lengths=lengths)
    for a, b in ((out, out2), (h_n, h_n2), (c_n, c_n2)):
        np.testing.assert_array_equal(a, b)


def test_round_trip_reverse_only():
    case = load(DATA / "ort_random" / "lstm_ort_fwd_peephole_h0_c0.npz")
    layer = from_onnx(case["W"], case["R"], case["B"], case["P"], direction="reverse")
    exported = to_onnx(layer)
    assert exported["direction"] == "reverse"
    np.testing.assert_array_equal(exported["W"], case["W"])
    again = from_onnx(**exported)
    assert isinstance(again.cells[0], ReverseOnly)
    x = case["X"]
    np.testing.assert_array_equal(again(x)[0], layer(x)[0])


def test_activation_alpha_beta_consumed_in_order():
    case = load(DATA / "ort_random" / "lstm_ort_fwd_basic.npz")
    args = (case["W"], case["R"], case["B"])
    cell = from_onnx(*args, activations=["HardSigmoid", "Affine", "HardSigmoid"],
                     activation_alpha=[0.3, 1.0, 0.25], activation_beta=[0.6, 0.0, 0.4]).cells[0]
    assert (cell.gate_activation.name, cell.gate_activation.alpha, cell.gate_activation.beta) == ("hard_sigmoid", 0.3,
                                                                                                   pytest.approx(0.6))
    assert cell.input_activation.name == "identity"
    assert (cell.output_activation.alpha, cell.output_activation.beta) == (0.25, 0.4)
    # LeakyRelu takes an alpha but no beta: the first beta goes to the HardSigmoid after it
    cell = from_onnx(*args, activations=["LeakyRelu", "HardSigmoid", "tanh"], activation_alpha=[0.0, 0.1],
                     activation_beta=[0.7]).cells[0]
    assert cell.gate_activation.name == "relu"
    assert (cell.input_activation.name, cell.input_activation.alpha, cell.input_activation.beta) == \
        ("hard_sigmoid", 0.1, 0.7)
    # HardSigmoid defaults (0.2, 0.5); lower-case and our own spellings accepted
    cell = from_onnx(*args, activations=["hardsigmoid", "softsign", "relu"]).cells[0]
    assert (cell.gate_activation.alpha, cell.gate_activation.beta) == (0.2, 0.5)
    cell = from_onnx(*args, activations=["hard_sigmoid", "identity", "Relu"]).cells[0]
    assert cell.input_activation.name == "identity"


# -- errors ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def basic():
    return load(DATA / "ort_random" / "lstm_ort_fwd_basic.npz")


@pytest.mark.parametrize("change, match", [
    (lambda c: {"W": c["W"][0]}, "3-D"),
    (lambda c: {"R": c["R"][:, :20]}, "R has shape"),
    (lambda c: {"W": c["W"][:, :20]}, "W has shape"),
    (lambda c: {"B": c["B"][:, :24]}, "B has shape"),
    (lambda c: {"P": np.zeros((1, 12), np.float32)}, "P has shape"),
    (lambda c: {"direction": "bidirectional"}, "W has shape"),
    (lambda c: {"direction": "backward"}, "direction must be"),
    (lambda c: {"hidden_size": 5}, "hidden_size=5"),
    (lambda c: {"input_forget": 2}, "input_forget"),
    (lambda c: {"activations": ["Sigmoid", "Tanh"]}, "3 names per direction"),
    (lambda c: {"activations": ["Sigmoid", "Elu", "Tanh"]}, "not supported"),
    (lambda c: {"activations": ["Sigmoid", "Softplus", "Tanh"]}, "not supported"),
    (lambda c: {"activations": ["Sigmoid", "Gelu", "Tanh"]}, "unknown ONNX activation"),
    (lambda c: {"activations": ["Sigmoid", "Affine", "Tanh"]}, "explicitly"),
    (lambda c: {"activations": ["Sigmoid", "Affine", "Tanh"], "activation_alpha": [2.0],
                "activation_beta": [0.0]}, "alpha=2"),
    (lambda c: {"activation_alpha": [0.1]}, "left over"),
    (lambda c: {"clip": -1.0}, "clip"),
])
def test_from_onnx_errors(basic, change, match):
    kwargs = {"W": basic["W"], "R": basic["R"], "B": basic["B"], **change(basic)}
    with pytest.raises(ValueError, match=match):
        from_onnx(**kwargs)


def test_to_onnx_errors():
    with pytest.raises(ValueError, match="num_layers=2"):
        to_onnx(lstmcore.LSTM(3, 4, num_layers=2))
    for variant in ("nig", "nog"):
        with pytest.raises(ValueError, match="cannot be mapped to ONNX"):
            to_onnx(lstmcore.LSTM(3, 4, variant=variant))
    with pytest.raises(ValueError, match="no forget gate"):
        to_onnx(lstmcore.LSTM(3, 4, variant="nfg"))
    with pytest.raises(ValueError, match="between the two directions"):
        to_onnx(lstmcore.LSTM(3, 4, bidirectional=True, clip=1.0, reverse_options={"clip": 2.0}))
    with pytest.raises(TypeError, match="lstmcore.LSTM"):
        to_onnx({"W": np.zeros((1, 16, 3))})
