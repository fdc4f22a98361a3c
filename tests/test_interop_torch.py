"""``lstmcore.interop.from_torch`` / ``to_torch`` against PyTorch's own ``nn.LSTM``: outputs, final states and every
gradient (torch autograd of a random linear loss vs our BPTT, mapped back through the same weight mapping)."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lstmcore  # noqa: E402
from lstmcore import ReverseOnly  # noqa: E402
from lstmcore.interop import from_onnx, from_torch, to_torch  # noqa: E402
from lstmcore.interop._torch import torch_arrays  # noqa: E402

CONFIGS = [  # num_layers, bidirectional, batch_first
    (1, False, False),
    (2, False, False),
    (1, True, False),
    (1, False, True),
    (3, True, True),
]
DTYPES = [np.float32, np.float64]
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
TOL = {np.float32: dict(rtol=1e-5, atol=2e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}
GRAD_TOL = {np.float32: dict(rtol=1e-4, atol=2e-5), np.float64: dict(rtol=1e-9, atol=1e-11)}
I, H, T, B = 5, 4, 7, 3


def _config_id(cfg):
    layers, bi, bf = cfg
    return f"L{layers}" + ("-bi" if bi else "") + ("-batch_first" if bf else "")


def make_module(cfg, dtype, seed=0, **kwargs):
    layers, bi, bf = cfg
    torch.manual_seed(seed)
    module = torch.nn.LSTM(I, H, num_layers=layers, bidirectional=bi, batch_first=bf, dtype=TORCH_DTYPE[dtype],
                           **kwargs)
    with torch.no_grad():  # PyTorch's init is small; widen it so that the gates leave their linear range
        for p in module.parameters():
            p.uniform_(-0.8, 0.8)
    return module


def make_inputs(cfg, dtype, with_state, seed=1):
    layers, bi, bf = cfg
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, I) if bf else (T, B, I)).astype(dtype)
    shape = (layers * (2 if bi else 1), B, H)
    state = tuple(rng.standard_normal(shape).astype(dtype) for _ in range(2)) if with_state else None
    return x, state


def torch_run(module, x, state, lengths=None):
    """Forward through ``module`` with autograd on for the input and the initial state."""
    xt = torch.tensor(x, requires_grad=True)
    st = tuple(torch.tensor(s, requires_grad=True) for s in state) if state is not None else None
    if lengths is None:
        out, (h_n, c_n) = module(xt, st)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=module.batch_first,
                                                         enforce_sorted=False)
        out, (h_n, c_n) = module(packed, st)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=module.batch_first, total_length=T)
    return xt, st, out, h_n, c_n


def assert_close(ours, theirs, dtype, tol=TOL, what=""):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert ours.shape == theirs.shape, what
    np.testing.assert_allclose(ours, theirs, **tol[dtype], err_msg=what)


def assert_same_forward(ours, theirs, dtype):
    """``(output, h_n, c_n)`` of our layer and of torch's, each within ``TOL``."""
    for a, b, what in zip(ours, theirs, ("output", "h_n", "c_n")):
        assert_close(a, b, dtype, what=what)


# -- forward -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", CONFIGS, ids=_config_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "initial-state"])
def test_from_torch_forward(cfg, dtype, with_state):
    module = make_module(cfg, dtype)
    layer = from_torch(module)
    assert (layer.num_layers, layer.bidirectional, layer.batch_first) == cfg
    assert layer.dtype == dtype and layer.variant_name == "vanilla"
    x, state = make_inputs(cfg, dtype, with_state)
    out, (h_n, c_n) = layer(x, state)
    _, _, t_out, t_h, t_c = torch_run(module, x, state)
    assert_same_forward((out, h_n, c_n), (t_out, t_h, t_c), dtype)


