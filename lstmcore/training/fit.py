"""The fit loop: minibatches (or one sequence per update), seeded shuffling, validation after each epoch, early
stopping with restoration of the best weights, a time budget, and divergence reported as a status, never a crash."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lstmcore._progress import ProgressBar
from lstmcore._validation import finite_number, positive_int, random_seed
from lstmcore.datasets import Split
from lstmcore.training.losses import step_mask
from lstmcore.training.model import NORMALIZATIONS, NonFiniteError, SequenceModel
from lstmcore.training.online import online_epoch, online_update_applies
from lstmcore.training.optimizers import Optimizer, clip_by_global_norm, global_norm, make_optimizer

STATUSES = ("completed", "early_stopped", "time_budget", "diverged")


@dataclass
class FitResult:
    """What ``fit`` did.

    ``status`` is one of ``STATUSES`` and ``reason`` says why in words. ``best_epoch`` is the epoch whose weights the
    model holds (0: the initial weights), ``best_valid`` its mean loss per step on the validation split (on the
    training split when there is none; ``inf`` when no epoch finished). ``history`` has one dict per epoch:
    ``epoch, train_loss, valid_loss, seconds, learning_rate, updates``.
    """

    status: str
    reason: str
    best_epoch: int
    best_valid: float
    epochs: int
    history: list[dict] = field(default_factory=list)
    wall_time: float = 0.0


def _check_split(model: SequenceModel, split: Split, name: str) -> Split:
    if not isinstance(split, Split):
        raise TypeError(f"{name} must be a lstmcore.datasets.Split, got {type(split).__name__}")
    if split.x.shape[2] != model.input_size:
        raise ValueError(f"{name}.x has {split.x.shape[2]} features, the model's input_size is {model.input_size}")
    if split.per_step != model.per_step:
        kind = "per-step (N, T_max, ...)" if model.per_step else "last-step (N, ...)"
        raise ValueError(f"{name}.y has shape {split.y.shape}: the model (per_step={model.per_step}) needs {kind} "
                         f"targets")
    if len(split) == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(split.x).all():
        raise ValueError(f"{name}.x contains NaN or Inf")
    x = split.x.astype(model.dtype, copy=False)            # the dataset's dtype follows the model's
    y = split.y if split.y.dtype.kind in "iu" else split.y.astype(model.dtype, copy=False)
    return Split(x, y, split.lengths)


def _batches(split: Split, order: np.ndarray, batch_size: int):
    """Batches of ``order``, each trimmed to its longest sequence."""
    for start in range(0, len(order), batch_size):
        batch = split.subset(order[start:start + batch_size])
        yield batch.x, batch.y, batch.lengths


def _eval_order(split: Split) -> np.ndarray:
    return np.argsort(split.lengths, kind="stable")       # similar lengths together: little padding


def evaluate(model: SequenceModel, split: Split, batch_size: int = 64) -> float:
    """The model's loss per time step on ``split``, masked by lengths: ``Σ_real steps ℓ / n_real steps``.

    This is the dataset's metric: NLL per step (nats, the sum over the outputs) for sigmoid outputs, e.g. JSB
    Chorales; the mean squared error for linear outputs; the cross-entropy per step for softmax outputs. For last-step
    models every sequence is one step.
    """
    split = _check_split(model, split, "split")
    total, count = 0.0, 0
    with np.errstate(over="ignore", invalid="ignore"):
        for x, y, lengths in _batches(split, _eval_order(split), batch_size):
            batch_total, batch_count = model.loss_value(x, y, lengths)
            total += batch_total
            count += batch_count
    return total / max(count, 1)


def accuracy(model: SequenceModel, split: Split, batch_size: int = 64) -> float:
    """The fraction of real steps (per step) or sequences (last step) whose most probable class is the target
    (softmax outputs; for sigmoid outputs, the fraction of labels on the right side of 0.5)."""
    split = _check_split(model, split, "split")
    if model.output == "linear":
        raise ValueError("accuracy needs a softmax or sigmoid output")
    right, count = 0.0, 0
    for x, y, lengths in _batches(split, _eval_order(split), batch_size):
        logits = model.forward(x, lengths)
        mask = model.targets_mask(lengths, x.shape[1], x.shape[0])
        if model.output == "softmax":
            target = y if y.dtype.kind in "iu" else y.argmax(axis=-1)
            hits = logits.argmax(axis=-1) == target
        else:
            hits = ((logits > 0) == (y > 0.5)).mean(axis=-1)
        weights = np.ones(hits.shape) if mask is None else mask
        right += float(np.sum(hits * weights))
        count += float(np.sum(weights))
    return right / max(count, 1)


def _snapshot(model: SequenceModel) -> dict[str, np.ndarray]:
    return {name: value.copy() for name, value in model.params.items()}


def _restore(model: SequenceModel, weights: dict[str, np.ndarray]) -> None:
    for name, value in model.params.items():
        value[...] = weights[name]


def check_fit_options(*, optimizer="sgd", learning_rate=1e-3, momentum=0.0, nesterov=False, batch_size=1,
                      max_epochs=100, patience=None, input_noise=0.0, clip_norm=None, time_budget=None,
                      eval_batch_size=64, loss_normalization="step") -> dict:
    """``fit``'s options checked and normalised (``ValueError`` or ``TypeError`` naming the option), without a model
    or data: an ablation study checks its ``[training]`` table with it before any trial runs."""
    if not isinstance(optimizer, Optimizer) and optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd', 'adam' or an Optimizer instance, got {optimizer!r}")
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"nesterov must be True or False, got {nesterov!r}")
    if loss_normalization not in NORMALIZATIONS:
        raise ValueError(f"loss_normalization must be one of {NORMALIZATIONS}, got {loss_normalization!r}")
    return {
        "batch_size": positive_int(batch_size, "batch_size"),
        "max_epochs": positive_int(max_epochs, "max_epochs"),
        "patience": None if patience is None else positive_int(patience, "patience"),
        "input_noise": finite_number(input_noise, "input_noise", minimum=0),
        "clip_norm": None if clip_norm is None else finite_number(clip_norm, "clip_norm (None or positive)",
                                                                  minimum=0, strict=True),
        "time_budget": None if time_budget is None else finite_number(
            time_budget, "time_budget (None or positive seconds)", minimum=0, strict=True),
        "learning_rate": learning_rate if callable(learning_rate) else finite_number(
            learning_rate, "learning_rate (a number or a schedule epoch -> rate)", minimum=0),
        "momentum": finite_number(momentum, "momentum", minimum=0),
        "eval_batch_size": positive_int(eval_batch_size, "eval_batch_size"),
    }


def fit(model: SequenceModel, train: Split, valid: Split | None = None, *, optimizer="sgd", learning_rate=1e-3,
        momentum: float = 0.0, nesterov: bool = False, batch_size: int = 1, max_epochs: int = 100,
        patience: int | None = None, input_noise: float = 0.0, clip_norm: float | None = None, seed=None,
        time_budget: float | None = None, progress: bool = False,
        callback: Callable[[dict], bool | None] | None = None, eval_batch_size: int = 64,
        loss_normalization: str = "step") -> FitResult:
    """Train ``model`` on ``train``, validating on ``valid`` after each epoch; the model ends with the best weights.

    - Each update minimises the loss of a batch of ``batch_size`` sequences (1: the paper's online setting), drawn in
      an order shuffled each epoch from ``seed``: its mean per real step (``loss_normalization="step"``), or its sum
      over time averaged over the batch (``"sequence"``, Brainstorm's and so the paper's scale: the gradient is about
      the mean length times larger, which the paper's learning-rate range assumes). Reported losses are always per
      step.
    - ``optimizer``: ``"sgd"`` (with ``momentum``, ``nesterov``), ``"adam"`` or an ``Optimizer`` instance.
      ``learning_rate`` is a number or a schedule ``epoch -> rate`` (epochs count from 1).
    - ``input_noise``: the std σ of additive Gaussian noise on the inputs' real steps at training time,
      ``x̃ = x + σ ε``, ``ε ~ N(0, I)``, fresh for every batch.
    - ``clip_norm``: rescale the gradients so that their global norm is at most this.
    - ``patience``: stop when the validation loss has not improved for this many epochs (status
      ``"early_stopped"``); ``time_budget`` (seconds): stop after the epoch that exceeds it (``"time_budget"``).
    - A NaN or Inf loss or gradient stops the run with status ``"diverged"`` (no exception); the best weights so far
      (or the initial ones) are restored.
    - ``callback(record)`` runs after each epoch with its history record; returning True stops the run
      (``"early_stopped"``).
    """
    if not isinstance(model, SequenceModel):
        raise TypeError(f"model must be a SequenceModel, got {type(model).__name__}")
    options = check_fit_options(
        optimizer=optimizer, learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, batch_size=batch_size,
        max_epochs=max_epochs, patience=patience, input_noise=input_noise, clip_norm=clip_norm,
        time_budget=time_budget, eval_batch_size=eval_batch_size, loss_normalization=loss_normalization)
    schedule = options["learning_rate"] if callable(options["learning_rate"]) else None
    opt = make_optimizer(optimizer, schedule(1) if schedule else options["learning_rate"], options["momentum"],
                         nesterov)
    train = _check_split(model, train, "train")
    valid = _check_split(model, valid, "valid") if valid is not None else None
    rng = np.random.default_rng(random_seed(seed, "seed"))
    max_epochs = options["max_epochs"]
    rule = StoppingRule(model, max_epochs, options["patience"], options["time_budget"], callback)
    history: list[dict] = []
    status, reason = "completed", f"reached max_epochs = {max_epochs}"
    for epoch in range(1, max_epochs + 1):
        epoch_start = time.perf_counter()
        if schedule is not None:
            opt.learning_rate = schedule(epoch)
        bar = (ProgressBar(math.ceil(len(train) / options["batch_size"]), f"epoch {epoch}/{max_epochs}")
               if progress else None)
        train_loss, diverged = train_epoch(model, train, opt, rng, epoch, options["batch_size"],
                                           options["input_noise"], options["clip_norm"], loss_normalization, bar)
        if diverged is not None:
            status, reason = "diverged", diverged
            break
        valid_loss = evaluate(model, valid, options["eval_batch_size"]) if valid is not None else None
        record = {"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss,
                  "seconds": time.perf_counter() - epoch_start, "learning_rate": opt.learning_rate,
                  "updates": opt.iterations}
        history.append(record)
        if bar is not None:
            bar.close(f"loss {train_loss:.4f}" + (f" valid {valid_loss:.4f}" if valid_loss is not None else ""))
        stop = rule.after_epoch(record, "validation" if valid is not None else "training")
        if stop is not None:
            status, reason = stop
            break
    _restore(model, rule.best_weights)
    return FitResult(status=status, reason=reason, best_epoch=rule.best_epoch, best_valid=rule.best_score,
                     epochs=len(history), history=history, wall_time=time.perf_counter() - rule.started)


def train_epoch(model: SequenceModel, train: Split, opt: Optimizer, rng: np.random.Generator, epoch: int,
                batch_size: int, input_noise: float, clip_norm: float | None, loss_normalization: str,
                bar: ProgressBar | None = None) -> tuple[float, str | None]:
    """One pass over ``train`` in an order shuffled from ``rng``, one optimizer update per batch.

    Returns the epoch's mean training loss per real step and ``None``, or ``(nan, why)`` when an update diverged
    (a non-finite loss, gradient norm or weight; the pass stops there). With one sequence per update and plain SGD
    on per-step sigmoid outputs (``online_update_applies``), the compiled online update runs the pass
    (``lstmcore.training.online``): the same draws, arithmetic and reports."""
    if online_update_applies(model, opt, batch_size, train):
        return online_epoch(model, train, opt, rng, epoch, input_noise, clip_norm, loss_normalization, bar)
    total, count = 0.0, 0
    with np.errstate(over="ignore", invalid="ignore"):
        for index, (x, y, lengths) in enumerate(_batches(train, rng.permutation(len(train)), batch_size)):
            if input_noise > 0:
                noise = rng.standard_normal(x.shape).astype(model.dtype)
                noise *= input_noise * step_mask(lengths, x.shape[1], model.dtype)[..., None]
                x = x + noise
            try:
                batch_total, batch_count = model.loss_and_gradients(x, y, lengths, loss_normalization)
            except NonFiniteError as exc:
                problem = str(exc)
            else:
                problem = optimizer_update(model, opt, clip_norm)
            if problem is not None:
                if bar is not None:
                    bar.close("diverged")
                return math.nan, f"{problem} at epoch {epoch}, batch {index + 1}"
            total += batch_total
            count += batch_count
            if bar is not None:
                bar.update(index + 1, f"loss {total / max(count, 1):.4f}")
    return total / max(count, 1), None


def optimizer_update(model: SequenceModel, opt: Optimizer, clip_norm: float | None) -> str | None:
    """One optimizer step on the model's gradients, rescaled to a global norm of at most ``clip_norm``; what went
    wrong (a non-finite gradient norm or weight), or ``None``."""
    norm = clip_by_global_norm(model.grads, clip_norm) if clip_norm else global_norm(model.grads)
    if not math.isfinite(norm):
        return f"the gradient norm became {norm}"
    opt.step(model.params, model.grads)
    if not _all_finite(model):
        return "the weights became NaN or Inf"
    return None


class StoppingRule:
    """When ``fit`` stops, judged after each epoch from its score (the validation loss, or the training loss without a
    validation split), and the best weights so far (epoch 0: the initial ones).

    In order: a non-finite score diverges; a better score becomes the best; the callback returning True, or
    ``patience`` epochs without improvement, stops early; the ``time_budget`` running out before the last epoch
    stops too."""

    def __init__(self, model: SequenceModel, max_epochs: int, patience: int | None, time_budget: float | None,
                 callback: Callable[[dict], bool | None] | None):
        self.model, self.max_epochs, self.patience = model, max_epochs, patience
        self.time_budget, self.callback = time_budget, callback
        self.started = time.perf_counter()
        self.best_weights, self.best_epoch, self.best_score = _snapshot(model), 0, math.inf
        self.since_best = 0

    def after_epoch(self, record: dict, scored_on: str) -> tuple[str, str] | None:
        """``(status, reason)`` to stop after the epoch of ``record``, or ``None`` to go on; ``scored_on`` names the
        split whose loss is the score (``"validation"`` or ``"training"``)."""
        epoch = record["epoch"]
        score = record["valid_loss"] if scored_on == "validation" else record["train_loss"]
        if not math.isfinite(score):
            return "diverged", f"the {scored_on} loss became {score} at epoch {epoch}"
        if score < self.best_score:
            self.best_weights, self.best_epoch, self.best_score, self.since_best = _snapshot(self.model), epoch, score, 0
        else:
            self.since_best += 1
        if self.callback is not None and self.callback(dict(record)) is True:
            return "early_stopped", f"the callback asked to stop after epoch {epoch}"
        if self.patience is not None and self.since_best >= self.patience:
            return "early_stopped", f"no improvement for {self.patience} epochs; best at epoch {self.best_epoch}"
        if (self.time_budget is not None and time.perf_counter() - self.started > self.time_budget
                and epoch < self.max_epochs):
            return "time_budget", f"the time budget of {self.time_budget:g} s ran out after epoch {epoch}"
        return None


def _all_finite(model: SequenceModel) -> bool:
    return all(np.isfinite(value).all() for value in model.params.values())
