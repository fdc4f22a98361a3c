"""lstmcore.training: whole-model gradients, masked losses, optimizers, the fit loop and checkpoints."""
import json
import math

import numpy as np
import pytest

import lstmcore
from lstmcore.datasets import Split, adding_problem
from lstmcore.testing import numerical_gradient
from lstmcore.training import (
    SGD,
    Adam,
    BernoulliNLL,
    CheckpointError,
    MeanSquaredError,
    SequenceModel,
    SoftmaxCrossEntropy,
    accuracy,
    clip_by_global_norm,
    evaluate,
    fit,
    load_checkpoint,
    save_checkpoint,
    step_mask,
)


def random_targets(rng, output, shape, K):
    """Targets for a readout: floats for linear, {0,1} labels for sigmoid, class ids for softmax."""
    if output == "linear":
        return rng.normal(size=shape + (K,))
    if output == "sigmoid":
        return (rng.random(shape + (K,)) < 0.3).astype(np.float64)
    return rng.integers(0, K, size=shape)


# -- whole-model gradients ----------------------------------------------------------------------------------------------
MODEL_CASES = {
    "per_step-sigmoid-peephole-2layer-bidir": dict(variant="peephole", num_layers=2, bidirectional=True,
                                                   output="sigmoid", per_step=True, lengths=[5, 3, 0]),
    "per_step-softmax-vanilla": dict(variant="vanilla", output="softmax", per_step=True, lengths=[2, 5, 4]),
    "per_step-linear-nfg": dict(variant="nfg", output="linear", per_step=True, lengths=None),
    "last_step-softmax-coupled-bidir": dict(variant="coupled", bidirectional=True, output="softmax", per_step=False,
                                            lengths=[5, 2, 4]),
    "last_step-linear-fgr-2layer": dict(variant="fgr", num_layers=2, output="linear", per_step=False,
                                        lengths=[3, 5, 1]),
}


@pytest.mark.parametrize("case", MODEL_CASES, ids=list(MODEL_CASES))
def test_whole_model_gradient_matches_finite_differences(case):
    """Readout + LSTM stack + masked mean loss per step: every parameter entry, and the input, in float64."""
    options = dict(MODEL_CASES[case])
    lengths = options.pop("lengths")
    rng = np.random.default_rng(1)
    B, T, I, H, K = 3, 5, 3, 4, 3
    model = SequenceModel(I, H, K, seed=0, dtype=np.float64, **options)
    for value in model.params.values():               # non-zero biases and peepholes, so every term is exercised
        value += 0.1 * rng.normal(size=value.shape)
    x = rng.normal(size=(B, T, I))
    y = random_targets(rng, model.output, (B, T) if model.per_step else (B,), K)

    def loss():
        total, count = model.loss_value(x, y, lengths)
        return total / count

    model.loss_and_gradients(x, y, lengths)
    grads = {name: g.copy() for name, g in model.grads.items()}
    assert set(grads) == set(model.params)
    for name, value in model.params.items():
        expected = numerical_gradient(loss, value)
        np.testing.assert_allclose(grads[name], expected, rtol=1e-5, atol=1e-8, err_msg=name)

    logits = model.forward(x, lengths)
    _, count, d_logits = model.loss(logits, y, model.targets_mask(lengths, T, B))
    d_x = model.backward(d_logits / count, need_input_grad=True)
    np.testing.assert_allclose(d_x, numerical_gradient(loss, x), rtol=1e-5, atol=1e-8)


