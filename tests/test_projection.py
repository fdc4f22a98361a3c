"""LSTMP (``proj_size``): against PyTorch's ``nn.LSTM(proj_size=P)`` (outputs, states, every gradient), finite
differences in float64 (2 layers, bidirectional, ragged lengths including 0) and the errors of a bad ``proj_size``."""
from __future__ import annotations

import numpy as np
import pytest

import lstmcore
from lstmcore.variant import Variant
from test_gradcheck import gradcheck, make_layer

P = 3


@pytest.mark.parametrize("variant", ["vanilla", "peephole", "coupled", "fgr", "nog", "nfg"])
@pytest.mark.parametrize("config", [dict(), dict(num_layers=2, bidirectional=True)], ids=["single", "stacked-bi"])
def test_gradcheck_projected(variant, config):
    layer = make_layer(variant, proj_size=P, **config)
    assert layer.params["R_l0"].shape[1] == P and layer.params["W_proj_l0"].shape == (P, 4)
    gradcheck(layer, lengths=[5, 0, 2])


def test_gradcheck_projected_batch_first_clip_reverse_options():
    layer = make_layer("vanilla", proj_size=1, bidirectional=True, batch_first=True, clip=0.7,
                       reverse_options=dict(gate_activation="hard_sigmoid"))
    gradcheck(layer, lengths=[4, 5, 0])


def test_shapes_and_states():
    layer = lstmcore.LSTM(3, 6, proj_size=2, num_layers=2, bidirectional=True, seed=0)
    assert layer.output_width == 2 and "proj_size=2" in repr(layer)
    assert layer.params["W_l1"].shape == (24, 4)  # the next layer reads both directions' r
    x = np.random.default_rng(0).normal(size=(5, 2, 3)).astype(np.float32)
    out, (h_n, c_n) = layer(x, lengths=[5, 0])
    assert out.shape == (5, 2, 4) and h_n.shape == (4, 2, 2) and c_n.shape == (4, 2, 6)
    assert not out[:, 1].any() and not h_n[:, 1].any()  # length 0: zero output, the (zero) initial state
    h0, c0 = np.ones((4, 2, 2), np.float32), np.ones((4, 2, 6), np.float32)
    out, (h_n, c_n) = layer(x, (h0, c0), lengths=[5, 0])
    np.testing.assert_array_equal(h_n[:, 1], 1)  # a sequence of length 0 keeps its initial r
    with pytest.raises(ValueError, match=r"state h_0 has shape .* proj_size"):
        layer(x, (np.ones((4, 2, 6), np.float32), c0))


def test_threads_agree():
    from threadpoolctl import threadpool_limits

    from lstmcore._kernels import _driver

    layer = lstmcore.LSTM(16, 128, proj_size=44, dtype=np.float64, seed=1, bidirectional=True)
    x = np.random.default_rng(1).normal(size=(9, 16, 16))
    results = []
    for n in (1, 2):
        with threadpool_limits(n):
            out, state = layer(x, lengths=[9, 3, 0, 9, 1, 8, 2, 9] * 2)
            assert layer._tape[1][0][0].threads == _driver.team_size(10**9, 128)  # 2 on 2 cores: P = 44 split 24 + 20
            d_x = layer.backward(np.ones_like(out), np.ones_like(state[0]), np.ones_like(state[1]))
            results.append((out, d_x, dict(layer.grads)))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-11, atol=1e-12)
    for key in results[0][2]:
        np.testing.assert_allclose(results[0][2][key], results[1][2][key], rtol=1e-11, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("proj_size, match", [(4, "smaller than hidden_size = 4"), (5, "smaller than hidden_size"),
                                              (0, "proj_size"), (-1, "proj_size"), (2.5, "proj_size"),
                                              (True, "proj_size")])
def test_bad_proj_size(proj_size, match):
    with pytest.raises(ValueError, match=match):
        lstmcore.LSTM(3, 4, proj_size=proj_size)


class NotGated(Variant):
    """A variant outside the gated-cell family (the layer options that need one refuse it)."""

    name = "plain-test"


def test_proj_size_needs_a_gated_cell():
    with pytest.raises(ValueError, match="proj_size: variant 'plain-test' has no projection"):
        lstmcore.LSTM(3, 4, variant=NotGated(), proj_size=2)


def test_trace_refuses_projection():
    layer = lstmcore.LSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="proj_size=2"):
        layer.trace(np.zeros((2, 1, 3), np.float32))


