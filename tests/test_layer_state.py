"""What a forward keeps for its backward (issue 9, items 2-4): inputs changed in place afterwards do not change the
gradients, threads sharing a layer each differentiate their own forward, and ``layer.params`` is checked against the
layer's explicit map of (layer, direction, name) -> key before any kernel runs."""
from __future__ import annotations

import copy
import pickle
import threading

import numpy as np
import pytest

import lstmcore
from lstmcore.testing import numerical_gradient
from lstmcore.training.model import SequenceModel
from lstmcore.training.optimizers import SGD


class LinCell(lstmcore.Variant):
    """A NumPy variant whose input weight is named ``W_lin`` (a name with ``_l`` in it), ``h_t = tanh(W_lin x_t +
    R h_{t-1} + b)``. Its cache keeps references to everything it was given, as a plugin may, and it counts its
    forward calls."""

    name = "test-lin"
    state_names = ("h",)
    forward_calls = 0

    def parameter_shapes(self, input_size, hidden_size):
        return {"W_lin": (hidden_size, input_size), "R": (hidden_size, hidden_size), "b": (hidden_size,)}

    def forward(self, params, x, state, lengths, reverse, out):
        LinCell.forward_calls += 1
        T = x.shape[0]
        order = range(T - 1, -1, -1) if reverse else range(T)
        hs, h = {}, state[0]
        for t in order:
            live = (np.full(x.shape[1], T) if lengths is None else lengths)[:, None] > t
            new = np.tanh(x[t] @ params["W_lin"].T + h @ params["R"].T + params["b"])
            out[t] = np.where(live, new, 0.0)
            hs[t] = (h, np.where(live, new, h), live)
            h = hs[t][1]
        return (h,), (params, x, state, lengths, reverse, hs)

    def backward(self, params, cache, d_out, d_state, d_x, accumulate_dx):
        params, x, state, lengths, reverse, hs = cache
        grads = {name: np.zeros_like(value) for name, value in params.items()}
        d_h = d_state[0].copy()
        if not accumulate_dx:
            d_x[...] = 0.0
        T = x.shape[0]
        for t in (range(T) if reverse else range(T - 1, -1, -1)):
            prev, new, live = hs[t]
            d_pre = (d_h + d_out[t]) * live * (1.0 - new ** 2)
            grads["W_lin"] += d_pre.T @ x[t]
            grads["R"] += d_pre.T @ prev
            grads["b"] += d_pre.sum(axis=0)
            d_x[t] += d_pre @ params["W_lin"]
            d_h = d_h * ~live + d_pre @ params["R"]
        return (d_h,), grads