class ElmanCell(lstmcore.Variant):
    """A plugin-style variant written in NumPy with a single state: ``h_t = tanh(W x_t + R h_{t-1} + b)``."""

    name = "test-elman"
    state_names = ("h",)

    def parameter_shapes(self, input_size, hidden_size):
        return {"W": (hidden_size, input_size), "R": (hidden_size, hidden_size), "b": (hidden_size,)}

    def forward(self, params, x, state, lengths, reverse, out):
        assert not reverse
        T, B, _ = x.shape
        live = np.arange(T)[:, None] < (np.full(B, T) if lengths is None else lengths)[None, :]
        hs = [state[0]]
        for t in range(T):
            new = np.tanh(x[t] @ params["W"].T + hs[-1] @ params["R"].T + params["b"])
            out[t] = np.where(live[t, :, None], new, 0.0)
            hs.append(np.where(live[t, :, None], new, hs[-1]))
        return (hs[-1],), (x, hs, live)

    def backward(self, params, cache, d_out, d_state, d_x, accumulate_dx):
        x, hs, live = cache
        grads = {name: np.zeros_like(value) for name, value in params.items()}
        d_h = d_state[0].copy()
        if not accumulate_dx:
            d_x[...] = 0.0
        for t in reversed(range(x.shape[0])):
            mask = live[t, :, None]
            d_pre = (d_h + d_out[t]) * mask * (1.0 - hs[t + 1] ** 2)
            grads["W"] += d_pre.T @ x[t]
            grads["R"] += d_pre.T @ hs[t]
            grads["b"] += d_pre.sum(axis=0)
            d_x[t] += d_pre @ params["W"]
            d_h = d_h * ~mask + d_pre @ params["R"]
        return (d_h,), grads


@pytest.mark.parametrize("per_step", [True, False])
def test_a_plugin_variant_with_one_state_trains_end_to_end(per_step):
    """Any variant, not only the compiled family: gradients through a NumPy cell with state (h,), then a fit."""
    rng = np.random.default_rng(2)
    model = SequenceModel(3, 4, 2, variant=ElmanCell(), num_layers=2, output="softmax", per_step=per_step, seed=0,
                          dtype=np.float64)
    x, lengths = rng.normal(size=(3, 5, 3)), [5, 2, 4]
    y = rng.integers(0, 2, size=(3, 5) if per_step else (3,))
    model.loss_and_gradients(x, y, lengths)
    grads = {name: g.copy() for name, g in model.grads.items()}

    def loss():
        total, count = model.loss_value(x, y, lengths)
        return total / count

    for name, value in model.params.items():
        np.testing.assert_allclose(grads[name], numerical_gradient(loss, value), rtol=1e-5, atol=1e-8, err_msg=name)
    mask = step_mask(lengths, 5, np.float64)
    split = Split(x * mask[..., None], np.where(mask > 0, y, 0) if per_step else y, np.array(lengths))
    result = fit(model, split, split, optimizer="adam", learning_rate=0.05, batch_size=3, max_epochs=20, seed=0)
    assert result.status == "completed" and result.best_valid < 0.5 * math.log(2)     # chance: log 2


def test_last_step_reads_each_sequences_last_real_step():
    """Padding past a length changes nothing: the readout sees the state at the last real step."""
    rng = np.random.default_rng(0)
    model = SequenceModel(2, 5, 1, variant="peephole", output="linear", per_step=False, seed=0, dtype=np.float64)
    x = rng.normal(size=(2, 6, 2))
    padded = x.copy()
    padded[0, 3:] = 99.0
    a = model.forward(x, [3, 6])
    b = model.forward(padded, [3, 6])
    alone = model.forward(x[:1, :3], None)
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a[:1], alone, rtol=1e-12)


def test_sequence_normalization_scales_the_gradient_by_steps_per_sequence():
    rng = np.random.default_rng(0)
    model = SequenceModel(3, 4, 2, output="sigmoid", seed=0, dtype=np.float64)
    x, y, lengths = rng.normal(size=(3, 6, 3)), (rng.random((3, 6, 2)) < 0.5) * 1.0, [6, 2, 4]
    total, count = model.loss_and_gradients(x, y, lengths, "step")
    per_step = {name: g.copy() for name, g in model.grads.items()}
    assert model.loss_and_gradients(x, y, lengths, "sequence") == (total, count) and count == 12
    for name, g in model.grads.items():
        np.testing.assert_allclose(g, per_step[name] * 12 / 3, rtol=1e-12)
    with pytest.raises(ValueError, match="normalization"):
        model.loss_and_gradients(x, y, lengths, "batch")


