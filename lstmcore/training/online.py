"""The compiled online update: an epoch of one-sequence updates with the readout and its loss, and the gradient norm
with the SGD step, each in one compiled call (``lstmcore._kernels._online``), for the paper's setting (batch size 1,
SGD, per-step sigmoid outputs). ``fit``'s ``train_epoch`` hands such an epoch to ``online_epoch``.

It computes what ``train_epoch``'s NumPy loop computes, in the same order: the same permutation and noise draws from
the same generator, the LSTM stack's forward and BPTT through the same driver calls (``LSTM.run_forward`` and
``run_backward`` on the live parameters), the same divergence checks and reasons, the loss's own error for a bad
target at the update that reads it. The parameters are checked once per epoch instead of at every update (each
step's check that the weights stay finite keeps that true between updates). The noise and the SGD step are bitwise
NumPy's; the readout's products (another BLAS) and the loss's exponentials agree to rounding.

``LSTMCORE_ONLINE=numpy`` in the environment turns it off (to compare the two, or to rule it out).
"""
from __future__ import annotations

import math
import os

import numpy as np

from lstmcore.datasets import Split
from lstmcore.training.losses import BernoulliNLL
from lstmcore.training.model import NON_FINITE_GRADIENT, READOUT_BIAS, READOUT_WEIGHT, SequenceModel
from lstmcore.training.optimizers import SGD

#: ``LSTMCORE_ONLINE``: "compiled" (the default) or "numpy" (fit's NumPy loop for every batch size).
ONLINE_PATHS = ("compiled", "numpy")


def online_path() -> str:
    """The path ``fit`` takes for one-sequence updates, from ``LSTMCORE_ONLINE`` (``ValueError`` for another value)."""
    value = os.environ.get("LSTMCORE_ONLINE", "compiled").strip().lower() or "compiled"
    if value not in ONLINE_PATHS:
        raise ValueError(f"LSTMCORE_ONLINE must be one of {', '.join(ONLINE_PATHS)}, got {value!r}")
    return value


def online_update_applies(model: SequenceModel, optimizer, batch_size: int, train: Split) -> bool:
    """Whether an epoch can run on the compiled online update: one sequence per update, plain ``SGD`` (any momentum,
    Nesterov or not), a ``SequenceModel`` (not a subclass) with per-step sigmoid outputs and its Bernoulli NLL, C-
    contiguous parameters, float targets of the model's dtype (``fit`` casts them), every training sequence at least one
    step long, and ``LSTMCORE_ONLINE`` not "numpy"."""
    return (batch_size == 1 and type(optimizer) is SGD and type(model) is SequenceModel and model.per_step
            # the update runs the stack without a projection or masks (zoneout, recurrent dropout)
            and (model.lstm.proj_size, model.lstm.zoneout, model.lstm.recurrent_dropout) == (None, None, None)
            and type(model.loss) is BernoulliNLL and train.y.dtype == model.dtype and int(train.lengths.min()) >= 1
            and all(value.flags.c_contiguous for value in model.params.values()) and online_path() == "compiled")


