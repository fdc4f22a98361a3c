"""``slstm``: xLSTM's sLSTM (Beck et al., 2024) on the sequence driver."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from lstmcore._kernels import _slstm

from ._arranged import ArrangedCell

FORGET_GATES = ("sigmoid", "exp")


def _head_blocks(shape):
    """For each head of a compact R of ``shape`` (4H, d): its rows (the head's units of every gate) and the columns
    of h_{t-1} they read."""
    H, d = shape[0] // 4, shape[1]
    for first in range(0, H, d):
        yield (np.arange(4)[:, None] * H + np.arange(first, first + d)).reshape(-1), slice(first, first + d)


@functools.lru_cache(maxsize=8)
def _kernel(exponential_forget: bool):
    return _slstm.SLSTMKernel(exponential_forget)


@dataclass(frozen=True)
class SLSTM(ArrangedCell):
    """xLSTM's sLSTM (Beck, Pöppel, Spanring et al., "xLSTM: Extended Long Short-Term Memory", 2024)::

        [ĩ, f̃, z̃, õ] = W x_t + R h_{t-1} + b                    R block-diagonal with num_heads heads
        l   = log sigmoid(f̃)                                    (forget_gate="exp": l = f̃)
        m_t = max(ĩ, l + m_{t-1})                               stabiliser
        i   = exp(ĩ - m_t)     f = exp(l + m_{t-1} - m_t)       stabilised exponential gates (both <= 1)
        c_t = f * c_{t-1} + i * tanh(z̃)                         cell
        n_t = f * n_{t-1} + i                                   normaliser
        h_t = sigmoid(õ) * c_t / n_t

    m cancels in c_t / n_t: h is that of the unstabilised cell with gates exp(ĩ) and sigmoid(f̃) (or exp(f̃)), while
    no exponential overflows. The backward is the exact derivative of these equations, through m's max too (its
    derivative goes to the larger argument). xLSTM's CUDA kernel treats m as a constant instead; the two agree for any
    loss on the outputs alone (the terms through m cancel) and differ in the gradients of the returned c, n, m and of
    the initial m (docs/cells.md). xLSTM's code also sets m_1 = ĩ_1 when every n_0 is 0; here m_1 = max(ĩ_1, l + m_0)
    always (the same h; other c, n, m by the factor the stabiliser cancels).

    Parameters: ``W`` (4H, I), ``R`` (4H, H/num_heads), ``b`` (4H,), row blocks ordered i, f, z, o;
    4H(I + H/num_heads) + 4H per layer and direction. Row k*H + j of ``R`` holds the weights from unit j's head (the
    units [h d, (h + 1) d) of h_{t-1}, d = H/num_heads) into gate k of unit j. States h, c, n, m (zero by default).
    Options: ``forget_gate`` ("sigmoid" or "exp"), ``num_heads`` (a divisor of the hidden size).
    """

    name: str = "slstm"
    forget_gate: str = "sigmoid"
    num_heads: int = 1
    description: str = ("xLSTM's sLSTM (Beck et al., 2024): exponential input gate, normaliser and stabiliser, "
                        "h = o c / n; block-diagonal heads.")
    state_names: ClassVar[tuple[str, ...]] = ("h", "c", "n", "m")
    _OPTIONS: ClassVar[tuple[str, ...]] = ("forget_gate", "num_heads")

    def __post_init__(self):
        if self.forget_gate not in FORGET_GATES:
            raise ValueError(f"forget_gate must be one of {', '.join(FORGET_GATES)}, got {self.forget_gate!r}")
        if isinstance(self.num_heads, (bool, np.bool_)) or not isinstance(self.num_heads, (int, np.integer)) \
                or self.num_heads < 1:
            raise ValueError(f"num_heads must be a positive integer, got {self.num_heads!r}")
        object.__setattr__(self, "num_heads", int(self.num_heads))

    def head_size(self, hidden_size: int) -> int:
        if hidden_size % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide hidden_size={hidden_size}")
        return hidden_size // self.num_heads

    def parameter_shapes(self, input_size, hidden_size):
        H = hidden_size
        return {"W": (4 * H, input_size), "R": (4 * H, self.head_size(H)), "b": (4 * H,)}

    def step_kernel(self):
        return _kernel(self.forget_gate == "exp")

    def driver_arrays(self, params):
        R = params["R"]
        if self.num_heads == 1:
            return params["W"], params["b"], (R,), None
        # the driver's recurrent weight is dense: the heads' blocks on its diagonal, zeros elsewhere
        dense = np.zeros((R.shape[0], R.shape[0] // 4), R.dtype)
        for rows, columns in _head_blocks(R.shape):
            dense[rows, columns] = R[rows]
        return params["W"], params["b"], (dense,), None

    def gradients(self, params, driver_grads):
        dW, db, (dR,), _ = driver_grads
        if self.num_heads == 1:
            return {"W": dW, "R": dR, "b": db}
        compact = np.empty_like(params["R"])
        for rows, columns in _head_blocks(compact.shape):
            compact[rows] = dR[rows, columns]
        return {"W": dW, "R": compact, "b": db}
