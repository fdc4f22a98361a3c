"""Keras-style summaries (``LSTM.summary()``, ``SequenceModel.summary()``) and the description of a variant that
``lstmcore variants --show NAME`` prints: its equations, parameter shapes and count as formulas in I and H, options."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SummaryRow:
    """One named parameter of one layer and direction."""

    layer: str
    variant: str
    output_shape: str
    parameter: str
    shape: tuple
    count: int


@dataclass
class Summary:
    """A table of every named parameter, grouped by layer and direction; ``str()`` prints it; ``total`` equals the
    model's ``parameter_count()``."""

    title: str
    rows: list[SummaryRow] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(row.count for row in self.rows)

    def __str__(self) -> str:
        headers = ("Layer (direction)", "Variant", "Output shape", "Parameter", "Shape", "Count")
        cells = [(r.layer, r.variant, r.output_shape, r.parameter, str(r.shape), f"{r.count:,}") for r in self.rows]
        widths = [max(len(h), *(len(c[k]) for c in cells)) if cells else len(h) for k, h in enumerate(headers)]

        def line(values):
            return "  ".join(v.rjust(w) if k == 5 else v.ljust(w) for k, (v, w) in enumerate(zip(values, widths)))

        rule = "=" * len(line(headers))
        out = [self.title, rule, line(headers), rule]
        previous = None
        for row, values in zip(self.rows, cells):
            group = (row.layer, row.variant, row.output_shape)
            if previous is not None and group != previous:
                out.append("-" * len(rule))
            out.append(line(values if group != previous else ("", "", "") + values[3:]))
            previous = group
        out += [rule, f"Total parameters: {self.total:,}"]
        return "\n".join(out)

    __repr__ = __str__


def layer_rows(lstm) -> list[SummaryRow]:
    """The rows of an ``lstmcore.LSTM``: every layer and direction, its variant, output shape and parameters."""
    rows = []
    H = lstm.output_width
    output = "(B, T, {})" if lstm.batch_first else "(T, B, {})"
    for k in range(lstm.num_layers):
        for d, cell in enumerate(lstm.cells):
            where = f"lstm {k} ({'reverse' if d else 'forward'})"
            for key in lstm.parameter_keys(k, d).values():
                value = lstm.params.get(key)
                if value is None:
                    continue
                rows.append(SummaryRow(where, cell.name, output.format(H), key, tuple(value.shape), int(value.size)))
    return rows


def layer_summary(lstm) -> Summary:
    D = lstm.num_directions
    title = (f"LSTM: {lstm.num_layers} layer(s), {'bidirectional' if D == 2 else 'unidirectional'}, "
             f"input_size={lstm.input_size}, hidden_size={lstm.hidden_size}, {lstm.dtype.name}; output "
             + ("(B, T, " if lstm.batch_first else "(T, B, ") + f"{D * lstm.output_width})")
    return Summary(title, layer_rows(lstm))


def model_summary(model) -> Summary:
    """``SequenceModel``: its LSTM layers, then the readout."""
    from lstmcore.training.model import READOUT_BIAS, READOUT_WEIGHT

    rows = layer_rows(model.lstm)
    shape = "(B, T, {})" if model.per_step else "(B, {})"
    where = f"readout ({model.output})"
    for name in (READOUT_WEIGHT, READOUT_BIAS):
        value = model.readout[name]
        rows.append(SummaryRow(where, "dense", shape.format(model.output_size), name, tuple(value.shape),
                               int(value.size)))
    title = (f"SequenceModel: {model.num_layers} LSTM layer(s) of {model.variant!r}, hidden_size={model.hidden_size}"
             f"{', bidirectional' if model.bidirectional else ''}, {model.output_size} output(s), "
             f"{'per step' if model.per_step else 'per sequence'}, loss {type(model.loss).__name__}")
    return Summary(title, rows)


# -- describing a variant -----------------------------------------------------------------------------------------------
_SIZES = ((2, 3), (5, 3), (2, 7), (5, 7), (11, 13), (3, 17), (19, 2))   # (I, H) pairs that separate the monomials


def _linear_in(function):
    """The integer coefficients of (I·H, H², I, H, 1) if ``function(I, H)`` is such a polynomial, else None."""
    basis = np.array([[i * h, h * h, i, h, 1] for i, h in _SIZES], dtype=float)
    values = np.array([function(i, h) for i, h in _SIZES], dtype=float)
    coef = np.round(np.linalg.lstsq(basis, values, rcond=None)[0])
    return coef.astype(int) if np.allclose(basis @ coef, values) else None


def _format_polynomial(coef) -> str:
    terms = []
    for c, monomial in zip(coef, ("I·H", "H²", "I", "H", "")):
        if c:
            number = "" if abs(c) == 1 and monomial else str(abs(c))
            terms.append(("− " if c < 0 else "+ ") + number + monomial)
    text = " ".join(terms) or "0"
    return text[2:] if text.startswith("+ ") else text


def parameter_formulas(variant) -> tuple[dict[str, str], str]:
    """``({name: shape formula}, count formula)`` in the input size I and the hidden size H, found by evaluating the
    variant's ``parameter_shapes`` at a few sizes (a shape that is not linear in I and H is shown at I=88, H=100)."""
    shapes = {}
    names = variant.parameter_shapes(2, 3)
    for name, shape in names.items():
        dims = []
        for axis in range(len(shape)):
            coef = _linear_in(lambda i, h: variant.parameter_shapes(i, h)[name][axis])
            dims.append(_format_polynomial(coef).replace("·", "") if coef is not None
                        else f"{variant.parameter_shapes(88, 100)[name][axis]} at I=88, H=100")
        shapes[name] = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
    count = _linear_in(variant.parameter_count)
    return shapes, (_format_polynomial(count) if count is not None else
                    f"{variant.parameter_count(88, 100):,} at I=88, H=100")


def describe_variant(variant, source: str = "") -> str:
    """What ``lstmcore variants --show NAME`` prints."""
    shapes, count = parameter_formulas(variant)
    options = getattr(variant, "_OPTIONS", ())
    lines = [f"{variant.name}" + (f" ({source})" if source else "") + (f": {variant.description}"
                                                                    if variant.description else ""),
             "", "Equations:"]
    equations = getattr(variant, "equations", None)
    equations = (equations() if callable(equations) else equations) or inspect.getdoc(type(variant)) \
        or "(not documented)"
    lines += ["    " + line for line in inspect.cleandoc(equations).splitlines()]
    lines += ["", "Parameters per layer and direction (I = input size, H = hidden size):"]
    lines += [f"    {name:<4} {shape}" for name, shape in shapes.items()]
    lines += [f"    total: {count}", "", f"States: {', '.join(variant.state_names)}", ""]
    if options:
        lines.append("Options (LSTM(..., option=value)):")
        lines += [f"    {name} = {getattr(variant, name, None)}" for name in options]
    else:
        lines.append("Options: none")
    traced = variant.trace_quantities()
    lines += ["", "Traced by LSTM.trace: " + ", ".join(traced)]
    return "\n".join(lines)