def online_epoch(model: SequenceModel, train: Split, optimizer: SGD, rng: np.random.Generator, epoch: int,
                 input_noise: float, clip_norm: float | None, loss_normalization: str, bar=None):
    """``lstmcore.training.fit.train_epoch`` for one-sequence updates, where ``online_update_applies``: the epoch's
    permutation and input noise drawn from ``rng`` as there, one compiled update per sequence. Returns the mean
    training loss per step and ``None``, or ``(nan, why)`` when an update diverged. Targets outside [0, 1] or not
    finite raise the loss's ``ValueError`` at the update that reads them, as there."""
    from lstmcore._kernels import _online

    lstm = model.lstm
    lstm._checked_params()        # shapes, dtypes, finite: once; each step below checks that they stay finite
    W, b = model._checked_readout()
    L, D, H, I = lstm.num_layers, lstm.num_directions, lstm.hidden_size, lstm.input_size
    K, F = model.output_size, D * H
    dtype = model.dtype
    dtype_name = dtype.name     # a property that costs ~20 us: once
    live = [[{name: lstm.params[key] for name, key in lstm.parameter_keys(k, d).items()} for d in range(D)]
            for k in range(L)]
    keys = list(model.params)
    lstm_keys = [key for key in keys if key not in (READOUT_WEIGHT, READOUT_BIAS)]
    flat_params = [model.params[key].reshape(-1) for key in keys]
    momentum, nesterov = optimizer.momentum, optimizer.nesterov
    velocities = ([] if momentum == 0.0 else
                  [optimizer._slot(key, model.params[key], "velocity").reshape(-1) for key in keys])
    learning_rate = optimizer.learning_rate
    order = rng.permutation(len(train))

    def divisor(steps):    # of the objective: its mean per step, or its sum over time (one sequence per batch)
        return steps if loss_normalization == "step" else 1

    lengths = np.ascontiguousarray(train.lengths, dtype=np.int32)
    T_max = int(lengths[order].max())
    d_logits = np.empty((T_max, K), dtype)
    d_features = np.empty((T_max, F), dtype)
    noisy = np.empty((T_max, I), dtype) if input_noise > 0 else None
    state_shape = (L * D, 1, H)
    n_states = len(lstm.cells[0].state_names)
    # train_epoch's draws, all at once (the generator fills them in the same order)
    noise = rng.standard_normal(int(lengths[order].sum(dtype=np.int64)) * I) if input_noise > 0 else None
    drawn = 0
    total, count = 0.0, 0
    for index, row in enumerate(order):
        T = int(lengths[row])
        x = train.x[row, :T]
        if noise is not None:
            _online.noisy_input(x, noise[drawn:drawn + T * I], input_noise, noisy[:T])
            drawn += T * I
            x = noisy[:T]
        x = x.reshape(T, 1, I)
        x.flags.writeable = False
        init = tuple(np.zeros(state_shape, dtype) for _ in range(n_states))
        top, _, tape = lstm.run_forward(live, x, init, lengths[row:row + 1])
        dW, db = np.empty_like(W), np.empty_like(b)
        y = train.y[row, :T]
        seq_total, problem = _online.sigmoid_readout(top.reshape(T, F), W, b, y, divisor(T), d_logits[:T],
                                                     d_features[:T], dW, db)
        if problem != _online.OK:
            if problem == _online.BAD_TARGETS:
                model.loss.check_targets(y, y.shape)        # raises the loss's own error
                raise RuntimeError(f"sequence {row}: the compiled readout refused targets that the loss accepts")
            why = f"the loss is {seq_total}" if problem == _online.NON_FINITE_LOSS else NON_FINITE_GRADIENT
            return _diverged(f"{why} at epoch {epoch}, batch {index + 1}", bar)
        d_final = [np.zeros(state_shape, dtype) for _ in range(n_states)]
        _, grads, _ = lstm.run_backward(tape, d_features[:T].reshape(T, 1, F), d_final, need_input_grad=False)
        flat_grads = [grads[key].reshape(-1) for key in lstm_keys] + [dW.reshape(-1), db]
        norm, finite = _online.sgd_update(flat_params, flat_grads, velocities, learning_rate, momentum, nesterov,
                                          clip_norm, dtype_name)
        if not math.isfinite(norm):
            return _diverged(f"the gradient norm became {norm} at epoch {epoch}, batch {index + 1}", bar)
        optimizer.iterations += 1
        if not finite:
            return _diverged(f"the weights became NaN or Inf at epoch {epoch}, batch {index + 1}", bar)
        total += seq_total
        count += T
        if bar is not None:
            bar.update(index + 1, f"loss {total / max(count, 1):.4f}")
    return total / max(count, 1), None


def _diverged(why: str, bar):
    if bar is not None:
        bar.close("diverged")
    return math.nan, why