def rand(*shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def _problem(variant, batch_first, dtype=np.float64):
    layer = lstmcore.LSTM(3, 8, variant=variant, num_layers=2, bidirectional=True, batch_first=batch_first,
                          dtype=dtype, seed=0)
    B, T = 3, 6
    x = rand(*((B, T, 3) if batch_first else (T, B, 3)), seed=1, dtype=dtype)
    state = tuple(rand(4, B, 8, seed=2 + i, dtype=dtype) for i in range(len(layer.cells[0].state_names)))
    lengths = np.array([6, 2, 4], dtype=np.int32)
    d_out = rand(*((B, T, 16) if batch_first else (T, B, 16)), seed=5, dtype=dtype)
    return layer, x, state, lengths, d_out


def _results(layer, d_x):
    return d_x.copy(), {k: v.copy() for k, v in layer.grads.items()}, tuple(s.copy() for s in layer.state_grads)


def _assert_same(got, expected):
    np.testing.assert_array_equal(got[0], expected[0], err_msg="d_x")
    assert got[1].keys() == expected[1].keys()
    for key in expected[1]:
        np.testing.assert_array_equal(got[1][key], expected[1][key], err_msg=key)
    for a, b in zip(got[2], expected[2]):
        np.testing.assert_array_equal(a, b, err_msg="state_grads")


# -- item 2: inputs changed in place between forward and backward -------------------------------------------------------

def _mutations(layer):
    """(what, how) pairs: each changes one input of the forward in place."""
    def scale(array):
        array *= 3.0

    out = [("x", lambda x, state, lengths: scale(x)),
           ("lengths", lambda x, state, lengths: lengths.__setitem__(slice(None), 6)),
           ("lengths to zero", lambda x, state, lengths: lengths.__setitem__(slice(None), 0))]
    out += [(f"state {i}", lambda x, state, lengths, i=i: scale(state[i])) for i in range(len(state_names(layer)))]
    out += [(key, lambda x, state, lengths, key=key: scale(layer.params[key])) for key in layer.params]
    out += [(f"{key} replaced", lambda x, state, lengths, key=key: layer.params.__setitem__(key, layer.params[key] * 3))
            for key in layer.params]
    return out


def state_names(layer):
    return layer.cells[0].state_names


@pytest.mark.parametrize("variant", ["vanilla", "peephole", "fgr", LinCell()], ids=lambda v: getattr(v, "name", v))
@pytest.mark.parametrize("batch_first", [False, True])
def test_inputs_changed_in_place_after_forward_do_not_change_the_gradients(variant, batch_first):
    layer, x, state, lengths, d_out = _problem(variant, batch_first)
    layer(x, state=state, lengths=lengths)
    expected = _results(layer, layer.backward(d_out))
    for what, mutate in _mutations(layer):
        layer, x, state, lengths, d_out = _problem(variant, batch_first)
        layer(x, state=state, lengths=lengths)
        mutate(x, state, lengths)
        try:
            _assert_same(_results(layer, layer.backward(d_out)), expected)
        except AssertionError as exc:
            raise AssertionError(f"changing {what} after the forward changed the gradients") from exc


def test_a_variant_gets_read_only_inputs_in_every_layer_and_direction():
    """Both directions of a layer read the same x: a variant writing into it would change the other's input."""
    seen = []

    class WritesInputs(LinCell):
        def forward(self, params, x, state, lengths, reverse, out):
            for array in (x, *state, *params.values(), lengths):
                with pytest.raises(ValueError, match="read-only"):
                    array[...] = 0
            seen.append(x.shape[2])
            return super().forward(params, x, state, lengths, reverse, out)

    layer = lstmcore.LSTM(3, 4, variant=WritesInputs(), num_layers=2, bidirectional=True, seed=0)
    out, _ = layer(rand(5, 2, 3, dtype=np.float32), lengths=[5, 2])
    assert seen == [3, 3, 8, 8]
    out[...] = 0  # the returned output is the caller's


def test_lengths_changed_after_forward_never_make_backward_read_unwritten_memory():
    """Lengths raised after the forward would make a backward that read them use steps the forward never computed
    (stale workspace memory, NaN here)."""
    from lstmcore._kernels import _driver

    layer = lstmcore.LSTM(3, 8, variant="peephole", bidirectional=True, dtype=np.float32, seed=0)
    x = rand(7, 3, 3, dtype=np.float32)
    lengths = np.array([1, 0, 2], dtype=np.int32)
    out, _ = layer(x, lengths=lengths)
    expected = _results(layer, layer.backward(np.ones(out.shape, np.float32)))
    _driver.release_workspaces()
    layer(x[:1])  # a workspace for the pool ...
    layer(x[:1])
    _driver._fill_pool(np.nan)  # ... filled with NaN: the next forward writes only the steps it needs
    out, _ = layer(x, lengths=lengths)
    lengths[:] = 7
    got = _results(layer, layer.backward(np.ones(out.shape, np.float32)))
    assert np.isfinite(got[0]).all()
    _assert_same(got, expected)


def test_inputs_shared_with_a_memmap_are_copied(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, rand(5, 2, 3))
    x = np.load(path, mmap_mode="r+")
    layer = lstmcore.LSTM(3, 4, dtype=np.float64, seed=0)
    out, _ = layer(x)
    expected = layer.backward(np.ones_like(out)).copy()
    grads = {k: v.copy() for k, v in layer.grads.items()}
    out, _ = layer(x)
    x[...] = 0
    np.testing.assert_array_equal(layer.backward(np.ones_like(out)), expected)
    np.testing.assert_array_equal(layer.grads["W_l0"], grads["W_l0"])


def test_x_given_as_a_torch_tensor_is_copied():
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rand(5, 2, 3))
    layer = lstmcore.LSTM(3, 4, dtype=np.float64, seed=0)
    out, _ = layer(x)
    expected = layer.backward(np.ones_like(out)).copy()
    out, _ = layer(x)
    x.mul_(3)
    np.testing.assert_array_equal(layer.backward(np.ones_like(out)), expected)


