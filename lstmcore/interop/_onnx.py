"""ONNX ``LSTM`` (opset 7/14/22) to and from ``lstmcore.LSTM``.

ONNX keeps W ``[D, 4H, I]``, R ``[D, 4H, H]``, B ``[D, 8H]`` = [Wb, Rb] and P ``[D, 3H]`` with gate blocks (i, o, f, c)
and peepholes (i, o, f); the permutation and the bias split live in ``_layout.ONNX`` and nowhere else.
"""
from __future__ import annotations

import numpy as np

from lstmcore._validation import positive_int
from lstmcore.interop._layout import ONNX, check_cell, export_tensors, import_tensors
from lstmcore.layers import LSTM, ReverseOnly
from lstmcore.plugins import get_variant
from lstmcore.variant import Activation, GatedCell

DIRECTIONS = ("forward", "reverse", "bidirectional")
DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")  # f (gates), g (block input), h (output)

# ONNX activation (lower case) -> (takes alpha, takes beta, default alpha, default beta). The alpha/beta lists are
# consumed in activation order, one value per activation that takes it (ONNX spec; ONNX Runtime does the same). A
# default of None means ONNX and ONNX Runtime disagree (the spec says "as the ONNX operator", ORT uses 0): be explicit.
_ONNX_ACTIVATIONS = {
    "relu": (False, False, None, None),
    "tanh": (False, False, None, None),
    "sigmoid": (False, False, None, None),
    "softsign": (False, False, None, None),
    "softplus": (False, False, None, None),
    "hardsigmoid": (True, True, 0.2, 0.5),
    "leakyrelu": (True, False, 0.01, None),
    "elu": (True, False, 1.0, None),
    "thresholdedrelu": (True, False, None, None),
    "affine": (True, True, None, None),
    "scaledtanh": (True, True, None, None),
}
_ALIASES = {"hard_sigmoid": "hardsigmoid"}  # our own spellings (and "identity") are accepted too
_ONNX_NAME = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "softsign": "Softsign",
              "hard_sigmoid": "HardSigmoid", "identity": "Affine"}


_SUPPORTED = ("Sigmoid, Tanh, Relu, HardSigmoid, Softsign, and the exact equivalents Affine(alpha=1, beta=0), "
              "ScaledTanh(alpha=1, beta=1), LeakyRelu(alpha=0 or 1), ThresholdedRelu(alpha=0)")


def _to_ours(key: str, alpha, beta) -> Activation:
    """One ONNX activation (lower-case name, its consumed alpha/beta or None) -> our ``Activation``."""
    if key in ("sigmoid", "tanh", "relu", "softsign", "identity"):
        return Activation.parse(key)
    if key == "hardsigmoid":
        return Activation("hard_sigmoid", float(alpha), float(beta))
    # parameterised ONNX activations that are exactly one of ours for these values
    if key == "affine" and (alpha, beta) == (1.0, 0.0) or key == "leakyrelu" and alpha == 1.0:
        return Activation.parse("identity")
    if key == "scaledtanh" and (alpha, beta) == (1.0, 1.0):
        return Activation.parse("tanh")
    if key == "leakyrelu" and alpha == 0.0 or key == "thresholdedrelu" and alpha == 0.0:
        return Activation.parse("relu")
    if key not in _ONNX_ACTIVATIONS:
        raise ValueError(f"unknown ONNX activation {key!r}; lstmcore runs {_SUPPORTED}")
    takes_alpha, takes_beta = _ONNX_ACTIVATIONS[key][:2]
    if (takes_alpha and alpha is None) or (takes_beta and beta is None):
        raise ValueError(f"ONNX activation {key!r} without an explicit activation_alpha/activation_beta: its default "
                         f"differs between the ONNX spec and ONNX Runtime, so give it explicitly (lstmcore runs "
                         f"{_SUPPORTED})")
    values = ", ".join(f"{n}={v:g}" for n, v, used in (("alpha", alpha, takes_alpha), ("beta", beta, takes_beta))
                       if used)
    raise ValueError(f"ONNX activation {key!r}" + (f" with {values}" if values else "")
                     + f" is not supported by lstmcore's kernel; it runs {_SUPPORTED}")


