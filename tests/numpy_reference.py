"""An independent pure-NumPy LSTM, written from the equations of docs/architecture.md section 4 (not from the kernels).

It is the oracle of ``test_reference.py`` and the NumPy baseline of the benchmarks. Readability comes first: one time
step at a time, vectorised over the batch, every gate in its own array, BPTT written out by hand.

- ``reference_forward(cell, params, x, h0, c0, lengths=None, reverse=False) -> (y, h_n, c_n, cache)``:
  one direction of one layer. ``cell`` is a ``lstmcore.GatedCell``; ``params`` a dict with ``W`` (G*H, I),
  ``R`` (G*H, H), ``b`` (G*H,) and, for peephole cells, ``p`` (P*H,), with the row blocks of ``cell.gate_blocks`` and
  the peephole blocks of ``cell.peephole_blocks``; ``x`` is time-major ``(T, B, I)``, ``h0``/``c0`` are ``(B, H)``.
- ``reference_backward(cell, params, cache, d_y, d_h_n, d_c_n) -> (d_x, d_h0, d_c0, grads)``: BPTT through it;
  ``grads`` has the keys of ``params``.
- ``reference_layer(layer, x, state=None, lengths=None) -> (output, (h_n, c_n), tape)`` runs a whole ``lstmcore.LSTM``
  (layers, directions, ``batch_first``) from ``layer.params`` and ``layer.cells``;
  ``reference_layer_backward(tape, d_output, d_h_n=None, d_c_n=None) -> (d_x, grads, (d_h0, d_c0))`` is its BPTT,
  ``grads`` keyed like ``layer.params``.

Computation happens in the dtype of ``x`` (pass float64 arrays for an exact oracle).

Semantics (the public contract): with ``lengths``, steps ``t >= lengths[b]`` of sequence ``b`` output zero and leave its
state unchanged, so the final state is the one after its last real step (its initial state if the length is 0); the
reverse direction runs ``t = lengths[b]-1, ..., 0``. ``clip`` clamps the pre-activations of z, i, f and o (peephole
terms included), as ONNX's ``clip``; the clamp's derivative is zero where it clamps. Whether the cell fed to the output
activation h is clamped too is ``CLAMP_CELL_FED_TO_H`` below (the kernels dropped that clamp to follow ONNX Runtime;
flip it if the contract changes back). The output gate's peephole sees the new (unclamped) cell c_t.
"""
from __future__ import annotations

import numpy as np

#: Does ``clip`` also clamp the cell value fed to h (y = o * h(clamp(c)))? No: as ONNX, only pre-activations.
CLAMP_CELL_FED_TO_H = False

__all__ = ["activation", "activation_grad", "reference_forward", "reference_backward", "reference_layer",
           "reference_layer_backward"]


# ---------------------------------------------------------------------------------------------------------------------
# Activations, from their definitions; the derivative is taken with respect to the pre-activation x.

def _fields(act):
    """(name, alpha, beta) of an ``lstmcore.Activation``, a name or a (name, alpha, beta) tuple."""
    if isinstance(act, str):
        return act, 0.2, 0.5
    if isinstance(act, tuple):
        return act
    return act.name, act.alpha, act.beta


