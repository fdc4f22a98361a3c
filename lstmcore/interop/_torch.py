"""PyTorch ``torch.nn.LSTM`` to and from ``lstmcore.LSTM``. torch is imported inside the functions only.

PyTorch keeps, per layer k and direction (suffix ``_reverse``), ``weight_ih_l{k}`` (4H, I), ``weight_hh_l{k}`` (4H, H),
``bias_ih_l{k}`` and ``bias_hh_l{k}`` (4H,), gate blocks (i, f, g, o), and with ``proj_size`` P ``weight_hr_l{k}``
(P, H), our ``W_proj`` (``weight_hh`` is then (4H, P)); the permutation and the bias split live in ``_layout.TORCH``
and nowhere else.
"""
from __future__ import annotations

import warnings

import numpy as np

from lstmcore.interop._layout import TORCH, check_cell, export_tensors, import_tensors
from lstmcore.layers import LSTM
from lstmcore.plugins import get_variant
from lstmcore.variant import GatedCell, Variant

_DTYPES = {"torch.float32": np.float32, "torch.float64": np.float64}


def _torch_names(layer: int, direction: int) -> dict[str, str]:
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    return {"W": "weight_ih" + suffix, "R": "weight_hh" + suffix, "b_in": "bias_ih" + suffix,
            "b_rec": "bias_hh" + suffix, "W_proj": "weight_hr" + suffix}


def _torch_cell(cell) -> GatedCell:
    """Check that ``cell`` holds exactly PyTorch's gates (our extra peepholes, if any, are started at zero)."""
    cell = check_cell(cell, TORCH, extra_peepholes=True)
    if cell.coupled:
        raise ValueError(f"variant {cell.name!r} couples f = 1 - i; PyTorch's LSTM has an independent forget gate")
    return cell


def torch_arrays(layer: LSTM, params: dict | None = None) -> dict[str, np.ndarray]:
    """``params`` (default ``layer.params``; ``layer.grads`` works too) as PyTorch ``nn.LSTM`` parameter arrays, keyed
    by PyTorch's names. Our bias goes to ``bias_ih`` and ``bias_hh`` is zero (the two are only ever summed)."""
    params = layer.params if params is None else params
    out = {}
    H = layer.hidden_size
    for k in range(layer.num_layers):
        for d, cell in enumerate(layer.cells):
            cell = _torch_cell(cell)
            ours = {name: params[LSTM.param_name(name, k, d)] for name in ("W", "R", "b")}
            theirs = export_tensors(TORCH, cell, H, ours)
            if layer.proj_size:
                theirs["W_proj"] = params[LSTM.param_name("W_proj", k, d)]
            for key, name in _torch_names(k, d).items():
                if key in theirs:
                    out[name] = theirs[key]
    return out


def from_torch(module, variant="vanilla") -> LSTM:
    """An ``lstmcore.LSTM`` with the configuration and a copy of the weights of a ``torch.nn.LSTM``.

    ``num_layers``, ``bidirectional``, ``batch_first`` and the dtype (float32 or float64) come from the module; the two
    biases are summed into our one; ``bias=False`` gives zero biases. ``variant`` may be any gated cell with PyTorch's
    three independent gates: ``vanilla`` (the default) computes exactly what the module computes; ``peephole`` starts
    with zero peepholes (the same function, trainable peepholes); a variant with other activations keeps the weights
    but, by design, not the function. ``proj_size`` (LSTMP) is carried over, ``weight_hr`` becoming ``W_proj``; dropout
    between layers is not carried over (a warning says so).
    """
    import torch

    if not isinstance(module, torch.nn.LSTM):
        raise TypeError(f"from_torch needs a torch.nn.LSTM, got {type(module).__name__}")
    dtype = _DTYPES.get(str(module.weight_ih_l0.dtype))
    if dtype is None:
        raise TypeError(f"the module's dtype is {module.weight_ih_l0.dtype}; lstmcore runs torch.float32 or "
                        f"torch.float64 (convert with module.float() or module.double())")
    if module.dropout:
        warnings.warn(f"torch.nn.LSTM dropout={module.dropout} between layers is not carried over: lstmcore.LSTM "
                      f"has no dropout (the eval-mode function is the same)", UserWarning, stacklevel=2)
    base = variant if isinstance(variant, Variant) else get_variant(variant)
    _torch_cell(base)
    layer = LSTM(module.input_size, module.hidden_size, variant=base, num_layers=module.num_layers,
                 bidirectional=module.bidirectional, batch_first=module.batch_first, dtype=dtype, seed=0,
                 proj_size=module.proj_size or None)
    H = layer.hidden_size
    state = {name: value.detach().cpu().numpy() for name, value in module.named_parameters()}
    for k in range(layer.num_layers):
        for d, cell in enumerate(layer.cells):
            names = _torch_names(k, d)
            tensors = {key: state.get(name) for key, name in names.items()}  # biases are absent with bias=False
            params = import_tensors(TORCH, _torch_cell(cell), H, tensors["W"], tensors["R"], tensors["b_in"],
                                    tensors["b_rec"], dtype=dtype)
            if layer.proj_size:
                params["W_proj"] = np.array(tensors["W_proj"], dtype=dtype)
            for name, value in params.items():
                layer.params[LSTM.param_name(name, k, d)] = value
    return layer


def to_torch(layer: LSTM):
    """A ``torch.nn.LSTM`` (same dtype, ``num_layers``, ``bidirectional``, ``batch_first``) computing what a
    ``vanilla`` ``layer`` computes (with its ``proj_size``): our bias goes into ``bias_ih``, ``bias_hh`` is zero.
    Other variants (peepholes,
    coupled gates, other activations, ``clip``) raise ``ValueError``: PyTorch's LSTM cannot express them."""
    import torch

    if not isinstance(layer, LSTM):
        raise TypeError(f"to_torch needs an lstmcore.LSTM, got {type(layer).__name__}")
    for cell in layer.cells:
        reasons = []
        if not isinstance(cell, GatedCell):
            reasons.append("it is not a forward-running gated cell of the compiled family")
        else:
            if cell.gate_blocks != ("i", "f", "o", "z") or cell.coupled:
                reasons.append(f"its gate blocks are {cell.gate_blocks}" + (" (coupled)" if cell.coupled else ""))
            if cell.peephole_blocks:
                reasons.append(f"it has peepholes {cell.peephole_blocks}")
            acts = tuple(a.name for a in (cell.gate_activation, cell.input_activation, cell.output_activation))
            if acts != ("sigmoid", "tanh", "tanh"):
                reasons.append(f"its activations (gate, input, output) are {acts}, not (sigmoid, tanh, tanh)")
            if cell.clip is not None:
                reasons.append(f"it clips pre-activations at {cell.clip}")
        if reasons:
            raise ValueError(f"to_torch supports the vanilla variant only; variant {layer.variant_name!r} differs: "
                             + "; ".join(reasons))
    module = torch.nn.LSTM(layer.input_size, layer.hidden_size, num_layers=layer.num_layers, bias=True,
                           batch_first=layer.batch_first, bidirectional=layer.bidirectional,
                           proj_size=layer.proj_size or 0, dtype=torch.float64 if layer.dtype == np.float64 else torch.float32)
    arrays = torch_arrays(layer)
    with torch.no_grad():
        for name, value in module.named_parameters():
            value.copy_(torch.from_numpy(np.ascontiguousarray(arrays[name])))
    return module