def parse_activations(activations, activation_alpha, activation_beta, num_directions: int):
    """ONNX ``activations`` / ``activation_alpha`` / ``activation_beta`` -> one dict of our options per direction."""
    if activations is None:
        names = list(DEFAULT_ACTIVATIONS) * num_directions
    else:
        if isinstance(activations, (str, bytes)) or not all(isinstance(a, (str, bytes)) for a in activations):
            raise TypeError(f"activations must be a list of names, got {activations!r}")
        names = [a.decode() if isinstance(a, bytes) else a for a in activations]
        if len(names) != 3 * num_directions:
            raise ValueError(f"activations needs 3 names per direction (f, g, h) = {3 * num_directions} for "
                             f"{num_directions} direction(s), got {len(names)}: {names}")
    alphas = [float(a) for a in (activation_alpha if activation_alpha is not None else [])]
    betas = [float(b) for b in (activation_beta if activation_beta is not None else [])]
    resolved = []
    for position, name in enumerate(names):
        key = _ALIASES.get(name.lower(), name.lower())
        takes_alpha, takes_beta, default_alpha, default_beta = _ONNX_ACTIVATIONS.get(key, (False, False, None, None))
        alpha = alphas.pop(0) if takes_alpha and alphas else (default_alpha if takes_alpha else None)
        beta = betas.pop(0) if takes_beta and betas else (default_beta if takes_beta else None)
        try:
            resolved.append(_to_ours(key, alpha, beta))
        except ValueError as exc:
            raise ValueError(f"activations[{position}] = {name!r}: {exc}") from None
    if alphas or betas:
        raise ValueError(f"activation_alpha/activation_beta have {len(alphas)}/{len(betas)} value(s) left over that "
                         f"no activation in {names} consumes")
    return [dict(zip(("gate_activation", "input_activation", "output_activation"), resolved[3 * d: 3 * d + 3]))
            for d in range(num_directions)]


def _activation_attributes(cells):
    """Our cells' activations -> ONNX ``activations``, ``activation_alpha``, ``activation_beta``."""
    names, alphas, betas = [], [], []
    for cell in cells:
        for act in (cell.gate_activation, cell.input_activation, cell.output_activation):
            names.append(_ONNX_NAME[act.name])
            if act.name == "hard_sigmoid":
                alphas.append(act.alpha)
                betas.append(act.beta)
            elif act.name == "identity":  # Affine(x) = alpha * x + beta
                alphas.append(1.0)
                betas.append(0.0)
    return names, alphas or None, betas or None


