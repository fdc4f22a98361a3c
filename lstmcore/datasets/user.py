"""A dataset from the user's own variable-length sequences."""
from __future__ import annotations

import numpy as np

from lstmcore._validation import random_seed
from lstmcore.datasets._split import OUTPUTS, Dataset, Split, pad_sequences

_METRICS = {"sigmoid": "nll_per_step", "linear": "mse", "softmax": "cross_entropy"}


def _as_split(xs: list[np.ndarray], ys: list[np.ndarray], per_step: bool, integer: bool, dtype) -> Split:
    x, lengths = pad_sequences(xs, dtype)
    y_dtype = np.int64 if integer else dtype
    if per_step:
        y, _ = pad_sequences(ys, y_dtype)
    else:
        y = np.stack(ys).astype(y_dtype)
    if not integer and y.ndim == (2 if per_step else 1):
        y = y[..., None]
    return Split(x, y, lengths)


def from_sequences(sequences, targets, *, output: str = "linear", per_step: bool | None = None,
                   valid_fraction: float = 0.1, test_fraction: float = 0.1, seed=0, name: str = "user",
                   dtype=np.float32) -> Dataset:
    """Pad a list of ``(T_i, F)`` arrays and their targets into a ``Dataset``, split at random from ``seed``.

    Targets are per step, ``(T_i, K)`` arrays (or ``(T_i,)`` integer class ids for ``output="softmax"``), or one per
    sequence, ``(K,)`` arrays or scalars (class ids for softmax). ``per_step=None`` infers which: targets whose first
    axis has each sequence's length are per step. Pass it explicitly when that is ambiguous.
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    xs = [np.asarray(s, dtype=dtype) for s in sequences]
    ys = [np.asarray(t) for t in targets]
    n = len(xs)
    if n != len(ys):
        raise ValueError(f"got {n} sequences but {len(ys)} targets")
    if n == 0 or any(s.ndim != 2 for s in xs) or len({s.shape[1] for s in xs}) != 1:
        raise ValueError("sequences must be a non-empty list of (T_i, F) arrays with the same F")
    if any(not np.isfinite(s).all() for s in xs):
        raise ValueError("a sequence contains NaN or Inf")
    matches_length = all(t.ndim >= 1 and t.shape[0] == s.shape[0] for t, s in zip(ys, xs))
    if per_step is None:
        per_step = matches_length
    elif per_step and not matches_length:
        raise ValueError("per_step=True needs targets with each sequence's length in their first axis")
    integer = all(t.dtype.kind in "iub" for t in ys) and output == "softmax"
    if not 0 <= valid_fraction < 1 or not 0 <= test_fraction < 1 or valid_fraction + test_fraction >= 1:
        raise ValueError("valid_fraction and test_fraction must be in [0, 1) with a sum below 1")
    order = np.random.default_rng(random_seed(seed, "seed")).permutation(n)
    n_valid, n_test = int(round(valid_fraction * n)), int(round(test_fraction * n))
    parts = np.split(order, [n - n_valid - n_test, n - n_test])
    if any(len(p) == 0 for p in parts):
        raise ValueError(f"{n} sequences are too few for non-empty train/valid/test splits at fractions "
                         f"{valid_fraction}, {test_fraction}")
    splits = [_as_split([xs[i] for i in p], [ys[i] for i in p], per_step, integer, dtype) for p in parts]
    n_outputs = int(max(int(t.max()) for t in ys) + 1) if integer else int(splits[0].y.shape[-1])
    return Dataset(name, *splits, n_inputs=int(xs[0].shape[1]), n_outputs=n_outputs, output=output,
                   per_step=bool(per_step), metric=_METRICS[output])
