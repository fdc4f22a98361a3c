"""Long-range synthetic tasks that stress the gates, generated from a seed at any length.

Each split draws from its own child of ``np.random.SeedSequence(seed)``, so the valid and test sets do not change when
``n_train`` does, and the same seed gives the same data on every machine.
"""
from __future__ import annotations

import numpy as np

from lstmcore._validation import positive_int, random_seed
from lstmcore.datasets._split import Dataset, Split


def _split_rngs(seed) -> list[np.random.Generator]:
    return [np.random.default_rng(child) for child in np.random.SeedSequence(random_seed(seed, "seed")).spawn(3)]


def _build(name, make, sizes, seed, **task) -> Dataset:
    splits = [make(rng, positive_int(n, f"n_{part}")) for rng, n, part in
              zip(_split_rngs(seed), sizes, ("train", "valid", "test"))]
    return Dataset(name, *splits, **task)


def adding_problem(length: int = 100, n_train: int = 10000, n_valid: int = 1000, n_test: int = 1000, seed=0,
                   dtype=np.float32) -> Dataset:
    """The adding problem (Hochreiter & Schmidhuber 1997, in the form of Le et al. 2015).

    Each step has two inputs: a value ``u_t ~ U(0, 1)`` and a marker ``m_t``, which is 1 at exactly two steps, one in
    the first half of the sequence and one in the second, and 0 elsewhere. The target, read at the last step, is
    ``y = Σ_t m_t u_t``. Always predicting 1 gives the baseline MSE ``Var(u_1 + u_2) = 2/12 ≈ 0.167``.
    Linear output, last step, metric ``"mse"``.
    """
    T = positive_int(length, "length")
    if T < 2:
        raise ValueError(f"the adding problem needs length >= 2, got {T}")

    def make(rng, n):
        x = np.zeros((n, T, 2), dtype=dtype)
        x[:, :, 0] = rng.uniform(0.0, 1.0, size=(n, T))
        half = T // 2
        first = rng.integers(0, half, size=n)
        second = rng.integers(half, T, size=n)
        rows = np.arange(n)
        x[rows, first, 1] = 1.0
        x[rows, second, 1] = 1.0
        y = (x[rows, first, 0] + x[rows, second, 0]).astype(dtype)[:, None]
        return Split(x, y, np.full(n, T, dtype=np.int64))

    return _build("adding", make, (n_train, n_valid, n_test), seed, n_inputs=2, n_outputs=1, output="linear",
                  per_step=False, metric="mse")


#: Input symbols of the temporal order problem, in one-hot order.
TEMPORAL_ORDER_SYMBOLS = ("E", "B", "a", "b", "c", "d", "X", "Y")


def temporal_order(length: int = 100, n_train: int = 10000, n_valid: int = 1000, n_test: int = 1000, seed=0,
                   dtype=np.float32) -> Dataset:
    """The temporal order problem (Hochreiter & Schmidhuber 1997, experiment 6a), scaled to any ``length``.

    A sequence of ``T ~ U{length, ..., length + length // 10}`` one-hot symbols starts with ``E``, ends with ``B`` and
    is filled with distractors ``a, b, c, d``, except at two steps ``t1 ∈ [0.1 length, 0.2 length]`` and
    ``t2 ∈ [0.5 length, 0.6 length]`` which hold ``X`` or ``Y``. The class, read at the last step, is the order of the
    two relevant symbols: ``XX = 0, XY = 1, YX = 2, YY = 3`` (targets are integer class ids ``(N,)``).
    Softmax output, last step, metric ``"cross_entropy"`` (chance level: ``log 4 ≈ 1.386``).
    """
    L = positive_int(length, "length")
    if L < 10:
        raise ValueError(f"the temporal order problem needs length >= 10, got {L}")
    F = len(TEMPORAL_ORDER_SYMBOLS)
    E, B, X = 0, 1, 6

    def make(rng, n):
        lengths = rng.integers(L, L + L // 10 + 1, size=n)
        T = int(lengths.max())
        symbols = rng.integers(2, 6, size=(n, T))                      # distractors a..d
        symbols[:, 0] = E
        rows = np.arange(n)
        symbols[rows, lengths - 1] = B
        t1 = rng.integers(max(1, L // 10), max(2, L // 5) + 1, size=n)
        t2 = rng.integers(L // 2, (3 * L) // 5 + 1, size=n)
        which = rng.integers(0, 2, size=(n, 2))                        # 0 = X, 1 = Y
        symbols[rows, t1] = X + which[:, 0]
        symbols[rows, t2] = X + which[:, 1]
        x = np.zeros((n, T, F), dtype=dtype)
        x[rows[:, None], np.arange(T)[None, :], symbols] = 1.0
        x[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
        y = (2 * which[:, 0] + which[:, 1]).astype(np.int64)
        return Split(x, y, lengths.astype(np.int64))

    return _build("temporal_order", make, (n_train, n_valid, n_test), seed, n_inputs=F, n_outputs=4,
                  output="softmax", per_step=False, metric="cross_entropy")


def copy_task(length: int = 100, n_symbols: int = 10, n_categories: int = 8, n_train: int = 10000,
              n_valid: int = 1000, n_test: int = 1000, seed=0, dtype=np.float32) -> Dataset:
    """The copy (memory) task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016), with a delay of ``length``.

    Inputs are one-hot over ``n_categories + 2`` classes (0 = blank, ``1..n_categories`` = data, last = delimiter), of
    ``length + 2 n_symbols`` steps: ``n_symbols`` data symbols, ``length - 1`` blanks, the delimiter, then
    ``n_symbols`` blanks. Per-step targets are integer class ids in ``0..n_categories``: blank everywhere except the
    last ``n_symbols`` steps, which repeat the data symbols. Softmax output, per step, metric ``"cross_entropy"``;
    the memoryless baseline is ``n_symbols log(n_categories) / (length + 2 n_symbols)`` per step.
    """
    delay = positive_int(length, "length")
    S = positive_int(n_symbols, "n_symbols")
    C = positive_int(n_categories, "n_categories")
    T = delay + 2 * S
    F = C + 2

    def make(rng, n):
        data = rng.integers(1, C + 1, size=(n, S))
        inputs = np.zeros((n, T), dtype=np.int64)
        inputs[:, :S] = data
        inputs[:, S + delay - 1] = C + 1
        x = np.zeros((n, T, F), dtype=dtype)
        x[np.arange(n)[:, None], np.arange(T)[None, :], inputs] = 1.0
        y = np.zeros((n, T), dtype=np.int64)
        y[:, T - S:] = data
        return Split(x, y, np.full(n, T, dtype=np.int64))

    return _build("copy", make, (n_train, n_valid, n_test), seed, n_inputs=F, n_outputs=C + 1, output="softmax",
                  per_step=True, metric="cross_entropy")
