"""A GRU cell with the ONNX ``GRU`` operator's gates and semantics, as a pure NumPy ``lstmcore.Variant``.

This is "way (b)" of writing a variant: the class runs its own forward and its own backward (hand-written BPTT) over a
whole time-major sequence, vectorised over the batch; ``lstmcore.LSTM`` does the rest (validation, stacking,
directions, ``batch_first``, parameter naming).

Equations (ONNX, gate order z, r, h; ``sigma`` = logistic, ``g`` = tanh), for each step t of the direction::

    z  = sigma(W_z x_t + R_z h_{t-1} + Wb_z + Rb_z)                          update gate
    r  = sigma(W_r x_t + R_r h_{t-1} + Wb_r + Rb_r)                          reset gate
    h~ = g(W_h x_t + R_h (r * h_{t-1}) + Rb_h + Wb_h)                        linear_before_reset = 0 (ONNX default)
    h~ = g(W_h x_t + r * (R_h h_{t-1} + Rb_h) + Wb_h)                        linear_before_reset = 1 (PyTorch, cuDNN)
    h_t = (1 - z) * h~ + z * h_{t-1}

Parameters per direction (H = hidden size, I = input size): ``W`` (3H, I), ``R`` (3H, H), ``Wb`` (3H,), ``Rb`` (3H,),
row blocks z, r, h: exactly one direction's slice of ONNX's ``W``, ``R`` and ``B = [Wb, Rb]``. Both biases are kept
because with ``linear_before_reset`` ``Rb_h`` sits inside the reset product. The state is ``h`` alone
(``state_names = ("h",)``): the layer returns ``output, (h_n,)`` and takes ``state=(h_0,)``.

Backward (deltas of the pre-activations, ``g_t`` = dE/dh_t from above and from step t+1)::

    dz = g_t * (h_{t-1} - h~) * z (1 - z)         dh~ = g_t * (1 - z) * (1 - h~^2)
    lbr = 1:  dn = dh~ * r,  dr = dh~ * n * r (1 - r)            with n = R_h h_{t-1} + Rb_h
              dh_{t-1} = g_t * z + [dz, dr, dn] R
    lbr = 0:  dq = R_h^T dh~,  dr = dq * h_{t-1} * r (1 - r)     (q = r * h_{t-1})
              dh_{t-1} = g_t * z + dq * r + [dz, dr] R_{z,r}
    dW = sum_t [dz, dr, dh~]^T x_t,  dWb = sum_t [dz, dr, dh~],  dx_t = [dz, dr, dh~] W
    dR_{z,r} = sum_t [dz, dr]^T h_{t-1},  dR_h = sum_t dn^T h_{t-1} (lbr = 1) or dh~^T q_t (lbr = 0)

With ``lengths``, a sequence's steps at or past its length leave its state unchanged and output zeros, so the final
state is the one at its last real step; the reverse direction runs t = T-1 ... 0, i.e. it starts at each sequence's
last real step (the steps past the length are skipped). Gradients arriving at those steps are ignored.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

import lstmcore

__all__ = ["GRU"]


def _sigmoid(a: np.ndarray) -> np.ndarray:
    # 0.5 + 0.5 tanh(a / 2): overflow-free for any a, exact to rounding in both float32 and float64
    out = np.multiply(a, 0.5)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


@dataclass(frozen=True)
class GRU(lstmcore.Variant):
    """Gated recurrent unit with ONNX's gate order (z, r, h) and ``linear_before_reset`` both ways.

    See the module docstring for the equations, parameter shapes and the treatment of ``lengths``.
    ``lstmcore.LSTM(8, 16, variant="numpy-gru")`` (``linear_before_reset=0``, ONNX's default) or
    ``variant="numpy-gru-lbr"``
    (``linear_before_reset=1``, PyTorch's ``nn.GRU``); ``linear_before_reset`` is also a layer option:
    ``lstmcore.LSTM(8, 16, variant="numpy-gru", linear_before_reset=True)``.
    """

    name: str = "numpy-gru"
    linear_before_reset: bool = False
    description: str = ""

    state_names: ClassVar[tuple[str, ...]] = ("h",)
    compiled: ClassVar[bool] = False
    _OPTIONS: ClassVar[tuple[str, ...]] = ("linear_before_reset",)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"variant name must be a non-empty string, got {self.name!r}")
        if self.linear_before_reset not in (0, 1, False, True):
            raise ValueError(f"linear_before_reset must be 0 or 1, got {self.linear_before_reset!r}")
        object.__setattr__(self, "linear_before_reset", bool(self.linear_before_reset))
        if not self.description:
            object.__setattr__(self, "description", "GRU (ONNX gates z, r, h; linear_before_reset="
                               f"{int(self.linear_before_reset)}), pure NumPy forward and BPTT")

    @property
    def equations(self) -> str:
        return __doc__

    def with_options(self, **options) -> "GRU":
        unknown = sorted(set(options) - set(self._OPTIONS))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown} for variant {self.name!r}; "
                            f"it accepts {', '.join(self._OPTIONS)}")
        return dataclasses.replace(self, **options) if options else self

    def parameter_shapes(self, input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        G = 3 * hidden_size
        return {"W": (G, input_size), "R": (G, hidden_size), "Wb": (G,), "Rb": (G,)}

    # -- forward ------------------------------------------------------------------------------------------------------
    def forward(self, params, x, state, lengths, reverse, out):
        T, B, I = x.shape
        W, R, Wb, Rb = params["W"], params["R"], params["Wb"], params["Rb"]
        H = R.shape[1]
        dt = x.dtype
        lbr = self.linear_before_reset
        # one GEMM for the input projection of every step (the inputs themselves are never written to)
        xw = (x.reshape(T * B, I) @ W.T).reshape(T, B, 3 * H)
        xw += Wb
        active = None if lengths is None else (np.arange(T)[:, None] < np.asarray(lengths)[None, :])  # (T, B)

        h_prev = np.empty((T, B, H), dt)      # the state each step starts from
        zr = np.empty((T, B, 2 * H), dt)      # gates z, r
        hh = np.empty((T, B, H), dt)          # candidate h~
        n = np.empty((T, B, H), dt) if lbr else None   # R_h h_{t-1} + Rb_h (linear_before_reset only)
        R_zr, R_h = R[: 2 * H], R[2 * H:]
        h = np.array(state[0], dtype=dt, copy=True)
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            h_prev[t] = h
            if lbr:
                rec = h @ R.T
                rec += Rb
                zr[t] = _sigmoid(xw[t, :, : 2 * H] + rec[:, : 2 * H])
                n[t] = rec[:, 2 * H:]
                pre = xw[t, :, 2 * H:] + zr[t, :, H:] * n[t]
            else:
                zr[t] = _sigmoid(xw[t, :, : 2 * H] + h @ R_zr.T + Rb[: 2 * H])
                pre = xw[t, :, 2 * H:] + (zr[t, :, H:] * h) @ R_h.T + Rb[2 * H:]
            hh[t] = np.tanh(pre)
            z = zr[t, :, :H]
            h_new = hh[t] + z * (h - hh[t])            # (1 - z) h~ + z h_{t-1}
            if active is not None:
                m = active[t][:, None]
                h_new = np.where(m, h_new, h)          # past its length a sequence keeps its state ...
                out[t] = np.where(m, h_new, 0)         # ... and outputs zeros
            else:
                out[t] = h_new
            h = h_new
        cache = (x, active, bool(reverse), h_prev, zr, hh, n)
        return (h,), cache

    # -- backward -----------------------------------------------------------------------------------------------------
    def backward(self, params, cache, d_out, d_state, d_x, accumulate_dx):
        x, active, reverse, h_prev, zr, hh, n = cache
        T, B, I = x.shape
        W, R = params["W"], params["R"]
        H = R.shape[1]
        dt = x.dtype
        lbr = self.linear_before_reset
        R_zr, R_h = R[: 2 * H], R[2 * H:]

        d_pre = np.empty((T, B, 3 * H), dt)            # dE/d pre-activations of z, r, h~ (what W, Wb and x see)
        d_n = np.empty((T, B, H), dt) if lbr else None  # dE/dn, n = R_h h + Rb_h (what R_h, Rb_h see, lbr = 1)
        dh = np.array(d_state[0], dtype=dt, copy=True)
        for t in (range(T) if reverse else range(T - 1, -1, -1)):
            g = dh + d_out[t]
            carry = None
            if active is not None:
                m = active[t][:, None]
                g = np.where(m, g, 0)                  # inactive step: h_t = h_{t-1}, its output a constant 0
                carry = np.where(m, 0, dh)
            z, r, hp, ht = zr[t, :, :H], zr[t, :, H:], h_prev[t], hh[t]
            dz = g * (hp - ht) * z * (1 - z)
            dhh = g * (1 - z) * (1 - ht * ht)
            if lbr:
                dr = dhh * n[t] * r * (1 - r)
                d_n[t] = dhh * r
                d_pre[t, :, :H], d_pre[t, :, H: 2 * H], d_pre[t, :, 2 * H:] = dz, dr, dhh
                dh = g * z + np.concatenate([dz, dr, d_n[t]], axis=1) @ R
            else:
                dq = dhh @ R_h
                dr = dq * hp * r * (1 - r)
                d_pre[t, :, :H], d_pre[t, :, H: 2 * H], d_pre[t, :, 2 * H:] = dz, dr, dhh
                dh = g * z + dq * r + d_pre[t, :, : 2 * H] @ R_zr
            if carry is not None:
                dh += carry

        # one large GEMM each for dW, dR and dx
        D2 = d_pre.reshape(T * B, 3 * H)
        HP = h_prev.reshape(T * B, H)
        dW = D2.T @ x.reshape(T * B, I)
        dWb = D2.sum(axis=0)
        dR = np.empty_like(R, dtype=dt)
        dR[: 2 * H] = D2[:, : 2 * H].T @ HP
        dRb = dWb.copy()
        if lbr:
            DN = d_n.reshape(T * B, H)
            dR[2 * H:] = DN.T @ HP
            dRb[2 * H:] = DN.sum(axis=0)
        else:
            Q = (zr[:, :, H:] * h_prev).reshape(T * B, H)
            dR[2 * H:] = D2[:, 2 * H:].T @ Q
        dx = (D2 @ W).reshape(T, B, I)
        if accumulate_dx:
            d_x += dx
        else:
            d_x[...] = dx
        return (dh,), {"W": dW, "R": dR, "Wb": dWb, "Rb": dRb.astype(dt, copy=False)}
