"""Minimal gated unit (Zhou, Wu, Zhang & Zhou, 2016): forward and full BPTT over a whole time-major sequence, in
``nogil`` Cython on lstmcore's C-level API (its BLAS shim and activation helpers, cimported from the shipped ``.pxd``).

Equations (sigma the gate activation, g the candidate activation; sigmoid and tanh by default)::

    f_t = sigma(W_f x_t + R_f h_{t-1} + b_f)                  forget gate
    n_t = g(W_n x_t + R_n (f_t * h_{t-1}) + b_n)              candidate
    h_t = (1 - f_t) * h_{t-1} + f_t * n_t                     output and state

BPTT (d_ deltas of pre-activations; dh_t = dE/dh_t from above plus from step t+1)::

    dn_t    = dh_t * f_t * g'                                  (delta of n's pre-activation)
    dm_t    = R_n^T dn_t                                       (m_t = f_t * h_{t-1})
    df_t    = (dh_t * (n_t - h_{t-1}) + dm_t * h_{t-1}) * sigma'
    dh_{t-1} = dh_t * (1 - f_t) + dm_t * f_t + R_f^T df_t
    dW = sum_t [df; dn]_t x_t^T    dR_f = sum_t df_t h_{t-1}^T    dR_n = sum_t dn_t m_t^T    db = sum_t [df; dn]_t

Memory layout (row-major, time-major), as lstmcore's own gated-cell kernel:
    x       (T, B, I)        W (2H, I), R (2H, H), b (2H,)     row blocks: f, then n
    h_states (T+1, B, H)     forward: slot 0 initial, slot t+1 after step t; reverse: slot T initial, slot t after step t
    gates   (T, B, 2H)       [f, n] activations
    fh      (T, B, H)        m_t = f_t * h_{t-1}, the input of R_n (zero on padded steps)
    out     (T, B, ld)       this direction's columns of the layer output; zero past a sequence's length
A padded step (t >= lengths[b]) carries the state unchanged, so the final slot holds the state after the last real step
and the reverse direction starts at each sequence's last real step.
"""
from cython cimport floating
from libc.string cimport memcpy, memset

import numpy as np

from lstmcore._kernels._blas cimport gemm, small_gemm, pack_panels, NoTrans, Trans
from lstmcore._kernels._activations cimport activate_block, multiply_derivative_block


cdef void mgu_forward(Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, bint reverse,
                      const floating *x, const floating *W, const floating *R, const floating *b, const int *lengths,
                      int act_gate, floating gate_alpha, floating gate_beta,
                      int act_cand, floating cand_alpha, floating cand_beta,
                      floating *h_states, floating *gates, floating *fh, floating *out, Py_ssize_t ld_out,
                      floating *packed) noexcept nogil:
    """``packed``: scratch of 2*H*H elements for the two recurrent matrices, packed once per sequence."""
    cdef Py_ssize_t H2 = 2 * H, BH = B * H, n, t, r, j, prev, nxt
    cdef floating *g_t
    cdef floating *g
    cdef floating *m
    cdef floating *hn
    cdef floating *o
    cdef const floating *hp
    cdef const floating *Rn = R + H * H
    cdef floating *packed_n = packed + H * H

    # Input projection of every step at once (one large GEMM): gates = b + x W^T
    for r in range(T * B):
        memcpy(gates + r * H2, b, H2 * sizeof(floating))
    gemm(NoTrans, Trans, <int> (T * B), <int> H2, <int> I, <floating> 1, x, <int> I, W, <int> I,
         <floating> 1, gates, <int> H2)
    # R_f^T and R_n^T as K x N = H x H operands of small_gemm: element (k, j) = R_blk[j, k]
    pack_panels(H, H, R, 1, H, packed)
    pack_panels(H, H, Rn, 1, H, packed_n)

    for n in range(T):
        t = T - 1 - n if reverse else n
        prev = t + 1 if reverse else t
        nxt = t if reverse else t + 1
        g_t = gates + t * B * H2
        # f pre-activation += h_{t-1} R_f^T
        small_gemm(B, H, H, h_states + prev * BH, H, packed, R, 1, H, g_t, H2)
        for r in range(B):
            m = fh + (t * B + r) * H
            if lengths != NULL and t >= lengths[r]:
                memset(m, 0, H * sizeof(floating))
                continue
            g = g_t + r * H2
            hp = h_states + prev * BH + r * H
            activate_block(act_gate, gate_alpha, gate_beta, g, H)
            for j in range(H):
                m[j] = g[j] * hp[j]
        # n pre-activation += (f * h_{t-1}) R_n^T
        small_gemm(B, H, H, fh + t * BH, H, packed_n, Rn, 1, H, g_t + H, H2)
        for r in range(B):
            hp = h_states + prev * BH + r * H
            hn = h_states + nxt * BH + r * H
            o = out + (t * B + r) * ld_out
            if lengths != NULL and t >= lengths[r]:
                memcpy(hn, hp, H * sizeof(floating))
                memset(o, 0, H * sizeof(floating))
                continue
            g = g_t + r * H2
            activate_block(act_cand, cand_alpha, cand_beta, g + H, H)
            for j in range(H):
                hn[j] = hp[j] + g[j] * (g[H + j] - hp[j])
                o[j] = hn[j]


