"""``lstmcore.torch.LSTM`` against ``torch.nn.LSTM`` (weights loaded from its state_dict): outputs, final states and
every gradient, packed batches included; gradcheck for every registered variant; torch.compile; optimizers; errors."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lstmcore  # noqa: E402
import lstmcore.torch as lt  # noqa: E402
from lstmcore._kernels import _driver  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402
from variant_names import every_variant  # noqa: E402

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}
CONFIGS = [  # num_layers, bidirectional, batch_first
    (1, False, False),
    (2, False, False),
    (1, True, False),
    (2, True, True),
]
I, H, T, B = 5, 4, 7, 3
GRU_SOURCE = Path(__file__).resolve().parents[1] / "examples" / "lstmcore-gru" / "src"


def _config_id(cfg):
    layers, bi, bf = cfg
    return f"L{layers}" + ("-bi" if bi else "") + ("-batch_first" if bf else "")


def pair(cfg, dtype, bias=True, seed=0):
    """An nn.LSTM with wide weights (gates out of their linear range) and an lstmcore.torch.LSTM loaded from it."""
    layers, bi, bf = cfg
    torch.manual_seed(seed)
    ref = torch.nn.LSTM(I, H, num_layers=layers, bidirectional=bi, batch_first=bf, bias=bias, dtype=dtype)
    with torch.no_grad():
        for p in ref.parameters():
            p.uniform_(-0.8, 0.8)
    ours = lt.LSTM(I, H, num_layers=layers, bidirectional=bi, batch_first=bf, bias=bias).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def inputs(cfg, dtype, seed=1):
    layers, bi, bf = cfg
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((B, T, I) if bf else (T, B, I), generator=g, dtype=dtype, requires_grad=True)
    shape = (layers * (2 if bi else 1), B, H)
    hx = tuple(torch.randn(shape, generator=g, dtype=dtype, requires_grad=True) for _ in range(2))
    return x, hx


def run(module, x, hx, packed_lengths=None):
    """Output, final states and the gradients of a random linear loss of all three w.r.t. x, hx and the weights."""
    if packed_lengths is not None:
        out, (h_n, c_n) = module(pack_padded_sequence(x, packed_lengths, batch_first=module.batch_first,
                                                         enforce_sorted=False), hx)
        out_data = out.data
    else:
        out, (h_n, c_n) = module(x, hx)
        out_data = out
    g = torch.Generator().manual_seed(7)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in (out_data, h_n, c_n))
    grads = torch.autograd.grad(loss, [x, *hx, *module.parameters()])
    return out, (h_n, c_n), grads


def assert_close(a, b, dtype, what):
    torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m: f"{what}: {m}")


# -- import ----------------------------------------------------------------------------------------------------------
def test_import_lstmcore_stays_torch_free():
    code = ("import sys, numpy as np, lstmcore; lstmcore.LSTM(2, 3)(np.zeros((2, 1, 2), np.float32)); "
            "assert 'torch' not in sys.modules, 'import lstmcore imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd="/")


def test_without_torch_the_error_names_the_extra():
    code = "import sys; sys.modules['torch'] = None; import lstmcore.torch"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode != 0 and 'pip install "lstmcore[torch]"' in result.stderr


# -- equivalence with nn.LSTM ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cfg", CONFIGS, ids=_config_id)
def test_vanilla_matches_nn_lstm(cfg, dtype):
    ref, ours = pair(cfg, dtype)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    x, hx = inputs(cfg, dtype)
    expected, got = run(ref, x, hx), run(ours, x, hx)
    assert_close(got[0], expected[0], dtype, "output")
    for name, a, b in zip(("h_n", "c_n"), got[1], expected[1]):
        assert_close(a, b, dtype, name)
    names = ["x", "h0", "c0"] + [n for n, _ in ref.named_parameters()]
    for name, a, b in zip(names, got[2], expected[2]):
        assert_close(a, b, dtype, f"d {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_padded_packed_batch_matches_nn_lstm(dtype):
    cfg = (2, True, True)
    ref, ours = pair(cfg, dtype)
    x, hx = inputs(cfg, dtype)
    lengths = torch.tensor([4, T, 2])  # unsorted: the packing's sorted/unsorted indices are exercised
    expected, got = run(ref, x, hx, lengths), run(ours, x, hx, lengths)
    for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
        assert torch.equal(getattr(got[0], field), getattr(expected[0], field)), field
    assert_close(got[0].data, expected[0].data, dtype, "packed output")
    for name, a, b in zip(("h_n", "c_n"), got[1], expected[1]):
        assert_close(a, b, dtype, name)
    assert float(got[2][0][0, 4:].abs().max()) == 0.0  # no gradient reaches the padding
    names = ["x", "h0", "c0"] + [n for n, _ in ref.named_parameters()]
    for name, a, b in zip(names, got[2], expected[2]):
        assert_close(a, b, dtype, f"d {name}")


def test_lengths_argument_equals_packed_input():
    _, ours = pair((1, True, False), torch.float64)
    x, hx = inputs((1, True, False), torch.float64)
    lengths = torch.tensor([T, 3, 5])
    out, (h_n, c_n) = ours(x, hx, lengths=lengths)
    packed, (h_p, c_p) = ours(pack_padded_sequence(x, lengths, enforce_sorted=False), hx)
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(packed, total_length=T)
    torch.testing.assert_close(out, padded)
    torch.testing.assert_close(h_n, h_p)
    assert float(out.detach()[3:, 1].abs().max()) == 0.0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bias_false_matches_nn_lstm(dtype):
    ref, ours = pair((1, False, False), dtype, bias=False)
    assert "bias_ih_l0" not in dict(ours.named_parameters())
    x, hx = inputs((1, False, False), dtype)
    for a, b in zip(run(ours, x, hx)[2], run(ref, x, hx)[2]):
        assert_close(a, b, dtype, "gradient")


def test_optimizer_step_changes_parameters_like_nn_lstm():
    ref, ours = pair((2, True, False), torch.float32)
    x, hx = inputs((2, True, False), torch.float32)
    for module in (ref, ours):
        optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
        for _ in range(3):
            optimizer.zero_grad()
            out, (h_n, _) = module(x, hx)
            ((out ** 2).mean() + h_n.sum()).backward()
            optimizer.step()
    before = pair((2, True, False), torch.float32)[0].state_dict()
    for name, value in ref.state_dict().items():
        assert not torch.equal(value, before[name]), name
        torch.testing.assert_close(ours.state_dict()[name], value, rtol=1e-4, atol=1e-5)


def test_double_and_state_dict_round_trip():
    torch.manual_seed(3)
    ours = lt.LSTM(I, H, variant="peephole", num_layers=2).double()
    assert all(p.dtype == torch.float64 for p in ours.parameters())
    copy = lt.LSTM(I, H, variant="peephole", num_layers=2).double()
    copy.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.testing.assert_close(copy(x)[0], ours(x)[0], rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"float32.*float64|\.double\(\)"):
        ours(x.float())


# -- every variant -----------------------------------------------------------------------------------------------------
def _gradcheck(module, hx_count, lengths):
    names = [n for n, _ in module.named_parameters()]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 2, module.input_size, generator=g, dtype=torch.float64, requires_grad=True)
    D = 2 if module.bidirectional else 1
    hx = [torch.randn(module.num_layers * D, 2, module.hidden_size, generator=g, dtype=torch.float64,
                      requires_grad=True) for _ in range(hx_count)]

    def f(x, *args):
        out, final = torch.func.functional_call(module, dict(zip(names, args[hx_count:])), (x, tuple(args[:hx_count])),
                                                {"lengths": lengths})
        return (out, *final)

    assert torch.autograd.gradcheck(f, (x, *hx, *(p.detach().requires_grad_() for p in module.parameters())))


@pytest.mark.parametrize("variant", every_variant(lstmcore.list_variants()))
def test_gradcheck_every_registered_variant(variant):
    torch.manual_seed(0)
    module = lt.LSTM(3, 2, variant=variant, num_layers=2, bidirectional=True).double()
    _gradcheck(module, len(module.state_names), torch.tensor([4, 2]))


@pytest.fixture(scope="module")
def gru():
    """The sample plugin's GRU (a NumPy variant with one state), imported from its source folder."""
    sys.path.insert(0, str(GRU_SOURCE))
    try:
        from lstmcore_gru.gru import GRU
    except ImportError as exc:  # pragma: no cover - the example is part of the repository
        pytest.skip(f"examples/lstmcore-gru not importable: {exc}")
    finally:
        sys.path.remove(str(GRU_SOURCE))
    return GRU()