@pytest.mark.parametrize("cfg", CONFIGS, ids=_config_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_to_torch_forward(cfg, dtype):
    layers, bi, bf = cfg
    layer = lstmcore.LSTM(I, H, num_layers=layers, bidirectional=bi, batch_first=bf, dtype=dtype, seed=3)
    module = to_torch(layer)
    assert isinstance(module, torch.nn.LSTM)
    assert (module.num_layers, module.bidirectional, module.batch_first) == cfg
    assert module.weight_ih_l0.dtype == TORCH_DTYPE[dtype]
    x, state = make_inputs(cfg, dtype, True)
    out, (h_n, c_n) = layer(x, state)
    with torch.no_grad():
        t_out, (t_h, t_c) = module(torch.tensor(x), tuple(torch.tensor(s) for s in state))
    assert_same_forward((out, h_n, c_n), (t_out, t_h, t_c), dtype)


@pytest.mark.parametrize("cfg", CONFIGS, ids=_config_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trips(cfg, dtype):
    layers, bi, bf = cfg
    layer = lstmcore.LSTM(I, H, num_layers=layers, bidirectional=bi, batch_first=bf, dtype=dtype, seed=4)
    again = from_torch(to_torch(layer))
    assert again.params.keys() == layer.params.keys()
    for key, value in layer.params.items():
        np.testing.assert_array_equal(again.params[key], value, err_msg=key)
        assert again.params[key].dtype == dtype

    module = make_module(cfg, dtype)
    back = dict(to_torch(from_torch(module)).named_parameters())
    for name, value in module.named_parameters():
        if name.startswith("bias_ih"):  # the two biases come back summed into bias_ih, bias_hh = 0
            summed = value + getattr(module, name.replace("bias_ih", "bias_hh"))
            np.testing.assert_array_equal(back[name].detach().numpy(), summed.detach().numpy())
        elif name.startswith("bias_hh"):
            assert not back[name].detach().numpy().any()
        else:
            np.testing.assert_array_equal(back[name].detach().numpy(), value.detach().numpy(), err_msg=name)


# -- gradients ---------------------------------------------------------------------------------------------------------
def _check_gradients(module, layer, x, state, dtype, lengths=None):
    xt, st, t_out, t_h, t_c = torch_run(module, x, state, lengths)
    rng = np.random.default_rng(7)
    d_out = rng.standard_normal(tuple(t_out.shape)).astype(dtype)
    d_h = rng.standard_normal(tuple(t_h.shape)).astype(dtype)
    d_c = rng.standard_normal(tuple(t_c.shape)).astype(dtype)
    if lengths is not None:  # padded outputs are zero and unused: keep the loss on real steps only
        steps = np.arange(T)[:, None] < np.asarray(lengths)[None, :]  # (T, B)
        d_out *= (steps.T if module.batch_first else steps)[..., None]
    loss = (t_out * torch.tensor(d_out)).sum() + (t_h * torch.tensor(d_h)).sum() + (t_c * torch.tensor(d_c)).sum()
    loss.backward()

    out, (h_n, c_n) = layer(x, state, lengths=lengths)
    assert_close(out, t_out, dtype, what="output")
    assert_close(h_n, t_h, dtype, what="h_n")
    d_x = layer.backward(d_out, d_h, d_c)
    assert_close(d_x, xt.grad, dtype, GRAD_TOL, "d_x")
    if state is not None:
        assert_close(layer.state_grads[0], st[0].grad, dtype, GRAD_TOL, "d_h0")
        assert_close(layer.state_grads[1], st[1].grad, dtype, GRAD_TOL, "d_c0")
    ours = torch_arrays(layer, layer.grads)  # our gradients through the same mapping as the weights
    theirs = dict(module.named_parameters())
    assert set(ours) == set(theirs)
    for name, param in theirs.items():
        # one bias of ours stands for bias_ih + bias_hh: d loss / d bias_hh = d loss / d bias_ih = our d b
        expected = ours[name.replace("bias_hh", "bias_ih")]
        assert_close(expected, param.grad, dtype, GRAD_TOL, f"d {name}")


@pytest.mark.parametrize("cfg", CONFIGS, ids=_config_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "initial-state"])
def test_gradients_match_autograd(cfg, dtype, with_state):
    module = make_module(cfg, dtype)
    layer = from_torch(module)
    x, state = make_inputs(cfg, dtype, with_state)
    _check_gradients(module, layer, x, state, dtype)


@pytest.mark.parametrize("cfg", [(1, False, False), (2, True, False), (2, True, True)], ids=_config_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_lengths_match_packed_sequences(cfg, dtype):
    """``lengths`` = a PackedSequence: zero outputs past each length, final state at the last real step, the reverse
    direction starting from it; forward and gradients."""
    module = make_module(cfg, dtype, seed=5)
    layer = from_torch(module)
    x, state = make_inputs(cfg, dtype, True, seed=6)
    _check_gradients(module, layer, x, state, dtype, lengths=[T, 2, 5])


# -- variants, options and errors --------------------------------------------------------------------------------------
def test_bias_false_gives_zero_biases():
    module = make_module((2, True, False), np.float64, bias=False)
    layer = from_torch(module)
    assert all(not v.any() for k, v in layer.params.items() if k.startswith("b_"))
    x, state = make_inputs((2, True, False), np.float64, True)
    _, _, t_out, _, _ = torch_run(module, x, state)
    assert_close(layer(x, state)[0], t_out, np.float64)


def test_from_torch_peephole_variant_starts_with_zero_peepholes():
    cfg = (2, True, False)
    module = make_module(cfg, np.float64)
    layer = from_torch(module, variant="peephole")
    assert layer.variant_name == "peephole"
    assert all(not v.any() for k, v in layer.params.items() if k.startswith("p_"))
    x, state = make_inputs(cfg, np.float64, True)
    _, _, t_out, t_h, t_c = torch_run(module, x, state)
    out, (h_n, c_n) = layer(x, state)
    assert_close(out, t_out, np.float64)
    assert_close(c_n, t_c, np.float64)
    with pytest.raises(ValueError, match="vanilla and gru variants only"):
        to_torch(layer)


@pytest.mark.parametrize("variant, match", [("coupled", "cannot be mapped to PyTorch"),
                                            ("nig", "cannot be mapped to PyTorch"),
                                            ("nfg", "cannot be mapped to PyTorch"),
                                            ("nog", "cannot be mapped to PyTorch")])
def test_from_torch_refuses_variants_without_pytorch_gates(variant, match):
    with pytest.raises(ValueError, match=match):
        from_torch(make_module((1, False, False), np.float32), variant=variant)


def test_from_torch_errors():
    with pytest.raises(TypeError, match="torch.nn.LSTM or torch.nn.GRU, got RNN"):
        from_torch(torch.nn.RNN(I, H))
    with pytest.raises(TypeError, match="float16"):
        from_torch(torch.nn.LSTM(I, H, dtype=torch.float16))
    with pytest.raises(KeyError, match="vanilla"):
        from_torch(torch.nn.LSTM(I, H), variant="no-such-variant")
    with pytest.warns(UserWarning, match="dropout"):
        layer = from_torch(torch.nn.LSTM(I, H, num_layers=2, dropout=0.5))
    assert layer.num_layers == 2


@pytest.mark.parametrize("make", [
    lambda: lstmcore.LSTM(I, H, variant="peephole"),
    lambda: lstmcore.LSTM(I, H, variant="coupled"),
    lambda: lstmcore.LSTM(I, H, variant="noaf"),
    lambda: lstmcore.LSTM(I, H, gate_activation="hard_sigmoid"),
    lambda: lstmcore.LSTM(I, H, clip=3.0),
    lambda: lstmcore.LSTM(I, H, bidirectional=True, reverse_options={"output_activation": "relu"}),
    lambda: from_onnx(np.zeros((1, 4 * H, I), np.float32), np.zeros((1, 4 * H, H), np.float32), direction="reverse"),
], ids=["peephole", "coupled", "noaf", "hard_sigmoid", "clip", "reverse-options", "onnx-reverse-only"])
def test_to_torch_refuses_other_variants(make):
    layer = make()
    with pytest.raises(ValueError, match="vanilla and gru variants only"):
        to_torch(layer)
    with pytest.raises(TypeError, match="lstmcore.LSTM"):
        to_torch(torch.nn.LSTM(I, H))


def test_onnx_reverse_only_layer_is_a_reverse_only_cell():
    layer = from_onnx(np.zeros((1, 4 * H, I), np.float32), np.zeros((1, 4 * H, H), np.float32), direction="reverse")
    assert isinstance(layer.cells[0], ReverseOnly)


def test_torch_weights_through_onnx_and_back():
    """PyTorch -> lstmcore -> ONNX tensors -> lstmcore -> PyTorch keeps the function (both mappings together)."""
    from lstmcore.interop import to_onnx

    module = make_module((1, True, False), np.float64)
    layer = from_onnx(**to_onnx(from_torch(module)))
    x, state = make_inputs((1, True, False), np.float64, True)
    _, _, t_out, t_h, _ = torch_run(to_torch(layer), x, state)
    _, _, ref_out, ref_h, _ = torch_run(module, x, state)
    assert_close(t_out.detach().numpy(), ref_out, np.float64)
    assert_close(t_h.detach().numpy(), ref_h, np.float64)


# -- torch stays optional ----------------------------------------------------------------------------------------------
def test_import_lstmcore_does_not_import_torch():
    code = ("import sys, lstmcore, lstmcore.interop; "
            "assert 'torch' not in sys.modules, 'importing lstmcore imported torch'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr


def test_no_warnings_on_plain_conversion():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        to_torch(from_torch(torch.nn.LSTM(I, H, num_layers=2)))