cdef void mgu_backward(Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, bint reverse,
                       const floating *x, const floating *W, const floating *R, const int *lengths,
                       int act_gate, floating gate_alpha, int act_cand, floating cand_alpha,
                       const floating *h_states, const floating *gates, const floating *fh,
                       const floating *d_out, Py_ssize_t ld_dout,
                       floating *dh, floating *dm, floating *d_gates,
                       floating *dW, floating *dR, floating *db, floating *dx, bint accumulate_dx,
                       floating *packed) noexcept nogil:
    """``dh`` (B, H) holds dE/dh_n on entry and dE/dh_0 on exit; ``dm`` is (B, H) scratch, ``packed`` 2*H*H.
    dW, dR, db are overwritten; dx is overwritten, added to (``accumulate_dx``) or skipped (NULL)."""
    cdef Py_ssize_t H2 = 2 * H, BH = B * H, TB = T * B, n, t, r, j, k, prev
    cdef const floating *g
    cdef const floating *hp
    cdef const floating *drow
    cdef floating *dg
    cdef floating *dg_t
    cdef floating *dh_r
    cdef floating *dm_r
    cdef floating f
    cdef const floating *Rn = R + H * H
    cdef floating *packed_n = packed + H * H

    # R_f and R_n as K x N = H x H operands: dE/dh_{t-1} += df R_f, dE/dm = dn R_n
    pack_panels(H, H, R, H, 1, packed)
    pack_panels(H, H, Rn, H, 1, packed_n)
    for n in range(T):
        t = n if reverse else T - 1 - n
        prev = t + 1 if reverse else t
        dg_t = d_gates + t * B * H2
        # candidate: dn = dh * f * g'
        for r in range(B):
            dg = dg_t + r * H2
            if lengths != NULL and t >= lengths[r]:
                memset(dg, 0, H2 * sizeof(floating))  # padded: the state's delta passes through unchanged
                continue
            g = gates + (t * B + r) * H2
            dh_r = dh + r * H
            drow = d_out + (t * B + r) * ld_dout
            for j in range(H):
                dh_r[j] += drow[j]
                dg[H + j] = dh_r[j] * g[j]
            multiply_derivative_block(act_cand, cand_alpha, g + H, dg + H, H)
        memset(dm, 0, BH * sizeof(floating))
        small_gemm(B, H, H, dg_t + H, H2, packed_n, Rn, H, 1, dm, H)
        # forget gate, and the direct paths to h_{t-1}
        for r in range(B):
            if lengths != NULL and t >= lengths[r]:
                continue
            g = gates + (t * B + r) * H2
            hp = h_states + prev * BH + r * H
            dg = dg_t + r * H2
            dh_r = dh + r * H
            dm_r = dm + r * H
            for j in range(H):
                f = g[j]
                dg[j] = dh_r[j] * (g[H + j] - hp[j]) + dm_r[j] * hp[j]
                dh_r[j] = dh_r[j] * (1 - f) + dm_r[j] * f
            multiply_derivative_block(act_gate, gate_alpha, g, dg, H)
        small_gemm(B, H, H, dg_t, H2, packed, R, H, 1, dh, H)

    # One large GEMM each: dW = delta^T x, dR_f = df^T h_prev, dR_n = dn^T (f * h_prev), dx = delta W
    gemm(Trans, NoTrans, <int> H2, <int> I, <int> TB, <floating> 1, d_gates, <int> H2, x, <int> I,
         <floating> 0, dW, <int> I)
    gemm(Trans, NoTrans, <int> H, <int> H, <int> TB, <floating> 1, d_gates, <int> H2,
         h_states + (BH if reverse else 0), <int> H, <floating> 0, dR, <int> H)
    gemm(Trans, NoTrans, <int> H, <int> H, <int> TB, <floating> 1, d_gates + H, <int> H2, fh, <int> H,
         <floating> 0, dR + H * H, <int> H)
    memset(db, 0, H2 * sizeof(floating))
    for r in range(TB):
        for k in range(H2):
            db[k] += d_gates[r * H2 + k]
    if dx != NULL:
        gemm(NoTrans, NoTrans, <int> TB, <int> I, <int> H2, <floating> 1, d_gates, <int> H2, W, <int> I,
             <floating> (1 if accumulate_dx else 0), dx, <int> I)


# ---------------------------------------------------------------------------------------------------------------------
# Python boundary: shapes are checked here, before any kernel runs (the kernels do no bounds checking).

cdef Py_ssize_t _row_stride(object arr, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, Py_ssize_t itemsize,
                            str name) except -1:
    """Row stride (in elements) of a (T, B, H) view whose rows are contiguous and evenly spaced (a slice of the
    layer's output for one direction)."""
    if tuple(arr.shape)[:3] != (T, B, H):
        raise ValueError(f"{name} has shape {tuple(arr.shape)[:3]}, expected {(T, B, H)}")
    st = arr.strides
    if st[2] != itemsize or st[1] % itemsize or st[0] != B * st[1] or st[1] < H * itemsize:
        raise ValueError(f"{name} must have contiguous rows evenly spaced in memory")
    return st[1] // itemsize