def test_single_state_plugin_cell(gru):
    torch.manual_seed(0)
    module = lt.LSTM(3, 2, variant=gru, bidirectional=True).double()
    assert sorted(n for n, _ in module.named_parameters())[:2] == ["R_l0", "R_l0_reverse"]
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    out, final = module(x)
    assert len(final) == 1 and final[0].shape == (2, 2, 2)
    out_hx, _ = module(x, torch.zeros(2, 2, 2, dtype=torch.float64))  # a bare tensor hx, as nn.GRU takes
    torch.testing.assert_close(out, out_hx)
    _gradcheck(module, 1, torch.tensor([4, 3]))
    with pytest.raises(ValueError, match="bias=False.*'b'"):
        lt.LSTM(3, 2, variant=gru, bias=False)


def test_parameter_names_per_layout():
    assert {n for n, _ in lt.LSTM(3, 2, variant="peephole").named_parameters()} == {
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "p_l0"}
    coupled = dict(lt.LSTM(3, 2, variant="coupled", bias=False).named_parameters())
    assert set(coupled) == {"W_l0", "R_l0", "p_l0"} and coupled["W_l0"].shape == (6, 3)


def test_variant_options_reach_the_cell():
    torch.manual_seed(0)
    x = torch.randn(T, B, I)
    plain = lt.LSTM(I, H)
    clipped = lt.LSTM(I, H, gate_activation="hard_sigmoid", clip=0.5)
    clipped.load_state_dict(plain.state_dict())
    assert not torch.allclose(plain(x)[0], clipped(x)[0])
    with pytest.raises(TypeError, match="unknown option"):
        lt.LSTM(I, H, gate_actvation="tanh")


