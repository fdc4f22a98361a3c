"""The compiled online update (lstmcore.training.online, lstmcore._kernels._online) against fit's NumPy loop: the same
parameters after the same updates for every option of the Odyssey protocol (SGD with and without (Nesterov) momentum,
input noise, clipping, both loss scales, both dtypes), the same divergence reports and the same errors for bad
input."""
import numpy as np
import pytest

from lstmcore._kernels import _online
from lstmcore.datasets import Split
from lstmcore.training import SGD, Adam, SequenceModel, clip_by_global_norm, fit, global_norm
from lstmcore.training.losses import BernoulliNLL
from lstmcore.training.online import online_update_applies
from shared_data import shared_data_dir

I, K = 6, 5


def _split(n, rng, T=9, dtype=np.float32):
    lengths = rng.integers(1, T + 1, size=n)
    x = (rng.random((n, T, I)) < 0.3).astype(dtype)
    y = (rng.random((n, T, K)) < 0.4).astype(dtype)
    for row, length in enumerate(lengths):
        x[row, length:] = 0
        y[row, length:] = 0
    return Split(x, y, lengths)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return _split(24, rng), _split(8, rng)


def _fit(path, monkeypatch, train, valid, *, variant="peephole", dtype=np.float32, model_options=None, **options):
    monkeypatch.setenv("LSTMCORE_ONLINE", path)
    model = SequenceModel(I, 7, K, variant=variant, seed=3, dtype=dtype, **(model_options or {}))
    cast = [Split(s.x.astype(dtype), s.y.astype(dtype), s.lengths) for s in (train, valid)]
    options = {"optimizer": "sgd", "learning_rate": 0.05, "batch_size": 1, "max_epochs": 3, "seed": 11, **options}
    optimizer = options.pop("optimizer")
    if optimizer == "sgd":
        optimizer = SGD(options.pop("learning_rate"), momentum=options.pop("momentum", 0.0),
                        nesterov=options.pop("nesterov", False))
    assert online_update_applies(model, optimizer, options["batch_size"], cast[0]) is (path == "compiled")
    result = fit(model, *cast, optimizer=optimizer, **options)
    return model, result, optimizer


