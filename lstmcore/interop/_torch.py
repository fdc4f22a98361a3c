"""PyTorch ``torch.nn.LSTM`` and ``torch.nn.GRU`` to and from ``lstmcore.LSTM``. torch is imported inside the functions
only.

PyTorch keeps, per layer k and direction (suffix ``_reverse``), ``weight_ih_l{k}`` (G*H, I), ``weight_hh_l{k}`` (G*H,
H), ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (G*H,), gate blocks (i, f, g, o) for the LSTM and (r, z, n) for the GRU, and
for an LSTM with ``proj_size`` P ``weight_hr_l{k}`` (P, H), our ``W_proj`` (``weight_hh`` is then (4H, P)); the
permutations and the bias split live in ``_layout.TORCH`` and ``_layout.TORCH_GRU`` and nowhere else.
"""
from __future__ import annotations

import warnings

import numpy as np

from lstmcore.interop._layout import TORCH, TORCH_GRU, Layout, check_cell, export_tensors, import_tensors, layout_cell
from lstmcore.layers import LSTM, ReverseOnly
from lstmcore.plugins import get_variant
from lstmcore.variant import Variant

_DTYPES = {"torch.float32": np.float32, "torch.float64": np.float64}


def _torch_names(layer: int, direction: int) -> dict[str, str]:
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    return {"W": "weight_ih" + suffix, "R": "weight_hh" + suffix, "b_in": "bias_ih" + suffix,
            "b_rec": "bias_hh" + suffix, "W_proj": "weight_hr" + suffix}


def _torch_layout(cell) -> Layout:
    """PyTorch's layout for ``cell`` (``nn.LSTM``'s or ``nn.GRU``'s), after checking that ``cell`` holds exactly its
    gates (our extra peepholes, if any, are started at zero)."""
    layout = TORCH_GRU if layout_cell(cell) == "GRU" else TORCH
    cell = check_cell(cell, layout, extra_peepholes=True)
    if layout is TORCH and cell.coupled:
        raise ValueError(f"variant {cell.name!r} couples f = 1 - i; PyTorch's LSTM has an independent forget gate")
    if layout is TORCH_GRU and not cell.linear_before_reset:
        raise ValueError(f"variant {cell.name!r} has linear_before_reset=False; torch.nn.GRU computes "
                         f"linear_before_reset=True (its b_hn inside the reset gate's product)")
    return layout


def _torch_cell(cell) -> Variant:
    """``cell``, checked to hold exactly PyTorch's gates (``_torch_layout``)."""
    _torch_layout(cell)
    return cell


def torch_arrays(layer: LSTM, params: dict | None = None) -> dict[str, np.ndarray]:
    """``params`` (default ``layer.params``) as PyTorch ``nn.LSTM`` or ``nn.GRU`` parameter arrays, keyed by
    PyTorch's names. Our bias goes to ``bias_ih`` and ``bias_hh`` is zero (the two are only ever summed), but for the
    GRU's ``b_rn``, which is ``bias_hh``'s n block."""
    params = layer.params if params is None else params
    out = {}
    H = layer.hidden_size
    for k in range(layer.num_layers):
        for d, cell in enumerate(layer.cells):
            layout = _torch_layout(cell)
            ours = {name: params[key] for name, key in layer.parameter_keys(k, d).items()}
            theirs = export_tensors(layout, cell, H, ours)
            if layer.proj_size:
                theirs["W_proj"] = ours["W_proj"]
            for key, name in _torch_names(k, d).items():
                if key in theirs:
                    out[name] = theirs[key]
    return out