def test_sequence_model_readout_changed_after_forward_does_not_change_the_gradients():
    def run(mutate):
        model = SequenceModel(3, 4, 2, output="softmax", seed=0, dtype=np.float64)
        x, y = rand(2, 5, 3), np.random.default_rng(1).integers(0, 2, size=(2, 5))
        logits = model.forward(x)
        _, count, d_logits = model.loss(logits, y, model.targets_mask(None, 5, 2))
        mutate(model)
        d_x = model.backward(d_logits / count, need_input_grad=True)
        return d_x, model.grads

    base_dx, base = run(lambda model: None)
    for key in ("W_out", "b_out", "W_l0", "R_l0"):
        d_x, grads = run(lambda model: model.params[key].__imul__(3.0))
        np.testing.assert_array_equal(d_x, base_dx, err_msg=key)
        for name in base:
            np.testing.assert_array_equal(grads[name], base[name], err_msg=f"{key} changed: grads[{name!r}]")


# -- item 3: threads sharing one layer ---------------------------------------------------------------------------------

def _thread_problems(n, n_states, dtype=np.float32):
    rng = np.random.default_rng(7)
    problems = []
    for i in range(n):
        T = 5 + 3 * i
        x = rng.normal(size=(T, 4, 6)).astype(dtype)
        lengths = rng.integers(0, T + 1, size=4)
        state = tuple(rng.normal(size=(4, 4, 16)).astype(dtype) for _ in range(n_states))
        d_out = rng.normal(size=(T, 4, 32)).astype(dtype)
        problems.append((x, state, lengths, d_out))
    return problems


def _step(layer, problem):
    x, state, lengths, d_out = problem
    layer(x, state=state, lengths=lengths)
    return _results(layer, layer.backward(d_out))


