"""Losses on the readout's pre-activations (logits), masked by sequence lengths and reported per time step.

Each loss maps logits ``a`` (``(..., K)``) and targets to a per-step loss ``ℓ`` (``(...)``) and its gradient; the
masking helper ``masked_total`` multiplies both by the step mask, so a padded step contributes nothing. Every loss
reports ``Σ_steps ℓ`` and the number of real steps; the mean per step is their ratio, as the literature reports it.
"""
from __future__ import annotations

import numpy as np


def step_mask(lengths, T: int, dtype=np.float32) -> np.ndarray:
    """``(B, T)`` mask: 1 at the real steps ``t < lengths[b]``, 0 at padded steps."""
    lengths = np.asarray(lengths)
    return (np.arange(T)[None, :] < lengths[:, None]).astype(dtype)


def masked_total(step_losses: np.ndarray, d_logits: np.ndarray, mask: np.ndarray | None):
    """Apply the step mask to per-step losses ``(...)`` and their gradients ``(..., K)``.

    Returns ``(Σ mask ⊙ ℓ, Σ mask, mask ⊙ ∂ℓ/∂a)``; ``mask=None`` means every step is real.
    """
    if mask is None:
        return float(np.sum(step_losses, dtype=np.float64)), int(step_losses.size), d_logits
    mask = mask.astype(d_logits.dtype, copy=False)
    total = float(np.sum(step_losses * mask, dtype=np.float64))
    d_logits *= mask[..., None]
    return total, int(np.count_nonzero(mask)), d_logits


class Loss:
    """A loss on logits: ``loss(logits, targets, mask) -> (total, n_steps, d_total/d_logits)``."""

    name = ""
    output = ""           # the readout's activation this loss belongs to

    def step_losses(self, logits: np.ndarray, targets: np.ndarray):
        """Per-step losses ``ℓ`` (``logits.shape[:-1]``) and ``∂ℓ/∂a`` (``logits.shape``)."""
        raise NotImplementedError

    def check_targets(self, targets: np.ndarray, logits_shape: tuple[int, ...]) -> np.ndarray:
        if targets.shape != logits_shape:
            raise ValueError(f"{self.name}: targets have shape {targets.shape}, expected {logits_shape}")
        if targets.dtype.kind != "f":
            raise TypeError(f"{self.name}: targets must be floats, got dtype {targets.dtype}")
        if not np.isfinite(targets).all():
            raise ValueError(f"{self.name}: targets contain NaN or Inf")
        return targets

    def __call__(self, logits: np.ndarray, targets, mask: np.ndarray | None = None):
        logits = np.asarray(logits)
        targets = self.check_targets(np.asarray(targets), logits.shape)
        if mask is not None and mask.shape != logits.shape[:-1]:
            raise ValueError(f"{self.name}: mask has shape {mask.shape}, expected {logits.shape[:-1]}")
        with np.errstate(over="ignore", invalid="ignore"):
            losses, d_logits = self.step_losses(logits, targets)
        return masked_total(losses, d_logits, mask)

    def activate(self, logits: np.ndarray) -> np.ndarray:
        """The readout's output (probabilities or values) from its logits."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MeanSquaredError(Loss):
    """``ℓ = (1/K) Σ_k (a_k − y_k)²`` per step (the mean over outputs, as Keras' ``mse``); ``∂ℓ/∂a = (2/K)(a − y)``.
    Linear readout: the output is ``a`` itself."""

    name = "mse"
    output = "linear"

    def step_losses(self, logits, targets):
        diff = logits - targets
        K = logits.shape[-1]
        return np.mean(diff * diff, axis=-1), (2.0 / K) * diff

    def activate(self, logits):
        return logits


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * a))     # σ(a), without overflow for large |a|


class BernoulliNLL(Loss):
    """Multi-label negative log-likelihood, summed over the K outputs of a step (nats per step, as for polyphonic
    music): ``ℓ = −Σ_k [y_k log σ(a_k) + (1 − y_k) log(1 − σ(a_k))] = Σ_k [softplus(a_k) − y_k a_k]``;
    ``∂ℓ/∂a = σ(a) − y``. Targets lie in [0, 1]. Sigmoid readout."""

    name = "bernoulli_nll"
    output = "sigmoid"

    def check_targets(self, targets, logits_shape):
        targets = super().check_targets(targets, logits_shape)
        if targets.size and (targets.min() < 0 or targets.max() > 1):
            raise ValueError(f"{self.name}: targets must lie in [0, 1]")
        return targets

    def step_losses(self, logits, targets):
        losses = np.sum(np.logaddexp(0.0, logits) - targets * logits, axis=-1)
        return losses, _sigmoid(logits) - targets

    def activate(self, logits):
        return _sigmoid(logits)


class SoftmaxCrossEntropy(Loss):
    """``ℓ = −Σ_k y_k log softmax(a)_k = logsumexp(a) − Σ_k y_k a_k`` for a target distribution y (one-hot or
    soft); ``∂ℓ/∂a = softmax(a) − y``. Targets may also be integer class ids with the logits' shape minus the last
    axis (ids at padded steps are ignored). Softmax readout."""

    name = "cross_entropy"
    output = "softmax"

    def check_targets(self, targets, logits_shape):
        if targets.dtype.kind in "iu":
            if targets.shape != logits_shape[:-1]:
                raise ValueError(f"{self.name}: integer class ids have shape {targets.shape}, expected "
                                 f"{logits_shape[:-1]}")
            return targets
        targets = super().check_targets(targets, logits_shape)
        if targets.size and targets.min() < 0:
            raise ValueError(f"{self.name}: target probabilities must be non-negative")
        return targets

    def __call__(self, logits, targets, mask=None):
        targets = np.asarray(targets)
        if targets.dtype.kind in "iu":
            K = np.shape(logits)[-1]
            real = targets if mask is None else targets[mask.astype(bool)]
            if real.size and (real.min() < 0 or real.max() >= K):
                raise ValueError(f"{self.name}: class ids must lie in [0, {K - 1}], got {real.min()}..{real.max()}")
        return super().__call__(logits, targets, mask)

    def step_losses(self, logits, targets):
        shifted = logits - np.max(logits, axis=-1, keepdims=True)
        log_norm = np.log(np.sum(np.exp(shifted), axis=-1))
        probs = np.exp(shifted - log_norm[..., None])
        if targets.dtype.kind in "iu":
            ids = np.clip(targets, 0, logits.shape[-1] - 1)[..., None]
            losses = log_norm - np.take_along_axis(shifted, ids, axis=-1)[..., 0]
            d_logits = probs
            np.put_along_axis(d_logits, ids, np.take_along_axis(probs, ids, axis=-1) - 1.0, axis=-1)
            return losses, d_logits
        mass = np.sum(targets, axis=-1)
        return mass * log_norm - np.sum(targets * shifted, axis=-1), probs * mass[..., None] - targets

    def activate(self, logits):
        shifted = logits - np.max(logits, axis=-1, keepdims=True)
        e = np.exp(shifted)
        return e / np.sum(e, axis=-1, keepdims=True)


LOSSES = {cls.output: cls for cls in (MeanSquaredError, BernoulliNLL, SoftmaxCrossEntropy)}


def loss_for_output(output: str) -> Loss:
    """The loss that matches a readout: linear → MSE, sigmoid → Bernoulli NLL, softmax → cross-entropy."""
    try:
        return LOSSES[output]()
    except KeyError:
        raise ValueError(f"output must be one of {tuple(LOSSES)}, got {output!r}") from None
