"""The containers every dataset returns: ``Split`` (padded arrays plus lengths) and ``Dataset`` (three splits and what
the task is), and the padding helper that builds a ``Split`` from a list of variable-length sequences."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OUTPUTS = ("sigmoid", "linear", "softmax")


class DatasetError(ValueError):
    """A dataset file that cannot be used: unreadable, malformed or out of range. The message names the file and the
    place in it."""


@dataclass
class Split:
    """One split of a dataset, batch-first and zero-padded.

    - ``x``: ``(N, T_max, F)`` float inputs, zero past each sequence's length;
    - ``y``: targets. Per-step tasks: ``(N, T_max, K)`` floats, or ``(N, T_max)`` integer class ids for softmax outputs.
      Last-step tasks: ``(N, K)`` floats, or ``(N,)`` integer class ids for softmax outputs. Padded steps are ignored;
    - ``lengths``: ``(N,)`` int64, the number of real steps of each sequence.
    """

    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray

    def __post_init__(self):
        self.lengths = np.asarray(self.lengths)
        if self.lengths.dtype.kind not in "iu":
            raise TypeError(f"Split.lengths must be integers, got dtype {self.lengths.dtype}")
        self.lengths = self.lengths.astype(np.int64, copy=False)
        if not isinstance(self.x, np.ndarray) or self.x.ndim != 3 or self.x.dtype.kind != "f":
            raise ValueError(f"Split.x must be a float array (N, T_max, F), got "
                             f"{getattr(self.x, 'shape', type(self.x).__name__)}")
        N, T = self.x.shape[:2]
        if self.lengths.shape != (N,):
            raise ValueError(f"Split.lengths has shape {self.lengths.shape}, expected (N,) = ({N},)")
        if N and (self.lengths.min() < 0 or self.lengths.max() > T):
            raise ValueError(f"Split.lengths must lie in [0, T_max] = [0, {T}]")
        if not isinstance(self.y, np.ndarray) or self.y.shape[:1] != (N,):
            raise ValueError(f"Split.y must be an array with N = {N} rows, got "
                             f"{getattr(self.y, 'shape', type(self.y).__name__)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def per_step(self) -> bool:
        """Whether the targets are per step: ``y`` has a time axis of the inputs' length."""
        integer = self.y.dtype.kind in "iu"
        return self.y.ndim == (2 if integer else 3) and self.y.shape[1] == self.x.shape[1]

    @property
    def n_steps(self) -> int:
        """The number of real (unpadded) time steps."""
        return int(self.lengths.sum())

    def subset(self, indices) -> Split:
        """The sequences at ``indices``, trimmed to their longest length."""
        indices = np.asarray(indices)
        lengths = self.lengths[indices]
        T = int(lengths.max()) if lengths.size else 0
        y = self.y[indices, :T] if self.per_step else self.y[indices]
        return Split(self.x[indices, :T], y, lengths)


@dataclass
class Dataset:
    """Train, valid and test splits and what the task is.

    ``output`` is the readout the task needs (``"sigmoid"`` multi-label, ``"linear"`` regression, ``"softmax"``
    classification), ``per_step`` whether there is a target at every step (else one at the last step), and ``metric``
    the number ``lstmcore.training.evaluate`` reports (``"nll_per_step"``, ``"mse"``, ``"cross_entropy"``).
    """

    name: str
    train: Split
    valid: Split
    test: Split
    n_inputs: int
    n_outputs: int
    output: str
    per_step: bool
    metric: str

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise ValueError(f"Dataset.output must be one of {OUTPUTS}, got {self.output!r}")

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(getattr(self, name))}" for name in ("train", "valid", "test"))
        return (f"Dataset({self.name!r}, {sizes}, n_inputs={self.n_inputs}, n_outputs={self.n_outputs}, "
                f"output={self.output!r}, per_step={self.per_step}, metric={self.metric!r})")


def pad_sequences(sequences, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Stack variable-length ``(T_i, F)`` (or ``(T_i,)``) arrays into a zero-padded ``(N, T_max, ...)`` array;
    returns ``(padded, lengths)``."""
    arrays = [np.asarray(s) for s in sequences]
    if not arrays:
        raise ValueError("pad_sequences needs at least one sequence")
    tails = {a.shape[1:] for a in arrays}
    if len(tails) != 1 or arrays[0].ndim < 1:
        raise ValueError(f"all sequences must be (T_i, ...) arrays with the same trailing shape, got {sorted(tails)}")
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    out = np.zeros((len(arrays), int(lengths.max())) + arrays[0].shape[1:], dtype=dtype)
    for row, a in enumerate(arrays):
        out[row, : a.shape[0]] = a
    return out, lengths