@pytest.mark.parametrize("variant", ["peephole", LinCell()], ids=lambda v: getattr(v, "name", v))
def test_threads_sharing_a_layer_each_get_the_gradients_of_their_own_forward(variant):
    """Before: 0.5-1.3 % of the iterations of two threads got the other thread's d_x or gradients, silently."""
    layer = lstmcore.LSTM(6, 16, variant=variant, num_layers=2, bidirectional=True, seed=0)
    n_threads, iterations = 3, 150 if isinstance(variant, str) else 40
    problems = _thread_problems(n_threads, len(layer.cells[0].state_names))
    expected = [_step(layer, p) for p in problems]
    start = threading.Barrier(n_threads)
    failures = []

    def work(i):
        start.wait()
        for it in range(iterations):
            got = _step(layer, problems[i])
            try:
                _assert_same(got, expected[i])
            except AssertionError as exc:
                failures.append(f"thread {i}, iteration {it}: {str(exc).splitlines()[0]}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, f"{len(failures)} wrong results, first: {failures[0]}"


def test_backward_needs_a_forward_in_its_own_thread():
    layer = lstmcore.LSTM(3, 4, seed=0)
    out, _ = layer(rand(5, 2, 3, dtype=np.float32))
    errors = []

    def backward():
        try:
            layer.backward(np.ones(out.shape, np.float32))
        except RuntimeError as exc:
            errors.append(str(exc))

    worker = threading.Thread(target=backward)
    worker.start()
    worker.join()
    assert errors and "same thread" in errors[0]
    layer.backward(np.ones(out.shape, np.float32))  # the forward's own thread still can


def test_gradients_of_a_worker_thread_are_read_in_another_thread():
    layer = lstmcore.LSTM(3, 4, seed=0)
    results = []
    worker = threading.Thread(target=lambda: results.append(_step(layer, (rand(5, 2, 3, dtype=np.float32), None, None,
                                                                          np.ones((5, 2, 4), np.float32)))))
    worker.start()
    worker.join()
    _assert_same(_results(layer, results[0][0]), results[0])


def test_threads_sharing_a_sequence_model():
    model = SequenceModel(3, 8, 2, output="softmax", bidirectional=True, seed=0)
    rng = np.random.default_rng(3)
    batches = [(rng.normal(size=(4, 5 + i, 3)).astype(np.float32), rng.integers(0, 2, size=(4, 5 + i)))
               for i in range(2)]

    def gradients(x, y):
        model.loss_and_gradients(x, y)
        return {k: v.copy() for k, v in model.grads.items()}

    expected = [gradients(*b) for b in batches]
    failures = []

    def work(i):
        for _ in range(60):
            got = gradients(*batches[i])
            if any(not np.array_equal(got[k], expected[i][k]) for k in expected[i]):
                failures.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


@pytest.mark.parametrize("copier", [copy.deepcopy, lambda layer: pickle.loads(pickle.dumps(layer))],
                         ids=["deepcopy", "pickle"])
def test_a_layer_with_a_tape_can_be_copied(copier):
    """A copy carries the parameters, not the last forward (its tape holds this process's workspaces)."""
    layer = lstmcore.LSTM(3, 4, variant="peephole", seed=0)
    x = rand(5, 2, 3, dtype=np.float32)
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
    twin = copier(layer)
    assert twin.params.keys() == layer.params.keys()
    with pytest.raises(RuntimeError, match="needs a forward"):
        twin.backward(np.ones_like(out))
    np.testing.assert_array_equal(twin(x)[0], layer(x)[0])
    twin.params["W_l0"] += 1
    assert not np.array_equal(twin(x)[0], layer(x)[0])


# -- item 4: the explicit parameter map -------------------------------------------------------------------------------

def test_a_parameter_named_with_l_is_used_and_differentiated():
    layer = lstmcore.LSTM(3, 4, variant=LinCell(), num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    assert layer.parameter_keys(1, 1) == {"W_lin": "W_lin_l1_reverse", "R": "R_l1_reverse", "b": "b_l1_reverse"}
    with pytest.raises(ValueError, match="layers are 0 .. 1, directions 0 .. 1"):
        layer.parameter_keys(2, 0)
    x = rand(5, 2, 3)
    out, _ = layer(x)
    d_out = rand(*out.shape, seed=1)
    layer.backward(d_out)
    assert set(layer.grads) == set(layer.params)

    def loss():
        return float(np.sum(layer(x)[0] * d_out))

    for key in ("W_lin_l0", "W_lin_l1_reverse"):
        np.testing.assert_allclose(layer.grads[key], numerical_gradient(loss, layer.params[key]), rtol=1e-6,
                                   atol=1e-9, err_msg=key)
    layer.params["W_lin_l0"][...] = 0
    assert not np.allclose(layer(x)[0], out)
    summary = layer.summary()
    assert summary.total == layer.parameter_count() and "W_lin_l1_reverse" in str(summary)


@pytest.mark.parametrize("change,error,pattern", [
    (lambda p: p.__setitem__("foo", np.zeros(3, np.float32)), ValueError, r"'foo'.*not a parameter"),
    (lambda p: p.__setitem__("W_l0", p["W_lin_l0"]), ValueError, r"'W_l0'.*not a parameter"),
    (lambda p: p.pop("R_l0_reverse"), ValueError, r"lacks 'R_l0_reverse'.*reverse direction"),
    (lambda p: p.__setitem__("b_l0", np.zeros(5, np.float32)), ValueError, r"b_l0.*shape"),
    (lambda p: p.__setitem__("b_l0", p["b_l0"].astype(np.float64)), TypeError, r"b_l0.*dtype"),
    (lambda p: p.__setitem__("b_l0", list(p["b_l0"])), TypeError, r"b_l0.*NumPy array"),
    (lambda p: p.__setitem__("b_l0", np.full_like(p["b_l0"], np.nan)), ValueError, r"b_l0.*NaN"),
])
def test_params_are_checked_against_the_map_before_any_kernel_runs(change, error, pattern):
    layer = lstmcore.LSTM(3, 4, variant=LinCell(), bidirectional=True, seed=0)
    x = rand(5, 2, 3, dtype=np.float32)
    out, _ = layer(x)
    change(layer.params)
    calls = LinCell.forward_calls
    with pytest.raises(error, match=pattern):
        layer(x)
    assert LinCell.forward_calls == calls, "a kernel ran before the parameters were checked"
    with pytest.raises(RuntimeError, match="needs a forward"):  # the failed forward left no tape behind
        layer.backward(np.ones_like(out))


def test_params_that_are_not_a_dict():
    layer = lstmcore.LSTM(3, 4, seed=0)
    layer.params = list(layer.params.values())
    with pytest.raises(TypeError, match="layer.params must be a dict"):
        layer(rand(5, 2, 3, dtype=np.float32))


def test_an_extra_key_added_after_forward_does_not_break_backward():
    layer = lstmcore.LSTM(3, 4, seed=0)
    out, _ = layer(rand(5, 2, 3, dtype=np.float32))
    layer.params["foo"] = np.zeros(3, np.float32)
    layer.backward(np.ones_like(out))
    assert set(layer.grads) == {"W_l0", "R_l0", "b_l0"}


@pytest.mark.parametrize("replace", [
    lambda a: np.asfortranarray(a),
    lambda a: np.repeat(a, 2, axis=-1)[..., ::2],          # strided
    lambda a: _read_only(a.copy()),
], ids=["fortran", "strided", "read-only"])
def test_params_replaced_by_other_memory_layouts_give_the_same_results(replace):
    layer = lstmcore.LSTM(3, 4, variant="peephole", bidirectional=True, dtype=np.float64, seed=0)
    x = rand(5, 2, 3)
    out, _ = layer(x)
    expected = _results(layer, layer.backward(np.ones_like(out)))
    for key in list(layer.params):
        layer.params[key] = replace(layer.params[key])
    out, _ = layer(x)
    _assert_same(_results(layer, layer.backward(np.ones_like(out))), expected)


def _read_only(a):
    a.setflags(write=False)
    return a


def test_backward_twice_and_mutated_grads():
    layer = lstmcore.LSTM(3, 4, variant="fgr", bidirectional=True, dtype=np.float64, seed=0)
    out, _ = layer(rand(5, 2, 3), lengths=[5, 3])
    first = _results(layer, layer.backward(np.ones_like(out)))
    layer.grads["W_l0"][...] = 0                 # the caller's to change: the next backward gives fresh arrays
    del layer.grads["R_l0"]
    layer.state_grads[0][...] = 7
    _assert_same(_results(layer, layer.backward(np.ones_like(out))), first)


@pytest.mark.parametrize("grads,error,pattern", [
    (lambda g: g.pop("R_l0"), KeyError, "R_l0"),
    (lambda g: g.__setitem__("R_l0", g["R_l0"].tolist()), ValueError, "R_l0"),
    (lambda g: g.__setitem__("R_l0", g["R_l0"][:1]), ValueError, "R_l0.*shape"),
    (lambda g: g.__setitem__("R_l0", g["R_l0"].astype(np.float64)), ValueError, "R_l0.*dtype"),
])
def test_optimizer_step_with_mutated_grads_changes_nothing(grads, error, pattern):
    layer = lstmcore.LSTM(3, 4, seed=0)
    out, _ = layer(rand(5, 2, 3, dtype=np.float32))
    layer.backward(np.ones_like(out))
    g = dict(layer.grads)
    grads(g)
    before = {k: v.copy() for k, v in layer.params.items()}
    with pytest.raises(error, match=pattern):
        SGD(0.1).step(layer.params, g)
    for key, value in before.items():
        np.testing.assert_array_equal(layer.params[key], value, err_msg=f"{key} was updated before the error")


def test_reverse_only_is_a_layer_concept_that_runs_any_cell_backwards():
    """``lstmcore.ReverseOnly`` (layers.py) over a cell equals the cell on the time-reversed sequence, whether the cell
    is compiled or not; it reports the wrapped cell's kind."""
    import lstmcore.interop
    from lstmcore.layers import ReverseOnly as in_layers

    assert lstmcore.ReverseOnly is in_layers is lstmcore.interop.ReverseOnly
    x = np.random.default_rng(0).normal(size=(5, 2, 3))
    for cell in (lstmcore.get_variant("peephole"), LinCell()):
        reverse = lstmcore.LSTM(3, 4, variant=lstmcore.ReverseOnly(cell), dtype=np.float64, seed=0)
        forward = lstmcore.LSTM(3, 4, variant=cell, dtype=np.float64, seed=0)
        np.testing.assert_allclose(reverse(x)[0][::-1], forward(x[::-1].copy())[0], rtol=1e-12, atol=1e-12)
        assert lstmcore.ReverseOnly(cell).compiled == cell.compiled


def test_reverse_only_keeps_the_cells_projection_trace_and_drawing():
    """What the wrapped cell says about itself holds for ``ReverseOnly`` too: its projection (LSTMP), its trace (run
    backwards, indexed by time step) and its diagram."""
    cell = lstmcore.get_variant("peephole")
    x = np.random.default_rng(1).normal(size=(6, 2, 3))
    reverse = lstmcore.LSTM(3, 5, variant=lstmcore.ReverseOnly(cell), proj_size=2, dtype=np.float64, seed=0)
    forward = lstmcore.LSTM(3, 5, variant=cell, proj_size=2, dtype=np.float64, seed=0)
    out = reverse(x)[0]
    assert out.shape == (6, 2, 2)
    np.testing.assert_allclose(out[::-1], forward(x[::-1].copy())[0], rtol=1e-12, atol=1e-12)
    plain_reverse = lstmcore.LSTM(3, 4, variant=lstmcore.ReverseOnly(cell), dtype=np.float64, seed=0)
    plain = lstmcore.LSTM(3, 4, variant=cell, dtype=np.float64, seed=0)
    (traced,), (expected,) = plain_reverse.trace(x), plain.trace(x[::-1].copy())  # one layer, one direction
    assert set(traced) == set(expected) and "f" in traced  # the gates, not only the states
    for name in expected:
        np.testing.assert_allclose(np.asarray(traced[name])[::-1], expected[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)
    assert lstmcore.ReverseOnly(cell).cell_structure() == cell.cell_structure()