# -- the operators -----------------------------------------------------------------------------------------------------
def _pooled():
    return sum(_driver.pooled_workspaces().values())


def test_tapes_live_as_long_as_the_graph():
    """A call's tape (and its kernel workspaces) is freed with the autograd graph, eager and through the operator."""
    _, ours = pair((1, True, False), torch.float64)
    x, hx = inputs((1, True, False), torch.float64)
    out, final = ours(x, hx)
    out.sum().backward(retain_graph=True)
    first = x.grad.clone()
    x.grad = None
    out.sum().backward()  # retain_graph: the same tape serves a second backward
    torch.testing.assert_close(x.grad, first, rtol=0, atol=0)
    _driver.release_workspaces()
    del out, final  # the last references to the graph
    gc.collect()
    assert _pooled() == 2  # both directions' workspaces went back to the pool
    with torch.no_grad():
        ours(x, hx)
    gc.collect()
    assert _pooled() == 2
    handles = len(lt._tapes)
    out = lt._forward_op(x, list(hx), None, list(ours.parameters()), ours._config_key)
    assert len(lt._tapes) == handles + 1 and _pooled() == 0
    del out
    gc.collect()
    assert len(lt._tapes) == handles and _pooled() == 2


def test_backward_operator_recomputes_without_its_tape():
    _, ours = pair((2, False, False), torch.float64)
    x, hx = inputs((2, False, False), torch.float64)
    weights = list(ours.parameters())
    output, h_n, c_n, handle = lt._forward_op(x, list(hx), None, weights, ours._config_key)
    grads = [torch.ones_like(output), torch.ones_like(h_n), torch.ones_like(c_n)]
    args = (grads[0], grads[1:], x, list(hx), None, weights)
    with_tape = lt._backward_op(*args, handle, ours._config_key, True)
    recomputed = lt._backward_op(*args, handle.clone().fill_(0), ours._config_key, True)
    for a, b in zip(with_tape, recomputed):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_opcheck_schema_and_fake_implementations():
    """(opcheck's test_aot_dispatch_* compare two calls' outputs; the tape handle is unique per call, so torch.compile
    is tested end to end below instead.)"""
    _, ours = pair((1, True, False), torch.float64)
    x, hx = inputs((1, True, False), torch.float64)
    lengths, weights = torch.tensor([T, 3, 1]), list(ours.parameters())
    utils = ("test_schema", "test_faketensor")
    torch.library.opcheck(lt._forward_op, (x, list(hx), lengths, weights, ours._config_key), test_utils=utils)
    output, h_n, c_n, handle = lt._forward_op(x, list(hx), lengths, weights, ours._config_key)
    for need_input_grad in (True, False):
        torch.library.opcheck(lt._backward_op, (torch.ones_like(output), [torch.ones_like(h_n), torch.ones_like(c_n)],
                                                x, list(hx), lengths, weights, handle, ours._config_key,
                                                need_input_grad), test_utils=utils)