def test_model_parameter_count_and_validation():
    model = SequenceModel(88, 100, 88, variant="peephole", seed=0)
    assert model.parameter_count() == (4 * 100 * (88 + 100) + 7 * 100) + 88 * 100 + 88
    with pytest.raises(ValueError, match="output must be one of"):
        SequenceModel(3, 4, 2, output="relu")
    with pytest.raises(ValueError, match="output_size"):
        SequenceModel(3, 4, 0)
    with pytest.raises(KeyError, match="vanilla"):
        SequenceModel(3, 4, 2, variant="no-such-variant")
    with pytest.raises(RuntimeError, match="forward"):
        model.backward(np.zeros((1, 1, 88), np.float32))


# -- losses ---------------------------------------------------------------------------------------------------------
def direct_per_step_losses(output, logits, y, lengths):
    """The mean loss per real step, step by step, without the vectorised code or the mask."""
    losses = []
    for b, length in enumerate(lengths):
        for t in range(length):
            a = logits[b, t]
            if output == "linear":
                losses.append(np.mean((a - y[b, t]) ** 2))
            elif output == "sigmoid":
                p = 1.0 / (1.0 + np.exp(-a))
                losses.append(-np.sum(y[b, t] * np.log(p) + (1 - y[b, t]) * np.log(1 - p)))
            else:
                p = np.exp(a) / np.sum(np.exp(a))
                losses.append(-np.log(p[y[b, t]]))
    return np.sum(losses), len(losses)


@pytest.mark.parametrize("loss_class", [MeanSquaredError, BernoulliNLL, SoftmaxCrossEntropy])
def test_masked_loss_matches_direct_numpy(loss_class):
    rng = np.random.default_rng(3)
    B, T, K = 4, 6, 5
    lengths = np.array([6, 2, 0, 4])
    loss = loss_class()
    logits = rng.normal(size=(B, T, K)) * 3
    y = random_targets(rng, loss.output, (B, T), K)
    mask = step_mask(lengths, T, np.float64)
    if loss.output == "softmax":
        y[mask == 0] = -1                         # ids at padded steps are ignored
    else:
        y[mask == 0] = 0.5                        # so are targets there
    total, count, d_logits = loss(logits, y, mask)
    expected_total, expected_count = direct_per_step_losses(loss.output, logits, y, lengths)
    assert count == expected_count == lengths.sum()
    assert total == pytest.approx(expected_total, rel=1e-12)
    assert not d_logits[mask == 0].any()
    for b, t in [(0, 5), (1, 1), (3, 0)]:          # the gradient at a real step, by central differences
        def step_loss(a, sub_y=y[b:b + 1, t:t + 1]):
            return loss(a.reshape(1, 1, K), sub_y)[0]
        a = logits[b, t].copy()
        numeric = [(step_loss(a + e) - step_loss(a - e)) / 2e-6 for e in np.eye(K) * 1e-6]
        np.testing.assert_allclose(d_logits[b, t], numeric, rtol=1e-6, atol=1e-8)


def test_losses_are_stable_for_large_logits():
    logits = np.array([[800.0, -800.0, 0.0]])
    total, _, grad = BernoulliNLL()(logits, np.array([[0.0, 1.0, 1.0]]))
    assert total == pytest.approx(1600 + math.log(2))
    np.testing.assert_allclose(grad, [[1.0, -1.0, -0.5]])
    total, _, grad = SoftmaxCrossEntropy()(logits, np.array([1]))
    assert total == pytest.approx(1600.0)
    assert np.isfinite(grad).all()