def _check(bint ok, str message):
    if not ok:
        raise ValueError(message)


def _check_common(Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, W, R, lengths, h_states, gates, fh):
    _check(T >= 1 and B >= 1 and I >= 1 and H >= 1, "empty sequence, batch, input or hidden size")
    _check(tuple(W.shape)[:2] == (2 * H, I) and tuple(R.shape)[:2] == (2 * H, H), "W must be (2H, I), R (2H, H)")
    _check(tuple(h_states.shape)[:3] == (T + 1, B, H), "h_states must be (T+1, B, H)")
    _check(tuple(gates.shape)[:3] == (T, B, 2 * H) and tuple(fh.shape)[:3] == (T, B, H), "workspace shapes")
    if lengths is not None:
        _check(lengths.shape[0] == B, "lengths must be (B,)")
        for r in range(B):
            _check(0 <= lengths[r] <= T, "lengths out of range")


def forward(bint reverse, const floating[:, :, ::1] x, const floating[:, ::1] W, const floating[:, ::1] R,
            const floating[::1] b, const int[::1] lengths, int act_gate, double gate_alpha, double gate_beta,
            int act_cand, double cand_alpha, double cand_beta, floating[:, :, ::1] h_states,
            floating[:, :, ::1] gates, floating[:, :, ::1] fh, floating[:, :, :] out):
    """One direction of one layer over a whole sequence; fills ``h_states``, ``gates``, ``fh`` and ``out``
    (the initial state must already be in slot 0, or slot T with ``reverse``)."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H = R.shape[1]
    _check_common(T, B, I, H, W, R, lengths, h_states, gates, fh)
    _check(b.shape[0] == 2 * H, "b must be (2H,)")
    _check(all(0 <= a <= 5 for a in (act_gate, act_cand)), "unknown activation code")
    cdef Py_ssize_t ld = _row_stride(out, T, B, H, sizeof(floating), "out")
    cdef floating[::1] packed = np.empty(2 * H * H, dtype=np.float32 if floating is float else np.float64)
    with nogil:
        mgu_forward(T, B, I, H, reverse, &x[0, 0, 0], &W[0, 0], &R[0, 0], &b[0],
                    &lengths[0] if lengths is not None else NULL,
                    act_gate, <floating> gate_alpha, <floating> gate_beta,
                    act_cand, <floating> cand_alpha, <floating> cand_beta,
                    &h_states[0, 0, 0], &gates[0, 0, 0], &fh[0, 0, 0], &out[0, 0, 0], ld, &packed[0])


def backward(bint reverse, const floating[:, :, ::1] x, const floating[:, ::1] W, const floating[:, ::1] R,
             const int[::1] lengths, int act_gate, double gate_alpha, int act_cand, double cand_alpha,
             const floating[:, :, ::1] h_states, const floating[:, :, ::1] gates, const floating[:, :, ::1] fh,
             const floating[:, :, :] d_out, floating[:, ::1] dh, floating[:, :, ::1] d_gates,
             floating[:, ::1] dW, floating[:, ::1] dR, floating[::1] db, floating[:, :, ::1] dx, bint accumulate_dx):
    """BPTT for one direction of one layer from what its ``forward`` filled; ``dh`` holds dE/dh_n on entry and
    dE/dh_0 on exit; ``dx`` may be None (no input gradient needed)."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H = R.shape[1]
    _check_common(T, B, I, H, W, R, lengths, h_states, gates, fh)
    _check(tuple(dh.shape)[:2] == (B, H), "dh must be (B, H)")
    _check(tuple(d_gates.shape)[:3] == (T, B, 2 * H), "d_gates must be (T, B, 2H)")
    _check(tuple(dW.shape)[:2] == (2 * H, I) and tuple(dR.shape)[:2] == (2 * H, H) and db.shape[0] == 2 * H,
           "dW, dR, db shapes")
    _check(dx is None or tuple(dx.shape)[:3] == (T, B, I), "dx must be (T, B, I)")
    _check(all(0 <= a <= 5 for a in (act_gate, act_cand)), "unknown activation code")
    cdef Py_ssize_t ld = _row_stride(d_out, T, B, H, sizeof(floating), "d_out")
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] packed = np.empty(2 * H * H, dtype=dtype)
    cdef floating[::1] dm = np.empty(B * H, dtype=dtype)
    with nogil:
        mgu_backward(T, B, I, H, reverse, &x[0, 0, 0], &W[0, 0], &R[0, 0],
                     &lengths[0] if lengths is not None else NULL,
                     act_gate, <floating> gate_alpha, act_cand, <floating> cand_alpha,
                     &h_states[0, 0, 0], &gates[0, 0, 0], &fh[0, 0, 0], &d_out[0, 0, 0], ld,
                     &dh[0, 0], &dm[0], &d_gates[0, 0, 0], &dW[0, 0], &dR[0, 0], &db[0],
                     &dx[0, 0, 0] if dx is not None else NULL, accumulate_dx, &packed[0])