def from_torch(module, variant=None) -> LSTM:
    """An ``lstmcore.LSTM`` with the configuration and a copy of the weights of a ``torch.nn.LSTM`` or ``nn.GRU``.

    ``num_layers``, ``bidirectional``, ``batch_first`` and the dtype (float32 or float64) come from the module; the two
    biases are summed into our one (but for the GRU's ``b_hn``, our ``b_rn``); ``bias=False`` gives zero biases.
    ``variant`` defaults to ``vanilla`` for an ``nn.LSTM``, which computes exactly what the module computes, and to
    ``gru`` for an ``nn.GRU`` (likewise; its gate blocks r, z, n become our z, r, n). For an ``nn.LSTM`` it may be any
    gated cell with PyTorch's three independent gates: ``peephole`` starts with zero peepholes (the same function,
    trainable peepholes); a variant with other activations keeps the weights but, by design, not the function.
    ``proj_size`` (LSTMP) is carried over, ``weight_hr`` becoming ``W_proj``; dropout between layers is not carried
    over (a warning says so).
    """
    import torch

    if not isinstance(module, (torch.nn.LSTM, torch.nn.GRU)):
        raise TypeError(f"from_torch needs a torch.nn.LSTM or torch.nn.GRU, got {type(module).__name__}")
    kind = type(module).__name__ if isinstance(module, torch.nn.GRU) else "LSTM"
    if variant is None:
        variant = "gru" if isinstance(module, torch.nn.GRU) else "vanilla"
    dtype = _DTYPES.get(str(module.weight_ih_l0.dtype))
    if dtype is None:
        raise TypeError(f"the module's dtype is {module.weight_ih_l0.dtype}; lstmcore runs torch.float32 or "
                        f"torch.float64 (convert with module.float() or module.double())")
    if module.dropout:
        warnings.warn(f"torch.nn.{kind} dropout={module.dropout} between layers is not carried over: lstmcore.LSTM "
                      f"has no dropout (the eval-mode function is the same)", UserWarning, stacklevel=2)
    base = variant if isinstance(variant, Variant) else get_variant(variant)
    if layout_cell(base) != ("GRU" if isinstance(module, torch.nn.GRU) else "LSTM"):
        raise ValueError(f"variant {base.name!r} cannot take the weights of a torch.nn.{kind}: "
                         f"{'use a GRU variant (gru)' if kind == 'GRU' else 'use a gated cell (vanilla, ...)'}")
    _torch_layout(base)
    layer = LSTM(module.input_size, module.hidden_size, variant=base, num_layers=module.num_layers,
                 bidirectional=module.bidirectional, batch_first=module.batch_first, dtype=dtype, seed=0,
                 proj_size=module.proj_size or None)
    H = layer.hidden_size
    state = {name: value.detach().cpu().numpy() for name, value in module.named_parameters()}
    for k in range(layer.num_layers):
        for d, cell in enumerate(layer.cells):
            names = _torch_names(k, d)
            tensors = {key: state.get(name) for key, name in names.items()}  # biases are absent with bias=False
            params = import_tensors(_torch_layout(cell), cell, H, tensors["W"], tensors["R"], tensors["b_in"],
                                    tensors["b_rec"], dtype=dtype)
            if layer.proj_size:
                params["W_proj"] = np.array(tensors["W_proj"], dtype=dtype)
            for name, value in params.items():
                layer.params[LSTM.param_name(name, k, d)] = value
    return layer


def to_torch(layer: LSTM):
    """A ``torch.nn.LSTM`` (same dtype, ``num_layers``, ``bidirectional``, ``batch_first``) computing what a
    ``vanilla`` ``layer`` computes (with its ``proj_size``): our bias goes into ``bias_ih``, ``bias_hh`` is zero; or a
    ``torch.nn.GRU`` for a ``gru`` layer (``linear_before_reset=True``, sigmoid and tanh; ``b_rn`` goes into
    ``bias_hh``). Other variants (peepholes, coupled gates, other activations, ``clip``) raise ``ValueError``: PyTorch
    cannot express them."""
    import torch

    if not isinstance(layer, LSTM):
        raise TypeError(f"to_torch needs an lstmcore.LSTM, got {type(layer).__name__}")
    gru = all(layout_cell(cell) == "GRU" and not isinstance(cell, ReverseOnly) for cell in layer.cells)
    for cell in layer.cells:
        reasons = []
        if gru:
            if not cell.linear_before_reset:
                reasons.append("it has linear_before_reset=False (torch.nn.GRU's is True)")
            acts = tuple(a.name for a in (cell.gate_activation, cell.input_activation))
            if acts != ("sigmoid", "tanh"):
                reasons.append(f"its activations (gate, input) are {acts}, not (sigmoid, tanh)")
        elif layout_cell(cell) != "LSTM" or isinstance(cell, ReverseOnly):
            reasons.append("it is not a forward-running gated cell of the compiled family or a GRU")
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
            raise ValueError(f"to_torch supports the vanilla and gru variants only; variant {layer.variant_name!r} "
                             f"differs: " + "; ".join(reasons))
    options = dict(num_layers=layer.num_layers, bias=True, batch_first=layer.batch_first,
                   bidirectional=layer.bidirectional, dtype=torch.float64 if layer.dtype == np.float64 else torch.float32)
    if gru:
        module = torch.nn.GRU(layer.input_size, layer.hidden_size, **options)
    else:
        module = torch.nn.LSTM(layer.input_size, layer.hidden_size, proj_size=layer.proj_size or 0, **options)
    arrays = torch_arrays(layer)
    with torch.no_grad():
        for name, value in module.named_parameters():
            value.copy_(torch.from_numpy(np.ascontiguousarray(arrays[name])))
    return module