# -- PyTorch ---------------------------------------------------------------------------------------------------------
torch_cases = [(1, False, False), (2, True, False), (2, False, True)]


@pytest.mark.parametrize("cfg", torch_cases)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lengths", [None, [7, 1, 4]], ids=["full", "ragged"])  # torch packs no length 0
def test_matches_torch(cfg, dtype, lengths):
    pytest.importorskip("torch")
    from test_interop_torch import B, H, I, _check_gradients, make_module
    from lstmcore.interop import from_torch, to_torch

    module = make_module(cfg, dtype, proj_size=2)
    layer = from_torch(module)
    assert layer.proj_size == 2
    layers, bi, _ = cfg
    rng = np.random.default_rng(3)
    x = rng.standard_normal((B, 7, I) if cfg[2] else (7, B, I)).astype(dtype)
    D = 2 if bi else 1
    state = (rng.standard_normal((layers * D, B, 2)).astype(dtype), rng.standard_normal((layers * D, B, H)).astype(dtype))
    _check_gradients(module, layer, x, state, dtype, lengths=lengths)
    again = to_torch(layer)
    assert again.proj_size == 2
    for name, value in module.named_parameters():
        if not name.startswith("bias"):
            np.testing.assert_array_equal(getattr(again, name).detach().numpy(), value.detach().numpy(), err_msg=name)


def test_sequence_model_and_summary(tmp_path):
    from lstmcore.training import SequenceModel
    from lstmcore.training import load_checkpoint, save_checkpoint

    rng = np.random.default_rng(2)
    x, lengths = rng.normal(size=(3, 6, 4)).astype(np.float64), np.array([6, 2, 4])
    for per_step in (True, False):
        model = SequenceModel(4, 8, 2, proj_size=3, bidirectional=True, per_step=per_step, output="linear",
                              dtype=np.float64, seed=0)
        assert model.readout["W_out"].shape == (2, 6)
        y = rng.normal(size=(3, 6, 2) if per_step else (3, 2))
        model.loss_and_gradients(x, y, lengths)
        assert model.grads["W_proj_l0_reverse"].any()
    assert "(B, T, 6)" in str(model.lstm.summary())
    path = tmp_path / "model.npz"
    save_checkpoint(model, path)
    again = load_checkpoint(path)
    np.testing.assert_array_equal(again.forward(x, lengths), model.forward(x, lengths))


@pytest.mark.parametrize("cfg", [(1, False, False), (2, True, True)])
def test_torch_bridge_module(cfg):
    torch = pytest.importorskip("torch")
    import lstmcore.torch

    layers, bi, bf = cfg
    torch.manual_seed(0)
    reference = torch.nn.LSTM(5, 6, num_layers=layers, bidirectional=bi, batch_first=bf, proj_size=3,
                              dtype=torch.float64)
    ours = lstmcore.torch.LSTM(5, 6, num_layers=layers, bidirectional=bi, batch_first=bf, proj_size=3).double()
    assert "proj_size=3" in repr(ours)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn((4, 7, 5) if bf else (7, 4, 5), dtype=torch.float64, requires_grad=True)
    D = 2 if bi else 1
    h0 = torch.randn(layers * D, 4, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(layers * D, 4, 6, dtype=torch.float64, requires_grad=True)
    for hx in (None, (h0, c0)):
        got, want = ours(x, hx), reference(x, hx)
        for a, b in zip((got[0], *got[1]), (want[0], *want[1])):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    loss_ours = got[0].sum() + got[1][0].square().sum() + got[1][1].sum()
    grads_ours = torch.autograd.grad(loss_ours, [x, h0, c0, *ours.parameters()])
    loss_ref = want[0].sum() + want[1][0].square().sum() + want[1][1].sum()
    grads_ref = torch.autograd.grad(loss_ref, [x, h0, c0, *reference.parameters()])
    for a, b in zip(grads_ours, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match="proj_size"):
        lstmcore.torch.LSTM(5, 6, proj_size=6)
    with pytest.raises(ValueError, match=r"hx h_0 has shape .* proj_size"):
        ours(x, (c0, c0))
