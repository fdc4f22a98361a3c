"""The built-in ``gru`` against implementations nobody on this project wrote: PyTorch's ``nn.GRU`` through
``lstmcore.interop.from_torch`` / ``to_torch`` and ``lstmcore.torch.LSTM(variant="gru")`` (outputs, final states and
every gradient, with padded batches), and the ONNX project's GRU node vectors (``../shared/data/onnx-lstm``, skipped
without them; ``linear_before_reset=0``, the form ONNX's vectors use) through the ``ONNX_GRU`` layout."""
from __future__ import annotations

import json

import numpy as np
import pytest

import lstmcore
from lstmcore.interop._layout import ONNX_GRU, import_tensors
from shared_data import shared_data_dir

I, H, T, B = 5, 4, 7, 3
TOL = {np.float32: dict(rtol=1e-5, atol=2e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}
GRAD_TOL = {np.float32: dict(rtol=1e-4, atol=2e-5), np.float64: dict(rtol=1e-9, atol=1e-11)}
CONFIGS = [(1, False, False), (2, True, False), (2, False, True)]  # num_layers, bidirectional, batch_first


def _torch():
    return pytest.importorskip("torch")


def make_gru(cfg, dtype, seed=0, **kwargs):
    torch = _torch()
    layers, bi, bf = cfg
    torch.manual_seed(seed)
    module = torch.nn.GRU(I, H, num_layers=layers, bidirectional=bi, batch_first=bf,
                          dtype=torch.float64 if dtype == np.float64 else torch.float32, **kwargs)
    with torch.no_grad():  # away from the gates' linear range
        for p in module.parameters():
            p.uniform_(-0.8, 0.8)
    return module


def torch_loss_run(module, x, h0, lengths, a_out, a_h):
    """nn.GRU on a padded batch (packed), with autograd for x, h0 and the weights; returns its outputs."""
    torch = _torch()
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=module.batch_first,
                                                     enforce_sorted=False)
    out, h_n = module(packed, h0t)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=module.batch_first, total_length=T)
    ((out * torch.tensor(a_out)).sum() + (h_n * torch.tensor(a_h)).sum()).backward()
    return xt, h0t, out, h_n


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"L{c[0]}" + ("-bi" if c[1] else "") + ("-bf" if c[2] else ""))
def test_from_torch_gru_outputs_and_gradients(cfg, dtype):
    from lstmcore.interop import from_torch
    from lstmcore.interop._torch import torch_arrays

    module = make_gru(cfg, dtype)
    layer = from_torch(module)
    assert layer.variant_name == "gru" and layer.cells[0].linear_before_reset and layer.dtype == dtype
    rng = np.random.default_rng(1)
    layers, bi, bf = cfg
    D = 2 if bi else 1
    x = rng.standard_normal((B, T, I) if bf else (T, B, I)).astype(dtype)
    h0 = rng.standard_normal((layers * D, B, H)).astype(dtype)
    lengths = np.array([T, 2, 5])
    out_shape = (B, T, D * H) if bf else (T, B, D * H)
    a_out, a_h = rng.standard_normal(out_shape).astype(dtype), rng.standard_normal(h0.shape).astype(dtype)
    mask = (np.arange(T)[None, :] < lengths[:, None]) if bf else (np.arange(T)[:, None] < lengths[None, :])
    a_out *= mask[..., None]  # torch's padded outputs are constants
    xt, h0t, t_out, t_h = torch_loss_run(module, x, h0, lengths, a_out, a_h)

    output, (h_n,) = layer(x, (h0,), lengths=lengths)
    np.testing.assert_allclose(output, t_out.detach().numpy(), **TOL[dtype])
    np.testing.assert_allclose(h_n, t_h.detach().numpy(), **TOL[dtype])
    d_x = layer.backward(a_out, a_h)
    np.testing.assert_allclose(d_x, xt.grad.numpy(), **GRAD_TOL[dtype])
    np.testing.assert_allclose(layer.state_grads[0], h0t.grad.numpy(), **GRAD_TOL[dtype])
    # our gradients mapped to torch's names: the sum b = bias_ih + bias_hh (but for b_hn) gets the same gradient twice
    ours = torch_arrays(layer, layer.grads)
    for name, p in module.named_parameters():
        expected = p.grad.numpy()
        if name.startswith("bias_hh"):
            got = ours[name.replace("bias_hh", "bias_ih")].copy()
            got[2 * H:] = ours[name][2 * H:]  # b_hn is its own parameter, b_rn
        else:
            got = ours[name]
        np.testing.assert_allclose(got, expected, **GRAD_TOL[dtype], err_msg=name)


def test_to_torch_gru_round_trip():
    torch = _torch()
    from lstmcore.interop import from_torch, to_torch

    layer = lstmcore.LSTM(I, H, variant="gru", num_layers=2, bidirectional=True, dtype=np.float64, seed=4)
    rng = np.random.default_rng(0)
    for value in layer.params.values():
        value[...] = rng.uniform(-0.8, 0.8, size=value.shape)
    module = to_torch(layer)
    assert isinstance(module, torch.nn.GRU) and module.num_layers == 2 and module.bidirectional
    x = rng.standard_normal((T, B, I))
    out, (h_n,) = layer(x)
    t_out, t_h = module(torch.tensor(x))
    np.testing.assert_allclose(out, t_out.detach().numpy(), **TOL[np.float64])
    np.testing.assert_allclose(h_n, t_h.detach().numpy(), **TOL[np.float64])
    back = from_torch(module)
    for key, value in layer.params.items():
        np.testing.assert_allclose(back.params[key], value, rtol=0, atol=1e-15, err_msg=key)