def activation(act, x):
    name, alpha, beta = _fields(act)
    if name == "sigmoid":
        with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives the right limit, 0
            return 1.0 / (1.0 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    if name == "identity":
        return x.copy()
    if name == "relu":
        return np.maximum(x, 0)
    if name == "hard_sigmoid":
        return np.clip(alpha * x + beta, 0, 1)
    if name == "softsign":
        return x / (1 + np.abs(x))
    raise ValueError(f"unknown activation {name!r}")


def activation_grad(act, x):
    """d act(x) / dx (at a kink: the one-sided value that treats the kink as saturated)."""
    name, alpha, beta = _fields(act)
    if name == "sigmoid":
        s = activation("sigmoid", x)
        return s * (1 - s)
    if name == "tanh":
        return 1 - np.tanh(x) ** 2
    if name == "identity":
        return np.ones_like(x)
    if name == "relu":
        return (x > 0).astype(x.dtype)
    if name == "hard_sigmoid":
        v = alpha * x + beta
        return np.where((v > 0) & (v < 1), alpha, 0).astype(x.dtype)
    if name == "softsign":
        return 1 / (1 + np.abs(x)) ** 2
    raise ValueError(f"unknown activation {name!r}")


def _clamp(cell, v):
    """(clamped value, derivative mask) of the optional clip."""
    if not cell.clip:
        return v, np.ones_like(v)
    return np.clip(v, -cell.clip, cell.clip), (np.abs(v) <= cell.clip).astype(v.dtype)


# ---------------------------------------------------------------------------------------------------------------------
# Parameter blocks

def _split(cell, params):
    """Per-block views {gate: W_gate (H, I)}, {gate: R_gate (H, H)}, {gate: b_gate (H,)}, {gate: p_gate (H,)}."""
    H = params["R"].shape[1]
    blocks = cell.gate_blocks
    W = {g: params["W"][k * H:(k + 1) * H] for k, g in enumerate(blocks)}
    R = {g: params["R"][k * H:(k + 1) * H] for k, g in enumerate(blocks)}
    b = {g: params["b"][k * H:(k + 1) * H] for k, g in enumerate(blocks)}
    p = {g: params["p"][k * H:(k + 1) * H] for k, g in enumerate(cell.peephole_blocks)}
    return W, R, b, p


def _gate_recurrence(cell, params):
    """FGR's nine H x H blocks ``{(target, source): matrix}`` of ``Rg``; empty for other cells."""
    if not getattr(cell, "gate_recurrence", False):
        return {}
    H = params["R"].shape[1]
    return {(g, src): params["Rg"][a * H:(a + 1) * H, b * H:(b + 1) * H]
            for a, g in enumerate("ifo") for b, src in enumerate("ifo")}


def _has(cell):
    """Which gates exist as computed gates (the coupled forget gate is 1 - i, not a gate of its own)."""
    blocks = cell.gate_blocks
    return "i" in blocks, "f" in blocks, "o" in blocks


def _time_order(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def _active(lengths, t, B):
    """(B, 1) boolean: is step t a real step of each sequence?"""
    if lengths is None:
        return np.ones((B, 1), dtype=bool)
    return (t < np.asarray(lengths)).reshape(B, 1)


# ---------------------------------------------------------------------------------------------------------------------
# One direction of one layer

def reference_forward(cell, params, x, h0, c0, lengths=None, reverse=False):
    """Forward pass of one direction of one layer: returns ``(y, h_n, c_n, cache)`` with ``y`` (T, B, H)."""
    T, B, _ = x.shape
    H = params["R"].shape[1]
    W, R, b, p = _split(cell, params)
    has_i, has_f, has_o = _has(cell)
    g_act, z_act, h_act = cell.gate_activation, cell.input_activation, cell.output_activation

    y = np.zeros((T, B, H), dtype=x.dtype)
    h, c = h0.astype(x.dtype, copy=True), c0.astype(x.dtype, copy=True)
    Rg = _gate_recurrence(cell, params)
    a = {g: np.zeros((B, H), x.dtype) for g in "ifo"}  # FGR: the gates of the previous step (zero before the first)
    steps = {}
    for t in _time_order(T, reverse):
        active = _active(lengths, t, B)
        s = {"x": x[t], "h_prev": h, "c_prev": c, "active": active, "a_prev": a}

        # pre-activations: W x_t + R y_{t-1} + b (+ p ⊙ c_{t-1} for the input and forget gates)
        raw = {g: x[t] @ W[g].T + h @ R[g].T + b[g] for g in cell.gate_blocks if g != "o"}
        if Rg:  # FGR: + sum over source gates of Rg[target, source] a_source(t-1)
            for g in ("i", "f"):
                raw[g] = raw[g] + sum(a[src] @ Rg[g, src].T for src in "ifo")
        for g in ("i", "f"):
            if g in p:
                raw[g] = raw[g] + p[g] * c

        s["z_pre"], s["z_mask"] = _clamp(cell, raw["z"])
        z = activation(z_act, s["z_pre"])
        if has_i:
            s["i_pre"], s["i_mask"] = _clamp(cell, raw["i"])
            i = activation(g_act, s["i_pre"])
        else:
            i = np.ones_like(z)
        if cell.coupled:
            f = 1 - i
        elif has_f:
            s["f_pre"], s["f_mask"] = _clamp(cell, raw["f"])
            f = activation(g_act, s["f_pre"])
        else:
            f = np.ones_like(z)

        c_new = z * i + c * f

        if has_o:
            o_raw = x[t] @ W["o"].T + h @ R["o"].T + b["o"]
            if Rg:
                o_raw = o_raw + sum(a[src] @ Rg["o", src].T for src in "ifo")
            if "o" in p:
                o_raw = o_raw + p["o"] * c_new  # the output gate's peephole sees the new cell
            s["o_pre"], s["o_mask"] = _clamp(cell, o_raw)
            o = activation(g_act, s["o_pre"])
        else:
            o = np.ones_like(z)

        if CLAMP_CELL_FED_TO_H:
            s["cc"], s["cc_mask"] = _clamp(cell, c_new)  # the cell fed to h
        else:
            s["cc"], s["cc_mask"] = c_new, np.ones_like(c_new)
        hc = activation(h_act, s["cc"])
        y_new = o * hc
        s.update(z=z, i=i, f=f, o=o, c=c_new, hc=hc)
        steps[t] = s

        y[t] = np.where(active, y_new, 0)
        h = np.where(active, y_new, h)
        c = np.where(active, c_new, c)
        if Rg:
            a = {g: np.where(active, v, a[g]) for g, v in (("i", i), ("f", f), ("o", o))}

    cache = {"steps": steps, "T": T, "B": B, "H": H, "I": x.shape[2], "reverse": reverse, "dtype": x.dtype}
    return y, h, c, cache


def reference_backward(cell, params, cache, d_y, d_h_n, d_c_n):
    """BPTT through ``reference_forward``: returns ``(d_x, d_h0, d_c0, grads)``, ``grads`` keyed like ``params``."""
    T, B, H, I, dtype = cache["T"], cache["B"], cache["H"], cache["I"], cache["dtype"]
    W, R, _, p = _split(cell, params)
    has_i, has_f, has_o = _has(cell)
    g_act, z_act, h_act = cell.gate_activation, cell.input_activation, cell.output_activation

    dW = {g: np.zeros((H, I), dtype) for g in cell.gate_blocks}
    dR = {g: np.zeros((H, H), dtype) for g in cell.gate_blocks}
    db = {g: np.zeros(H, dtype) for g in cell.gate_blocks}
    dp = {g: np.zeros(H, dtype) for g in p}
    d_x = np.zeros((T, B, I), dtype)

    dh = np.array(d_h_n, dtype=dtype, copy=True)  # dE/dy_t carried from the step after t (in processing order)
    dc = np.array(d_c_n, dtype=dtype, copy=True)  # dE/dc_t carried likewise
    Rg = _gate_recurrence(cell, params)
    dRg = {key: np.zeros((H, H), dtype) for key in Rg}
    da = {g: np.zeros((B, H), dtype) for g in "ifo"}  # FGR: dE/d(gate activation) carried from the next step
    for t in reversed(list(_time_order(T, cache["reverse"]))):
        s = cache["steps"][t]
        active = s["active"]
        dy = dh + d_y[t]

        # y = o ⊙ h(clamp(c))
        dcell = dy * s["o"] * activation_grad(h_act, s["cc"]) * s["cc_mask"]
        delta = {}
        if has_o:
            delta["o"] = (dy * s["hc"] + da["o"]) * activation_grad(g_act, s["o_pre"]) * s["o_mask"]
            if "o" in p:
                dcell = dcell + p["o"] * delta["o"]
                dp["o"] += np.sum(np.where(active, s["c"] * delta["o"], 0), axis=0)
        dcell = dcell + dc

        # c = z ⊙ i + c_prev ⊙ f
        delta["z"] = dcell * s["i"] * activation_grad(z_act, s["z_pre"]) * s["z_mask"]
        if has_i:
            d_i = dcell * (s["z"] - s["c_prev"]) if cell.coupled else dcell * s["z"]
            delta["i"] = (d_i + da["i"]) * activation_grad(g_act, s["i_pre"]) * s["i_mask"]
        if has_f:
            delta["f"] = (dcell * s["c_prev"] + da["f"]) * activation_grad(g_act, s["f_pre"]) * s["f_mask"]

        dc_prev = dcell * s["f"]  # f is 1 - i when coupled, 1 without a forget gate
        for g in ("i", "f"):
            if g in p:
                dc_prev = dc_prev + p[g] * delta[g]
                dp[g] += np.sum(np.where(active, s["c_prev"] * delta[g], 0), axis=0)

        # a padded step has no deltas; the state's gradient passes through it unchanged
        delta = {g: np.where(active, d, 0) for g, d in delta.items()}
        dh_prev = np.zeros_like(dh)
        for g, d in delta.items():
            d_x[t] += d @ W[g]
            dh_prev += d @ R[g]
            dW[g] += d.T @ s["x"]
            dR[g] += d.T @ s["h_prev"]
            db[g] += d.sum(axis=0)
        dh = np.where(active, dh_prev, dh)
        dc = np.where(active, dc_prev, dc)
        if Rg:
            for (g, src) in Rg:
                dRg[g, src] += delta[g].T @ s["a_prev"][src]
            da = {src: np.where(active, sum(delta[g] @ Rg[g, src] for g in "ifo"), da[src]) for src in "ifo"}

    grads = {"W": np.concatenate([dW[g] for g in cell.gate_blocks]),
             "R": np.concatenate([dR[g] for g in cell.gate_blocks]),
             "b": np.concatenate([db[g] for g in cell.gate_blocks])}
    if p:
        grads["p"] = np.concatenate([dp[g] for g in cell.peephole_blocks])
    if Rg:
        grads["Rg"] = np.block([[dRg[g, src] for src in "ifo"] for g in "ifo"])
    return d_x, dh, dc, grads


# ---------------------------------------------------------------------------------------------------------------------
# A whole lstmcore.LSTM stack

def _layer_params(layer, k, d, dtype):
    suffix = f"_l{k}" + ("_reverse" if d else "")
    names = ("W", "R", "b", "p", "Rg")
    return {n: np.asarray(layer.params[n + suffix], dtype=dtype) for n in names if n + suffix in layer.params}


def reference_layer(layer, x, state=None, lengths=None, dtype=np.float64):
    """Run ``layer`` (an ``lstmcore.LSTM``) with the reference: returns ``(output, (h_n, c_n), tape)``.

    Computes in ``dtype`` (float64 by default, whatever the layer's dtype). ``tape`` feeds
    ``reference_layer_backward``.
    """
    x = np.asarray(x, dtype=dtype)
    if layer.batch_first:
        x = x.transpose(1, 0, 2)
    T, B, _ = x.shape
    L, D, H = layer.num_layers, 2 if layer.bidirectional else 1, layer.hidden_size
    if state is None:
        h0 = np.zeros((L * D, B, H), dtype)
        c0 = np.zeros((L * D, B, H), dtype)
    else:
        h0, c0 = (np.asarray(s, dtype=dtype) for s in state)
    h_n, c_n = np.zeros_like(h0), np.zeros_like(c0)
    caches, inp = [], x
    for k in range(L):
        outs, layer_caches = [], []
        for d in range(D):
            params = _layer_params(layer, k, d, dtype)
            y, h, c, cache = reference_forward(layer.cells[d], params, inp, h0[k * D + d], c0[k * D + d],
                                               lengths=lengths, reverse=bool(d))
            outs.append(y)
            h_n[k * D + d], c_n[k * D + d] = h, c
            layer_caches.append((params, cache))
        caches.append(layer_caches)
        inp = np.concatenate(outs, axis=2)
    output = inp.transpose(1, 0, 2) if layer.batch_first else inp
    tape = {"layer": layer, "caches": caches, "shape": (T, B, x.shape[2]), "dtype": dtype}
    return output, (h_n, c_n), tape


def reference_layer_backward(tape, d_output, d_h_n=None, d_c_n=None):
    """BPTT through ``reference_layer``: returns ``(d_x, grads, (d_h0, d_c0))``, ``grads`` keyed like
    ``layer.params``."""
    layer, dtype = tape["layer"], tape["dtype"]
    T, B, I = tape["shape"]
    L, D, H = layer.num_layers, 2 if layer.bidirectional else 1, layer.hidden_size
    d_out = np.asarray(d_output, dtype=dtype)
    if layer.batch_first:
        d_out = d_out.transpose(1, 0, 2)
    d_h_n = np.zeros((L * D, B, H), dtype) if d_h_n is None else np.asarray(d_h_n, dtype)
    d_c_n = np.zeros((L * D, B, H), dtype) if d_c_n is None else np.asarray(d_c_n, dtype)
    d_h0, d_c0 = np.zeros_like(d_h_n), np.zeros_like(d_c_n)
    grads = {}
    for k in reversed(range(L)):
        d_in = np.zeros((T, B, I if k == 0 else D * H), dtype)
        for d in range(D):
            params, cache = tape["caches"][k][d]
            dx, dh, dc, g = reference_backward(layer.cells[d], params, cache, d_out[:, :, d * H:(d + 1) * H],
                                               d_h_n[k * D + d], d_c_n[k * D + d])
            d_in = d_in + dx
            d_h0[k * D + d], d_c0[k * D + d] = dh, dc
            for name, value in g.items():
                grads[f"{name}_l{k}" + ("_reverse" if d else "")] = value
        d_out = d_in
    d_x = d_out.transpose(1, 0, 2) if layer.batch_first else d_out
    return d_x, grads, (d_h0, d_c0)