def compiled_matches_eager(backend):
    """Compiled and eager agree, and the compiled backward runs on the forward's tape (one forward per step)."""
    forwards = []
    run_forward = lt._CoreLSTM.run_forward
    lt._CoreLSTM.run_forward = lambda *args: forwards.append(1) or run_forward(*args)
    try:
        torch._dynamo.reset()
        torch.manual_seed(0)
        module = lt.LSTM(3, 4, variant="peephole", batch_first=True)
        compiled = torch.compile(module, backend=backend, fullgraph=True)  # fullgraph: a graph break is an error
        x = torch.randn(2, 5, 3, requires_grad=True)
        results = []
        for fn in (module, compiled):
            x.grad = None
            forwards.clear()
            out, (h_n, c_n) = fn(x)
            (out.sum() + h_n.sum() + c_n.sum()).backward()
            assert len(forwards) == 1
            results.append((out.detach(), x.grad.clone(), module.p_l0.grad.clone()))
            module.zero_grad()
    finally:
        lt._CoreLSTM.run_forward = run_forward
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_torch_compile_keeps_one_graph():
    compiled_matches_eager("aot_eager")


@pytest.mark.slow
def test_torch_compile_inductor(tmp_path):
    """In a fresh interpreter (inductor imports setuptools, which refuses to load after another test imported the
    standard library's distutils), with its own inductor cache (no code compiled by an earlier version is reused)."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "import test_torch_bridge; test_torch_bridge.compiled_matches_eager('inductor')")
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env, cwd="/")
    assert result.returncode == 0, result.stderr[-3000:]


# -- errors ------------------------------------------------------------------------------------------------------------
def test_clear_errors():
    module = lt.LSTM(I, H)
    x = torch.randn(T, B, I)
    with pytest.raises(ValueError, match="CPU"):
        module(torch.randn(T, B, I, device="meta"))
    with pytest.raises(TypeError, match="float16.*float32 or torch.float64"):
        module(x.half())
    with pytest.raises(TypeError, match="int64"):
        module(torch.zeros(T, B, I, dtype=torch.int64))
    with pytest.raises(ValueError, match="lengths must not require grad"):
        module(x, lengths=torch.tensor([1.0, 2.0, 3.0], requires_grad=True))
    with pytest.raises(TypeError, match="lengths must be an integer"):
        module(x, lengths=torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T\]"):
        module(x, lengths=torch.tensor([1, 2, T + 1]))
    with pytest.raises(ValueError, match="input_size = 5"):
        module(torch.randn(T, B, I + 1))
    with pytest.raises(ValueError, match="hx h_0 has shape"):
        module(x, (torch.zeros(1, B + 1, H), torch.zeros(1, B + 1, H)))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\)"):
        module(x, torch.zeros(1, B, H))
    with pytest.raises(KeyError, match="unknown variant .no-such-variant."):
        lt.LSTM(I, H, variant="no-such-variant")


def test_double_backward_is_refused_clearly():
    module = lt.LSTM(I, H).double()
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    out, _ = module(x)
    (d_x,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        d_x.sum().backward()
