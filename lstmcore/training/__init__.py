"""Training on the compiled layer: a sequence model (LSTM stack + dense readout), losses masked by lengths,
optimizers, the fit loop with early stopping, and checkpoints.

    >>> from lstmcore.datasets import load_dataset
    >>> from lstmcore.training import SequenceModel, fit, evaluate
    >>> data = load_dataset("adding", length=20, n_train=256, n_valid=64, n_test=64)
    >>> model = SequenceModel(data.n_inputs, 16, data.n_outputs, variant="peephole", output=data.output,
    ...                       per_step=data.per_step, seed=0)
    >>> result = fit(model, data.train, data.valid, optimizer="adam", learning_rate=1e-2, batch_size=32,
    ...              max_epochs=2, seed=0)
    >>> result.status, result.epochs
    ('completed', 2)
"""
from __future__ import annotations

from lstmcore.training.checkpoint import CheckpointError, checkpoint_metadata, load_checkpoint, save_checkpoint
from lstmcore.training.fit import (STATUSES, FitResult, ProgressBar, accuracy, check_fit_options, evaluate,
                                   fit)
from lstmcore.training.losses import (
                                      BernoulliNLL,
                                      Loss,
                                      MeanSquaredError,
                                      SoftmaxCrossEntropy,
                                      loss_for_output,
                                      masked_total,
                                      step_mask,
)
from lstmcore.training.model import NonFiniteError, SequenceModel
from lstmcore.training.optimizers import SGD, Adam, Optimizer, clip_by_global_norm, global_norm, make_optimizer

__all__ = [
    "SequenceModel", "NonFiniteError", "fit", "check_fit_options", "evaluate", "accuracy", "FitResult", "STATUSES",
    "ProgressBar",
    "SGD", "Adam", "Optimizer", "make_optimizer", "clip_by_global_norm", "global_norm",
    "Loss", "MeanSquaredError", "BernoulliNLL", "SoftmaxCrossEntropy", "loss_for_output", "masked_total", "step_mask",
    "save_checkpoint", "load_checkpoint", "checkpoint_metadata", "CheckpointError",
]