@pytest.mark.parametrize("make, match", [
    (lambda: lstmcore.LSTM(I, H, variant="gru", linear_before_reset=False), "linear_before_reset=False"),
    (lambda: lstmcore.LSTM(I, H, variant="gru", input_activation="relu"), r"activations .* \('sigmoid', 'relu'\)"),
    (lambda: lstmcore.LSTM(I, H, variant="mgu"), "not a forward-running gated cell of the compiled family or a GRU"),
])
def test_to_torch_refuses_what_nn_gru_cannot_compute(make, match):
    _torch()
    from lstmcore.interop import to_torch

    with pytest.raises(ValueError, match=match):
        to_torch(make())


def test_from_torch_refuses_mismatched_cells():
    torch = _torch()
    from lstmcore.interop import from_torch

    with pytest.raises(ValueError, match="linear_before_reset=False"):
        from_torch(torch.nn.GRU(I, H), variant=lstmcore.get_variant("gru").with_options(linear_before_reset=False))
    with pytest.raises(ValueError, match="cannot take the weights of a torch.nn.GRU"):
        from_torch(torch.nn.GRU(I, H), variant="vanilla")
    with pytest.raises(ValueError, match="cannot take the weights of a torch.nn.LSTM"):
        from_torch(torch.nn.LSTM(I, H), variant="gru")


@pytest.mark.parametrize("bias", [True, False])
def test_lstmcore_torch_gru_is_nn_gru(bias):
    """``lstmcore.torch.LSTM(variant="gru")`` has nn.GRU's parameter names and shapes, loads its state_dict and then
    computes what it computes, gradients included."""
    torch = _torch()
    import lstmcore.torch as lt

    reference = make_gru((2, True, False), np.float64, bias=bias)
    ours = lt.LSTM(I, H, variant="gru", num_layers=2, bidirectional=True, bias=bias).double()
    assert {n: p.shape for n, p in ours.named_parameters()} == {n: p.shape for n, p in reference.named_parameters()}
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0 = torch.randn(4, B, H, dtype=torch.float64)
    out, (h_n,) = ours(x, h0)
    t_out, t_h = reference(x, h0)
    torch.testing.assert_close(out, t_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h_n, t_h, rtol=1e-10, atol=1e-12)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (t_out * weights).sum().backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-11, msg=name)


# -- ONNX's GRU node vectors ---------------------------------------------------------------------------------------------
DATA = shared_data_dir("onnx-lstm", "test_gru_*.npz")
VECTORS = sorted(DATA.glob("test_gru_*.npz")) if DATA else []


def _load(path):
    with np.load(path) as z:
        case = {k: z[k] for k in z.files if z[k].dtype.kind not in "US"}
        case["attrs"] = json.loads(str(z["attributes_effective"]))
    return case


@pytest.mark.skipif(not VECTORS, reason="ONNX GRU vectors not found (set LSTMCORE_SHARED_DATA to the shared data)")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_onnx_gru_vectors(path, dtype):
    case = _load(path)
    attrs = case["attrs"]
    assert attrs["direction"] == "forward" and attrs["activations"] is None and attrs["clip"] is None
    hidden = attrs["hidden_size"]
    layer = lstmcore.LSTM(case["W"].shape[2], hidden, variant="gru", dtype=dtype,
                          linear_before_reset=bool(attrs["linear_before_reset"]))
    bias = case.get("B")
    params = import_tensors(ONNX_GRU, layer.cells[0], hidden, case["W"][0], case["R"][0],
                            None if bias is None else bias[0, :3 * hidden],
                            None if bias is None else bias[0, 3 * hidden:], dtype=dtype)
    for name, value in params.items():
        layer.params[layer.param_name(name, 0, 0)][...] = value
    X = case["X"].transpose(1, 0, 2) if attrs["layout"] == 1 else case["X"]
    state = None
    if "initial_h" in case:
        h0 = case["initial_h"].transpose(1, 0, 2) if attrs["layout"] == 1 else case["initial_h"]
        state = (np.ascontiguousarray(h0, dtype=dtype),)
    output, (h_n,) = layer(np.ascontiguousarray(X, dtype=dtype), state, lengths=case.get("sequence_lens"))
    if "Y" in case:
        Tn, Bn = X.shape[:2]
        Y = output.reshape(Tn, Bn, 1, hidden).transpose(0, 2, 1, 3)
        np.testing.assert_allclose(Y.transpose(2, 0, 1, 3) if attrs["layout"] == 1 else Y, case["Y"],
                                   rtol=1e-5, atol=1e-6)
    expected_h = case["Y_h"].transpose(1, 0, 2) if attrs["layout"] == 1 else case["Y_h"]
    np.testing.assert_allclose(h_n, expected_h, rtol=1e-5, atol=1e-6)


def test_onnx_gru_layout_keeps_b_rn_apart():
    """With linear_before_reset the recurrent bias of n is not summed: it lands in b_rn, and the others in b."""
    cell = lstmcore.get_variant("gru")
    rng = np.random.default_rng(0)
    W, R = rng.normal(size=(3 * H, I)), rng.normal(size=(3 * H, H))
    Wb, Rb = rng.normal(size=3 * H), rng.normal(size=3 * H)
    params = import_tensors(ONNX_GRU, cell, H, W, R, Wb, Rb, dtype=np.float64)
    np.testing.assert_array_equal(params["b_rn"], Rb[2 * H:])
    np.testing.assert_allclose(params["b"], np.concatenate([Wb[:2 * H] + Rb[:2 * H], Wb[2 * H:]]))
    plain = import_tensors(ONNX_GRU, cell.with_options(linear_before_reset=False), H, W, R, Wb, Rb, dtype=np.float64)
    assert "b_rn" not in plain
    np.testing.assert_allclose(plain["b"], Wb + Rb)