def test_soft_targets_and_class_ids_agree():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4))
    ids = np.array([2, 0, 3])
    by_id = SoftmaxCrossEntropy()(logits, ids)
    by_one_hot = SoftmaxCrossEntropy()(logits, np.eye(4)[ids])
    assert by_id[0] == pytest.approx(by_one_hot[0])
    np.testing.assert_allclose(by_id[2], by_one_hot[2])


def test_loss_target_validation():
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 3\]"):
        SoftmaxCrossEntropy()(np.zeros((2, 4)), np.array([1, 4]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        BernoulliNLL()(np.zeros((2, 4)), np.full((2, 4), 2.0))
    with pytest.raises(ValueError, match="shape"):
        MeanSquaredError()(np.zeros((2, 4)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        MeanSquaredError()(np.zeros((2, 4)), np.full((2, 4), np.nan))


def test_evaluate_is_the_nll_per_real_step():
    """evaluate = Σ over real steps of the 88-style summed Bernoulli NLL / number of real steps, any batch size."""
    rng = np.random.default_rng(5)
    N, T, K = 7, 9, 6
    lengths = rng.integers(1, T + 1, size=N)
    mask = step_mask(lengths, T, np.float64)[..., None]
    split = Split(rng.normal(size=(N, T, 4)) * mask, (rng.random((N, T, K)) < 0.4) * mask, lengths)
    model = SequenceModel(4, 5, K, variant="peephole", output="sigmoid", seed=0, dtype=np.float64)
    p = model.predict(split.x, split.lengths)
    nll = -(split.y * np.log(p) + (1 - split.y) * np.log(1 - p)).sum(axis=-1)
    expected = np.sum(nll * mask[..., 0]) / lengths.sum()
    assert evaluate(model, split, batch_size=3) == pytest.approx(expected, rel=1e-10)
    assert evaluate(model, split, batch_size=100) == pytest.approx(expected, rel=1e-10)


# -- optimizers -----------------------------------------------------------------------------------------------------
def quadratic_gradient(theta):
    """The gradient of f(θ) = ½ θᵀ A θ + bᵀ θ."""
    A = np.array([[3.0, 0.5], [0.5, 1.0]])
    return A @ theta + np.array([1.0, -2.0])


def test_sgd_plain_and_classical_momentum_match_hand_formulas():
    g1, g2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    theta = np.array([1.0, 1.0])
    SGD(0.1).step({"w": theta}, {"w": g1})
    np.testing.assert_allclose(theta, [0.9, 1.2])
    theta = np.array([1.0, 1.0])
    opt = SGD(0.1, momentum=0.9)
    opt.step({"w": theta}, {"w": g1})              # v1 = -0.1 g1
    opt.step({"w": theta}, {"w": g2})              # v2 = 0.9 v1 - 0.1 g2
    v1 = -0.1 * g1
    v2 = 0.9 * v1 - 0.1 * g2
    np.testing.assert_allclose(theta, np.array([1.0, 1.0]) + v1 + v2)


def test_nesterov_follows_sutskever_2013_with_lookahead_parameters():
    """Sutskever et al. (2013): v ← μv − ε∇f(θ + μv), θ ← θ + v. The optimizer holds Θ = θ + μv."""
    lr, mu = 0.05, 0.9
    theta, velocity = np.array([2.0, -1.0]), np.zeros(2)
    held = theta.copy()                            # Θ_0 = θ_0 since v_0 = 0
    opt = SGD(lr, momentum=mu, nesterov=True)
    for _ in range(25):
        velocity = mu * velocity - lr * quadratic_gradient(theta + mu * velocity)
        theta = theta + velocity
        opt.step({"w": held}, {"w": quadratic_gradient(held)})
        np.testing.assert_allclose(held, theta + mu * velocity, rtol=1e-12, atol=1e-12)


def test_adam_matches_the_textbook_form():
    """Kingma & Ba: m̂ = m/(1−β1ᵗ), v̂ = v/(1−β2ᵗ), θ ← θ − ε m̂/(√v̂ + ε̂), where ε̂ = ε_keras/√(1−β2ᵗ)."""
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    held = np.array([2.0, -1.0])
    theta, m, v = held.copy(), np.zeros(2), np.zeros(2)
    opt = Adam(lr)
    for t in range(1, 20):
        g = quadratic_gradient(theta)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps / np.sqrt(1 - b2 ** t))
        opt.step({"w": held}, {"w": quadratic_gradient(held)})
        np.testing.assert_allclose(held, theta, rtol=1e-12)


def test_clip_by_global_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert clip_by_global_norm(grads, 10.0) == pytest.approx(5.0)
    np.testing.assert_allclose(grads["a"], [3.0, 0.0])
    assert clip_by_global_norm(grads, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(grads["a"], [0.6, 0.0])
    np.testing.assert_allclose(grads["b"], [[0.8]])


def test_optimizer_validation():
    with pytest.raises(ValueError, match="momentum"):
        SGD(0.1, momentum=1.0)
    theta = np.array([1.0])
    SGD(0.1, nesterov=True).step({"w": theta}, {"w": np.array([2.0])})   # μ = 0: plain SGD
    np.testing.assert_allclose(theta, [0.8])
    with pytest.raises(ValueError, match="learning_rate"):
        Adam(float("nan"))
    with pytest.raises(KeyError, match="no gradient"):
        SGD(0.1).step({"w": np.zeros(2)}, {})


# -- the fit loop -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def adding():
    return adding_problem(length=12, n_train=96, n_valid=48, n_test=48, seed=0)


def small_model(data, **kwargs):
    options = {"variant": "peephole", "output": data.output, "per_step": data.per_step, "seed": 0}
    options.update(kwargs)
    return SequenceModel(data.n_inputs, 8, data.n_outputs, **options)


def test_fit_learns_and_is_deterministic(adding):
    results = []
    for _ in range(2):
        model = small_model(adding)
        before = evaluate(model, adding.valid)
        result = fit(model, adding.train, adding.valid, optimizer="adam", learning_rate=1e-2, batch_size=16,
                     max_epochs=6, seed=3)
        results.append((result, model))
    (first, model_a), (second, model_b) = results
    assert first.status == "completed" and first.epochs == 6 and len(first.history) == 6
    assert first.best_valid < 0.7 * before
    assert [r["train_loss"] for r in first.history] == [r["train_loss"] for r in second.history]
    for name, value in model_a.params.items():
        np.testing.assert_array_equal(value, model_b.params[name])
    assert first.history[-1]["updates"] == 6 * math.ceil(96 / 16)
    assert evaluate(model_a, adding.valid) == pytest.approx(first.best_valid, rel=1e-6)


def test_online_setting_one_sequence_per_update(adding):
    model = small_model(adding)
    result = fit(model, adding.train, adding.valid, optimizer="sgd", learning_rate=1e-2, momentum=0.9,
                 nesterov=True, batch_size=1, max_epochs=1, seed=0)
    assert result.history[0]["updates"] == len(adding.train)


def test_early_stopping_restores_the_best_weights(adding):
    """Validation targets that contradict the training targets: the validation loss rises, training stops after
    ``patience`` epochs without improvement, and the model holds the best epoch's weights."""
    contrary = Split(adding.valid.x, -adding.valid.y, adding.valid.lengths)
    model = small_model(adding)
    result = fit(model, adding.train, contrary, optimizer="adam", learning_rate=1e-2, batch_size=16, max_epochs=30,
                 patience=2, seed=0)
    valid_losses = [r["valid_loss"] for r in result.history]
    assert result.status == "early_stopped" and "no improvement for 2 epochs" in result.reason
    assert result.epochs == result.best_epoch + 2 < 30
    assert result.best_valid == min(valid_losses) < valid_losses[-1]
    assert evaluate(model, contrary) == pytest.approx(result.best_valid, rel=1e-6)


def test_divergence_is_a_status_not_a_crash(adding):
    model = small_model(adding)
    initial = {name: value.copy() for name, value in model.params.items()}
    result = fit(model, adding.train, adding.valid, optimizer="sgd", learning_rate=1e30, batch_size=8,
                 max_epochs=5, seed=0)
    assert result.status == "diverged"
    assert "NaN or Inf" in result.reason or "the loss is" in result.reason
    assert result.best_epoch == 0 and result.best_valid == math.inf and result.epochs == 0
    for name, value in model.params.items():        # nothing finished: the initial weights are back
        np.testing.assert_array_equal(value, initial[name])


def test_time_budget_callback_schedule_and_progress(adding, capsys):
    model = small_model(adding)
    seen = []
    result = fit(model, adding.train, None, optimizer="adam", learning_rate=lambda epoch: 1e-3 / epoch,
                 batch_size=32, max_epochs=4, seed=0, progress=True, callback=seen.append)
    assert result.status == "completed" and len(seen) == 4
    assert [r["learning_rate"] for r in seen] == pytest.approx([1e-3, 5e-4, 1e-3 / 3, 2.5e-4])
    assert result.best_valid == min(r["train_loss"] for r in seen)   # no validation split: the training loss
    assert "epoch 4/4" in capsys.readouterr().err
    result = fit(model, adding.train, adding.valid, max_epochs=5, batch_size=32, time_budget=1e-9)
    assert result.status == "time_budget" and result.epochs == 1
    result = fit(model, adding.train, adding.valid, max_epochs=5, batch_size=32, callback=lambda r: r["epoch"] == 2)
    assert result.status == "early_stopped" and result.epochs == 2 and "callback" in result.reason


def test_input_noise_touches_only_real_steps():
    """The noise is drawn for every batch, on the real steps; padded steps stay zero."""
    rng = np.random.default_rng(0)
    lengths = np.array([4, 2, 6, 1])
    mask = step_mask(lengths, 6, np.float32)[..., None]
    split = Split((rng.normal(size=(4, 6, 3)) * mask).astype(np.float32),
                  (rng.normal(size=(4, 6, 2)) * mask).astype(np.float32), lengths)
    seen = []

    class Recording(SequenceModel):
        def loss_and_gradients(self, x, y, lengths=None, normalization="step"):
            seen.append((x.copy(), np.asarray(lengths).copy()))
            return super().loss_and_gradients(x, y, lengths, normalization)

    model = Recording(3, 4, 2, output="linear", seed=0)
    fit(model, split, optimizer="sgd", learning_rate=0.0, batch_size=4, max_epochs=1, input_noise=0.5, seed=0)
    (x, batch_lengths), = seen
    real = step_mask(batch_lengths, x.shape[1], bool)
    assert not x[~real].any()
    order = np.argsort(np.argsort(batch_lengths))        # batch rows back to split rows (lengths are distinct)
    clean = split.x[np.argsort(lengths)][order][:, : x.shape[1]]
    noise = (x - clean)[real]
    assert 0.3 < noise.std() < 0.7


def test_fit_validates_its_input(adding):
    model = small_model(adding)
    with pytest.raises(ValueError, match="features"):
        fit(model, Split(np.zeros((2, 3, 5), np.float32), np.zeros((2, 1), np.float32), [3, 3]))
    per_step = Split(np.zeros((2, 3, 2), np.float32), np.zeros((2, 3, 1), np.float32), [3, 3])
    with pytest.raises(ValueError, match="per_step=False"):
        fit(model, per_step)
    with pytest.raises(ValueError, match="batch_size"):
        fit(model, adding.train, batch_size=0)
    with pytest.raises(ValueError, match="optimizer"):
        fit(model, adding.train, optimizer="rmsprop")


def test_accuracy_for_classification():
    split = Split(np.zeros((3, 2, 1), np.float32), np.array([0, 1, 1]), [2, 2, 1])
    model = SequenceModel(1, 2, 2, output="softmax", per_step=False, seed=0)
    model.params["b_out"][:] = [0.0, 5.0]              # always class 1
    assert accuracy(model, split) == pytest.approx(2 / 3)


# -- checkpoints ------------------------------------------------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    model = SequenceModel(3, 5, 4, variant="coupled", num_layers=2, bidirectional=True, output="softmax",
                          per_step=False, seed=1, dtype=np.float64, gate_activation=("hard_sigmoid", 0.25, 0.5),
                          clip=3.0)
    path = save_checkpoint(model, tmp_path / "model", epochs=3, note="hello")
    assert path.suffix == ".npz"
    loaded = load_checkpoint(path)
    assert json.loads(json.dumps(loaded.config())) == json.loads(json.dumps(model.config()))
    assert loaded.variant == "coupled" and loaded.dtype == np.float64 and loaded.bidirectional
    assert loaded.lstm.cells[0] == model.lstm.cells[0]          # the variant options came back
    x = rng.normal(size=(2, 6, 3))
    np.testing.assert_array_equal(loaded.predict(x, [6, 3]), model.predict(x, [6, 3]))
    other = SequenceModel(3, 5, 4, variant="coupled", num_layers=2, bidirectional=True, output="softmax",
                          per_step=False, seed=2, dtype=np.float64, gate_activation=("hard_sigmoid", 0.25, 0.5),
                          clip=3.0)
    load_checkpoint(path, model=other)
    np.testing.assert_array_equal(other.predict(x), model.predict(x))
    from lstmcore.training import checkpoint_metadata
    meta = checkpoint_metadata(path)
    assert meta["epochs"] == 3 and meta["checkpoint"]["lstmcore_version"] == lstmcore.__version__


def test_checkpoint_errors_are_clear(tmp_path):
    model = SequenceModel(3, 5, 2, variant="peephole", seed=0)
    path = save_checkpoint(model, tmp_path / "model.npz")
    with pytest.raises(CheckpointError, match=r"W_l0.*\(20, 3\).*\(24, 3\)|hidden_size"):
        load_checkpoint(path, model=SequenceModel(3, 6, 2, variant="peephole"))
    unregistered = lstmcore.GatedCell("not-registered-cell", peepholes=True, coupled=True, forget_gate=False)
    cell_path = save_checkpoint(SequenceModel(3, 5, 2, variant=unregistered, seed=0), tmp_path / "cell.npz")
    with pytest.raises(CheckpointError, match="'not-registered-cell', which is not registered.*plugin"):
        load_checkpoint(cell_path)
    np.savez(tmp_path / "plain.npz", w=np.zeros(3))
    with pytest.raises(CheckpointError, match="not an lstmcore checkpoint"):
        load_checkpoint(tmp_path / "plain.npz")
    with np.load(path) as archive:
        contents = dict(archive)
    meta = json.loads(str(contents["__meta__"]))
    meta["format_version"] = 99
    contents["__meta__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "future.npz", **contents)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "future.npz")
    meta["format_version"] = 1
    contents["__meta__"] = np.array(json.dumps(meta))
    contents["param/R_l0"] = np.zeros((4, 4))
    np.savez(tmp_path / "bad_shape.npz", **contents)
    with pytest.raises(CheckpointError, match=r"'R_l0' has shape \(4, 4\) in the checkpoint but \(20, 5\)"):
        load_checkpoint(tmp_path / "bad_shape.npz")


def _damaged_copies(path, tmp_path):
    data = path.read_bytes()
    yield "empty", b""
    for cut in (10, len(data) // 3, len(data) // 2, len(data) - 5):
        yield f"truncated at {cut}", data[:cut]
    for offset in range(30, len(data), max(1, len(data) // 40)):
        flipped = bytearray(data)
        flipped[offset] ^= 0xFF
        yield f"byte {offset} flipped", bytes(flipped)


def test_damaged_checkpoint_files_raise_checkpoint_error_naming_the_file(tmp_path):
    path = save_checkpoint(SequenceModel(3, 5, 2, variant="peephole", seed=0), tmp_path / "model.npz")
    for label, content in _damaged_copies(path, tmp_path):
        damaged = tmp_path / "damaged.npz"
        damaged.write_bytes(content)
        try:
            load_checkpoint(damaged)
        except CheckpointError as exc:
            assert str(damaged) in str(exc), label
        # A flip inside a stored weight's bytes can leave a readable file with other numbers: that loads.


@pytest.mark.parametrize("change, message", [
    (lambda meta: meta.clear() or meta.update(format="lstmcore-checkpoint", format_version=1), "'config'"),
    (lambda meta: meta["config"].update(dtype=None), r"config\['dtype'\] is None"),
    (lambda meta: meta["config"].update(dtype="int8"), "float32, float64"),
    (lambda meta: meta["config"].update(hidden_size="5"), r"config\['hidden_size'\]"),
    (lambda meta: meta["config"].pop("variant"), r"config\['variant'\]"),
    (lambda meta: meta.update(format_version="1"), "format_version"),
    (lambda meta: meta.update(metadata=[1]), "'metadata'"),
    (lambda meta: meta["config"].update(variant_options={"no_such_option": 1}), "cannot be built"),
])
def test_malformed_checkpoint_meta_is_a_checkpoint_error(tmp_path, change, message):
    path = save_checkpoint(SequenceModel(3, 5, 2, variant="peephole", seed=0), tmp_path / "model.npz")
    with np.load(path) as archive:
        contents = dict(archive)
    meta = json.loads(str(contents["__meta__"]))
    change(meta)
    contents["__meta__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "bad_meta.npz", **contents)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "bad_meta.npz")
    for not_an_object in ("[1, 2]", "null", "not json"):
        contents["__meta__"] = np.array(not_an_object)
        np.savez(tmp_path / "bad_meta.npz", **contents)
        with pytest.raises(CheckpointError, match="bad_meta.npz"):
            load_checkpoint(tmp_path / "bad_meta.npz")


@pytest.mark.parametrize("argument, value, error", [
    ("learning_rate", "fast", TypeError), ("learning_rate", -1.0, ValueError), ("learning_rate", float("nan"), ValueError),
    ("momentum", "high", TypeError), ("input_noise", "a", TypeError), ("clip_norm", "a", TypeError),
    ("clip_norm", float("inf"), ValueError), ("time_budget", "5", TypeError), ("seed", "abc", TypeError),
    ("seed", -1, ValueError), ("seed", 1.5, TypeError)])
def test_fit_names_a_bad_number_or_seed(argument, value, error):
    data = adding_problem(length=5, n_train=4, n_valid=2, n_test=2, seed=0)
    model = SequenceModel(2, 3, 1, output="linear", per_step=False, seed=0)
    with pytest.raises(error, match=argument):
        fit(model, data.train, data.valid, max_epochs=1, **{argument: value})


@pytest.mark.parametrize("value, error", [("abc", TypeError), (-1, ValueError), (2.5, TypeError), ([0, -3], ValueError)])
def test_bad_seeds_name_the_argument(value, error):
    for build in (lambda: lstmcore.LSTM(2, 3, seed=value), lambda: SequenceModel(2, 3, 1, seed=value),
                  lambda: adding_problem(length=5, n_train=4, n_valid=2, n_test=2, seed=value)):
        with pytest.raises(error, match="seed"):
            build()
    with pytest.raises(TypeError, match="clip"):
        lstmcore.LSTM(2, 3, clip="a")