OPTIONS = {
    "nesterov": dict(momentum=0.9, nesterov=True, input_noise=0.4, loss_normalization="sequence"),
    "classical": dict(momentum=0.5, loss_normalization="step"),
    "plain": dict(momentum=0.0, input_noise=0.2, loss_normalization="step"),
    "clipped": dict(momentum=0.9, nesterov=True, clip_norm=0.05, loss_normalization="sequence"),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_same_parameters_as_the_numpy_loop(data, monkeypatch, options, dtype):
    reference, expected, ref_opt = _fit("numpy", monkeypatch, *data, dtype=dtype, **options)
    model, result, opt = _fit("compiled", monkeypatch, *data, dtype=dtype, **options)
    assert opt.iterations == ref_opt.iterations == 3 * len(data[0])
    assert (result.status, result.epochs, result.best_epoch) == (expected.status, expected.epochs, expected.best_epoch)
    tolerance = dict(rtol=1e-4, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for name, value in reference.params.items():
        np.testing.assert_allclose(model.params[name], value, **tolerance, err_msg=name)
    for name, slots in ref_opt.state.items():
        np.testing.assert_allclose(opt.state[name]["velocity"], slots["velocity"], **tolerance, err_msg=name)
    for ours, theirs in zip(result.history, expected.history):
        assert ours["updates"] == theirs["updates"]
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5 if dtype == np.float32 else 1e-12)
        assert ours["valid_loss"] == pytest.approx(theirs["valid_loss"], rel=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("variant, model_options", [
    ("coupled", {}), ("vanilla", {"num_layers": 2}), ("fgr", {"bidirectional": True}), ("nog", {}),
], ids=["coupled", "vanilla-2-layers", "fgr-bidirectional", "nog"])
def test_every_variant_and_stack(data, monkeypatch, variant, model_options):
    kw = dict(variant=variant, model_options=model_options, dtype=np.float64, **OPTIONS["nesterov"])
    reference, _, _ = _fit("numpy", monkeypatch, *data, **kw)
    model, _, _ = _fit("compiled", monkeypatch, *data, **kw)
    for name, value in reference.params.items():
        np.testing.assert_allclose(model.params[name], value, rtol=1e-10, atol=1e-12, err_msg=name)


def test_divergence_is_reported_alike(data, monkeypatch):
    reports = [_fit(path, monkeypatch, *data, learning_rate=1e38, momentum=0.9, nesterov=True,
                    loss_normalization="sequence")[1] for path in ("numpy", "compiled")]
    assert [r.status for r in reports] == ["diverged", "diverged"]
    assert reports[0].reason == reports[1].reason == "the loss is inf at epoch 1, batch 2"
    assert reports[0].best_epoch == reports[1].best_epoch == 0


@pytest.mark.parametrize("bad, message", [(2.0, "targets must lie in"), (np.nan, "targets contain NaN")])
def test_bad_targets_raise_the_losss_error_on_both_paths(data, monkeypatch, bad, message):
    train, valid = data
    y = train.y.copy()
    y[3, 0, 1] = bad                   # a real step (every sequence has at least one)
    broken = Split(train.x, y, train.lengths)
    for path in ("numpy", "compiled"):
        with pytest.raises(ValueError, match=message):
            _fit(path, monkeypatch, broken, valid)


def test_targets_beyond_a_sequences_length_are_not_read(data, monkeypatch):
    train, valid = data
    y = train.y.copy()
    row = int(np.argmin(train.lengths))
    y[row, train.lengths[row]:] = np.nan   # padding, as neither path reads it
    if train.lengths[row] == y.shape[1]:
        pytest.skip("no padded step")
    models = [_fit(path, monkeypatch, Split(train.x, y, train.lengths), valid, dtype=np.float64)[0]
              for path in ("numpy", "compiled")]
    for name, value in models[0].params.items():
        np.testing.assert_allclose(models[1].params[name], value, rtol=1e-10, atol=1e-12)


def test_where_the_compiled_update_applies(data, monkeypatch):
    train, _ = data
    model = SequenceModel(I, 7, K, seed=0)
    monkeypatch.delenv("LSTMCORE_ONLINE", raising=False)
    assert online_update_applies(model, SGD(0.1, momentum=0.9, nesterov=True), 1, train)
    assert not online_update_applies(model, SGD(0.1), 2, train)
    assert not online_update_applies(model, Adam(0.1), 1, train)
    softmax = SequenceModel(I, 7, K, seed=0, output="softmax")
    assert not online_update_applies(softmax, SGD(0.1), 1, train)
    for options in (dict(proj_size=3), dict(zoneout=0.1), dict(recurrent_dropout=0.1)):  # fit's loop: masks, widths
        assert not online_update_applies(SequenceModel(I, 7, K, seed=0, **options), SGD(0.1), 1, train)
    monkeypatch.setenv("LSTMCORE_ONLINE", "numpy")
    assert not online_update_applies(model, SGD(0.1), 1, train)
    monkeypatch.setenv("LSTMCORE_ONLINE", "fast")
    with pytest.raises(ValueError, match="LSTMCORE_ONLINE must be one of compiled, numpy, got 'fast'"):
        fit(model, train, optimizer="sgd", batch_size=1, max_epochs=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum, nesterov, clip", [(0.0, False, None), (0.7, False, None), (0.9, True, None),
                                                      (0.9, True, 1e-3)])
def test_sgd_update_is_numpys_sgd_bitwise(dtype, momentum, nesterov, clip):
    rng = np.random.default_rng(0)
    shapes = {"W": (12, 5), "R": (12, 3), "b": (12,), "W_out": (2, 3), "b_out": (2,)}
    params = {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
    ours = {name: value.copy() for name, value in params.items()}
    reference, compiled = SGD(0.03, momentum=momentum, nesterov=nesterov), SGD(0.03, momentum, nesterov)
    for _ in range(3):
        grads = {name: rng.standard_normal(value.shape).astype(dtype) for name, value in params.items()}
        flat = [g.copy().reshape(-1) for g in grads.values()]
        norm = clip_by_global_norm(grads, clip) if clip else global_norm(grads)
        reference.step(params, grads)
        velocities = [] if momentum == 0 else [compiled._slot(n, v, "velocity").reshape(-1) for n, v in ours.items()]
        got, finite = _online.sgd_update([v.reshape(-1) for v in ours.values()], flat, velocities, 0.03, momentum,
                                         nesterov, clip, np.dtype(dtype).name)
        assert finite and got == pytest.approx(norm, rel=1e-12)
    # clipping scales by clip / norm, and the norm's float64 sum runs in another order than NumPy's: not bitwise
    same = np.array_equal if clip is None else lambda a, b: np.allclose(a, b, rtol=1e-12, atol=0)
    for name in params:
        assert same(ours[name], params[name]), name
        if momentum:
            assert same(compiled.state[name]["velocity"], reference.state[name]["velocity"]), name


def test_sgd_update_reports_non_finite_gradients_and_weights():
    value, grad = np.ones(4, np.float32), np.array([1, np.inf, 0, 0], np.float32)
    norm, finite = _online.sgd_update([value], [grad], [], 0.1, 0.0, False, None, "float32")
    assert norm == np.inf and not finite and np.array_equal(value, np.ones(4))     # nothing changed
    norm, finite = _online.sgd_update([value], [np.array([0, 0, 0, 3e30], np.float32)], [], 1e10, 0.0, False, None,
                                      "float32")
    assert np.isfinite(norm) and not finite and np.isinf(value[3])   # the step overflowed the weight


def test_noisy_input_is_fits_noise_bitwise():
    rng = np.random.default_rng(1)
    x = (rng.random((7, I)) < 0.5).astype(np.float32)
    noise = np.random.default_rng(2).standard_normal(7 * I)
    expected = np.random.default_rng(2).standard_normal((1, 7, I)).astype(np.float32)
    expected *= 0.37 * np.ones((1, 7), np.float32)[..., None]     # as fit: sigma times the step mask
    out = np.empty_like(x)
    _online.noisy_input(x, noise, 0.37, out)
    assert np.array_equal(out, (x[None] + expected)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_readout_is_the_models_readout_and_loss(dtype):
    rng = np.random.default_rng(4)
    T, F = 9, 7
    h = rng.standard_normal((T, F)).astype(dtype)
    W, b = rng.standard_normal((K, F)).astype(dtype), rng.standard_normal(K).astype(dtype)
    y = (rng.random((T, K)) < 0.5).astype(dtype)
    out = [np.empty((T, K), dtype), np.empty((T, F), dtype), np.empty((K, F), dtype), np.empty(K, dtype)]
    tight = dict(rtol=2e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    logits = h @ W.T + b
    total, count, d_logits = BernoulliNLL()(logits, y)
    d_logits = (d_logits / T).astype(dtype)
    got, problem = _online.sigmoid_readout(h, W, b, y, T, *out)
    assert problem == _online.OK and count == T and got == pytest.approx(total, rel=1e-6 if dtype == np.float32 else 1e-13)
    np.testing.assert_allclose(out[0], d_logits, **tight)
    np.testing.assert_allclose(out[2], d_logits.T @ h, **tight)
    np.testing.assert_allclose(out[3], d_logits.sum(axis=0), **tight)
    np.testing.assert_allclose(out[1], d_logits @ W, **tight)


def test_sigmoid_readout_tails_and_non_finite_logits():
    h = np.array([[1.0], [1.0], [1.0]], np.float64)
    W = np.array([[40.0], [-40.0], [0.0]])
    y = np.array([[1.0, 0.0, 1.0]] * 3)
    out = [np.empty((3, 3)), np.empty((3, 1)), np.empty((3, 1)), np.empty(3)]
    total, problem = _online.sigmoid_readout(h, W, np.zeros(3), y, 1, *out)
    expected, _, d_logits = BernoulliNLL()(h @ W.T, y)
    assert problem == _online.OK and total == pytest.approx(expected, rel=1e-13)
    # sigma(-40) = 4.2e-18: NumPy's (1 + tanh(a/2)) / 2 rounds it to 0, e^a / (1 + e^a) keeps it
    np.testing.assert_allclose(out[0], d_logits, rtol=1e-12, atol=1e-17)
    assert out[0][0, 1] == pytest.approx(1 / (1 + np.exp(40.0)), rel=1e-12)
    for bad in (np.inf, -np.inf, np.nan):
        total, problem = _online.sigmoid_readout(h, np.array([[bad], [0.0], [0.0]]), np.zeros(3), y, 1, *out)
        assert not np.isfinite(total) and problem == _online.NON_FINITE_LOSS
    for bad in (-0.5, 1.5, np.nan):
        y[2, 1] = bad
        assert _online.sigmoid_readout(h, W, np.zeros(3), y, 1, *out)[1] == _online.BAD_TARGETS


def test_compiled_functions_refuse_shapes_that_do_not_agree():
    a = np.zeros((3, 4))
    with pytest.raises(ValueError, match="sigmoid_readout: .* do not agree"):
        _online.sigmoid_readout(a, np.zeros((2, 5)), np.zeros(2), np.zeros((3, 2)), 1, np.zeros((3, 2)), a,
                                np.zeros((2, 4)), np.zeros(2))
    with pytest.raises(ValueError, match="noisy_input: .* do not agree"):
        _online.noisy_input(a, np.zeros(5), 0.1, a.copy())
    with pytest.raises(ValueError, match="sgd_update: parameter 0 has 4 elements, its gradient 3"):
        _online.sgd_update([np.zeros(4)], [np.zeros(3)], [], 0.1, 0.0, False, None, "float64")
    with pytest.raises(ValueError, match="sgd_update: dtype must be float32 or float64"):
        _online.sgd_update([np.zeros(4)], [np.zeros(4)], [], 0.1, 0.0, False, None, "int8")


def test_jsb_chorales_one_epoch_of_the_protocol(monkeypatch):
    from lstmcore.datasets import load_jsb_chorales

    folder = shared_data_dir("jsb-chorales", "*.json")
    if folder is None:
        pytest.skip("no shared JSB Chorales data beside the checkout")
    data = load_jsb_chorales(folder, download=False)
    models = []
    for path in ("numpy", "compiled"):
        monkeypatch.setenv("LSTMCORE_ONLINE", path)
        model = SequenceModel(88, 20, 88, variant="peephole", seed=0)
        fit(model, data.train, optimizer="sgd", learning_rate=1e-3, momentum=0.9, nesterov=True, input_noise=0.5,
            loss_normalization="sequence", batch_size=1, max_epochs=1, seed=5)
        models.append(model)
    for name, value in models[0].params.items():
        np.testing.assert_allclose(models[1].params[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