def _as_float_array(value, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr


def _check_shape(arr, name: str, shape: tuple, text: str) -> None:
    if arr.shape != shape:
        raise ValueError(f"ONNX LSTM input {name} has shape {arr.shape}, expected {text} = {shape}")


def from_onnx(W, R, B=None, P=None, *, hidden_size=None, direction="forward", input_forget=0, activations=None,
              activation_alpha=None, activation_beta=None, clip=None) -> LSTM:
    """An ``lstmcore.LSTM`` computing what an ONNX ``LSTM`` node with these inputs and attributes computes.

    ``W`` ``[num_directions, 4H, input_size]``, ``R`` ``[num_directions, 4H, H]``, ``B`` ``[num_directions, 8H]``
    (optional), ``P`` ``[num_directions, 3H]`` (optional), in ONNX's gate order (i, o, f, c) and peephole order
    (i, o, f). The variant follows the inputs: ``P`` given -> ``peephole`` (``coupled`` with ``input_forget=1``);
    ``P`` absent -> ``vanilla`` (with ``input_forget=1``: a coupled cell without peepholes, ``coupled-np``).
    Call the layer as ``layer(X, (initial_h, initial_c), lengths=sequence_lens)`` with ONNX's ``layout=0`` shapes; its
    ``output`` is ``Y`` without the direction axis, ``Y.reshape(T, B, D * H)`` (directions side by side).
    ``direction="reverse"`` gives a one-direction layer whose cell runs backwards in time (see ``ReverseOnly``).
    The layer's dtype is float64 when ``W`` is float64, float32 otherwise.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    D = 2 if direction == "bidirectional" else 1
    if input_forget not in (0, 1, False, True):
        raise ValueError(f"input_forget must be 0 or 1, got {input_forget!r}")
    W, R = _as_float_array(W, "W"), _as_float_array(R, "R")
    if W.ndim != 3 or R.ndim != 3:
        raise ValueError(f"ONNX LSTM W and R must be 3-D [num_directions, 4*hidden_size, ...], got shapes "
                         f"{W.shape} and {R.shape}")
    H = R.shape[2]
    if hidden_size is not None:
        positive_int(hidden_size, "hidden_size")
        if hidden_size != H:
            raise ValueError(f"hidden_size={hidden_size} but R has shape {R.shape}, i.e. hidden_size {H}")
    I = W.shape[2]
    _check_shape(W, "W", (D, 4 * H, I), "[num_directions, 4*hidden_size, input_size]")
    _check_shape(R, "R", (D, 4 * H, H), "[num_directions, 4*hidden_size, hidden_size]")
    if B is not None:
        B = _as_float_array(B, "B")
        _check_shape(B, "B", (D, 8 * H), "[num_directions, 8*hidden_size]")
    if P is not None:
        P = _as_float_array(P, "P")
        _check_shape(P, "P", (D, 3 * H), "[num_directions, 3*hidden_size]")
    options = {}
    if clip is not None:
        options["clip"] = float(clip)
    per_direction = parse_activations(activations, activation_alpha, activation_beta, D)

    if P is not None:
        base = get_variant("coupled" if input_forget else "peephole")
    elif input_forget:
        base = GatedCell("coupled-np", coupled=True, forget_gate=False,
                         description="Coupled input and forget gate (f = 1 - i), no peepholes (ONNX input_forget=1)")
    else:
        base = get_variant("vanilla")
    variant = ReverseOnly(base) if direction == "reverse" else base
    dtype = np.float64 if W.dtype == np.float64 else np.float32
    reverse_options = per_direction[1] if D == 2 else None
    layer = LSTM(I, H, variant=variant, bidirectional=D == 2, dtype=dtype, seed=0, reverse_options=reverse_options,
                 **per_direction[0], **options)
    for d, cell in enumerate(layer.cells):
        cell = check_cell(cell.cell if isinstance(cell, ReverseOnly) else cell, ONNX,
                          allow_dropped=("f",) if input_forget else ())
        params = import_tensors(ONNX, cell, H, W[d], R[d], *((B[d, :4 * H], B[d, 4 * H:]) if B is not None else ()),
                                p=P[d] if P is not None else None, dtype=dtype)
        for name, value in params.items():
            layer.params[LSTM.param_name(name, 0, d)] = value
    return layer


def to_onnx(layer: LSTM) -> dict:
    """The ONNX ``LSTM`` inputs and attributes of a one-layer ``lstmcore.LSTM`` (float32/float64 as the layer).

    Returns a dict with the keys of ``from_onnx`` (so ``from_onnx(**to_onnx(layer))`` round-trips): ``W``, ``R``,
    ``B`` (our single bias in the ``Wb`` half, zeros in ``Rb``), ``P`` (None for a cell without peepholes),
    ``hidden_size``, ``direction``, ``input_forget``, ``activations``, ``activation_alpha``, ``activation_beta``,
    ``clip``. Works for any gated cell with input and output gates and a forget gate or a coupled one (vanilla,
    peephole, coupled, their activation variants); other variants and stacks raise ``ValueError``.
    """
    if not isinstance(layer, LSTM):
        raise TypeError(f"to_onnx needs an lstmcore.LSTM, got {type(layer).__name__}")
    if layer.num_layers != 1:
        raise ValueError(f"an ONNX LSTM node has one layer; this layer has num_layers={layer.num_layers} "
                         f"(export each layer as its own node)")
    if layer.proj_size:
        raise ValueError(f"ONNX's LSTM has no projection (LSTMP); this layer has proj_size={layer.proj_size}")
    reverse_only = isinstance(layer.cells[0], ReverseOnly)
    cells = [c.cell if isinstance(c, ReverseOnly) else c for c in layer.cells]
    coupled = [check_cell(c, ONNX, allow_dropped=("f",)).coupled for c in cells]
    if len(set(coupled)) > 1 or len({c.clip for c in cells}) > 1 or len({bool(c.peephole_blocks) for c in cells}) > 1:
        raise ValueError("ONNX shares input_forget, clip and the presence of P between the two directions; this "
                         "layer's directions differ in them")
    for cell in cells:
        if "f" not in cell.gate_blocks and not cell.coupled:
            raise ValueError(f"variant {cell.name!r} has no forget gate; ONNX cannot express f = 1")
    H = layer.hidden_size
    tensors = [export_tensors(ONNX, cell, H, {k: layer.params[LSTM.param_name(k, 0, d)]
                                              for k in cell.parameter_shapes(layer.input_size, H)})
               for d, cell in enumerate(cells)]
    names, alphas, betas = _activation_attributes(cells)
    return {
        "W": np.stack([t["W"] for t in tensors]),
        "R": np.stack([t["R"] for t in tensors]),
        "B": np.stack([np.concatenate([t["b_in"], t["b_rec"]]) for t in tensors]),
        "P": np.stack([t["p"] for t in tensors]) if cells[0].peephole_blocks else None,
        "hidden_size": H,
        "direction": "bidirectional" if layer.bidirectional else ("reverse" if reverse_only else "forward"),
        "input_forget": int(coupled[0]),
        "activations": names,
        "activation_alpha": alphas,
        "activation_beta": betas,
        "clip": cells[0].clip,
    }
