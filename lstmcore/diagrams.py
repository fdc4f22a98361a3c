"""``lstmcore.diagram(variant, path=None)``: an SVG of a cell, drawn from the variant itself.

A variant describes its structure with ``Variant.cell_structure()``, which returns a ``CellStructure`` (or a dict with
its fields). Every ``GatedCell`` spec describes itself (``gated_cell_structure``); a variant that returns None is drawn
as a box with its states. The drawing is one matplotlib figure (imported only here, when drawing), saved as SVG with
its text kept as text, and as PNG when ``path`` ends in ``.png``. Each element carries an SVG ``id``: ``gate-input``,
``gate-forget``, ``gate-output``, ``peephole-input``, ``peephole-forget``, ``peephole-output``, ``coupling``,
``gate-recurrence``, ``clip``, ``norm-gates``, ``norm-cell``, ``state-NAME``.
"""
from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field
from pathlib import Path

GATE_ROLES = ("input", "forget", "output")
PEEPHOLE_SOURCES = ("c_prev", "c_new")
NORMALIZATIONS = ("gates", "cell")
DEFAULTS = {"gate": "sigmoid", "block_input": "tanh", "output": "tanh"}


@dataclass(frozen=True)
class Gate:
    """One gate: ``role`` (input, forget or output), its ``activation`` and ``peephole`` (None, ``"c_prev"``: it sees
    c_{t-1}, or ``"c_new"``: it sees c_t)."""

    role: str
    activation: str = "sigmoid"
    peephole: str | None = None

    def __post_init__(self):
        if self.role not in GATE_ROLES:
            raise ValueError(f"a gate's role must be one of {GATE_ROLES}, got {self.role!r}")
        if self.peephole not in (None,) + PEEPHOLE_SOURCES:
            raise ValueError(f"a gate's peephole must be None or one of {PEEPHOLE_SOURCES}, got {self.peephole!r}")
        object.__setattr__(self, "activation", str(self.activation))


@dataclass(frozen=True)
class CellStructure:
    """What a diagram shows of a gated cell (c_t = z * i + c_{t-1} * f, y_t = h(c_t) * o):

    - ``gates``: the ``Gate`` objects present (an absent gate is 1);
    - ``block_input_activation`` (g) and ``output_activation`` (h): activation names;
    - ``coupled``: the forget gate is 1 - i (the input gate must be present, the forget gate absent);
    - ``gate_recurrence``: every gate also receives the gates i, f, o of the previous step;
    - ``clip``: None or the bound of the pre-activations;
    - ``normalizations``: any of ``"gates"`` (the pre-activations of z and the gates are normalised) and ``"cell"``
      (h sees a normalised cell);
    - ``extra_states``: ``(name, description)`` pairs of states carried besides c and h;
    - ``notes``: lines printed under the drawing.
    """

    name: str
    description: str = ""
    gates: tuple = ()
    block_input_activation: str = "tanh"
    output_activation: str = "tanh"
    coupled: bool = False
    gate_recurrence: bool = False
    clip: float | None = None
    normalizations: tuple = ()
    extra_states: tuple = ()
    notes: tuple = field(default=())

    def __post_init__(self):
        gates = tuple(g if isinstance(g, Gate) else Gate(**g) for g in self.gates)
        roles = [g.role for g in gates]
        if len(set(roles)) != len(roles):
            raise ValueError(f"cell structure {self.name!r} lists a gate role twice: {roles}")
        if self.coupled and ("input" not in roles or "forget" in roles):
            raise ValueError(f"cell structure {self.name!r}: coupled needs an input gate and no forget gate")
        unknown = set(self.normalizations) - set(NORMALIZATIONS)
        if unknown:
            raise ValueError(f"cell structure {self.name!r}: unknown normalizations {sorted(unknown)}; "
                             f"choose from {NORMALIZATIONS}")
        object.__setattr__(self, "gates", tuple(sorted(gates, key=lambda g: GATE_ROLES.index(g.role))))
        object.__setattr__(self, "normalizations", tuple(self.normalizations))
        object.__setattr__(self, "extra_states", tuple(tuple(s) for s in self.extra_states))
        object.__setattr__(self, "notes", tuple(self.notes))

    @classmethod
    def parse(cls, value, variant_name: str) -> "CellStructure":
        if isinstance(value, CellStructure):
            return value
        if isinstance(value, dict):
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - fields)
            if unknown:
                raise ValueError(f"variant {variant_name!r}: cell_structure() has unknown keys {unknown}; "
                                 f"the format's keys are {sorted(fields)}")
            return cls(**{"name": variant_name, **value})
        raise TypeError(f"variant {variant_name!r}: cell_structure() must return a CellStructure, a dict or None, "
                        f"got {type(value).__name__}")

    def gate(self, role: str) -> Gate | None:
        return next((g for g in self.gates if g.role == role), None)


def gated_cell_structure(cell) -> CellStructure:
    """The structure of a ``GatedCell`` spec, read from its fields."""
    present = {"i": "input", "f": "forget", "o": "output"}
    peeps = set(cell.peephole_blocks)
    gates = [Gate(present[g], str(cell.gate_activation), ("c_new" if g == "o" else "c_prev") if g in peeps else None)
             for g in cell.gate_blocks if g != "z"]
    return CellStructure(cell.name, cell.description, tuple(gates), str(cell.input_activation),
                         str(cell.output_activation), cell.coupled, cell.gate_recurrence, cell.clip)


def structure_of(variant) -> CellStructure | None:
    described = variant.cell_structure()
    return None if described is None else CellStructure.parse(described, variant.name)


# -- drawing -----------------------------------------------------------------------------------------------------------
SYMBOL = {"input": "i", "forget": "f", "output": "o"}
X = {"forget": 4.6, "input": 7.9, "block": 11.2, "output": 14.5, "h": 18.3, "sum": 9.55}
ROW, CELL_Y, BUS_Y, RECUR_Y, MUL_Y = 4.2, 10.0, 1.4, 2.5, 7.6
BOX_W, BOX_H = 2.7, 1.7
INK, PEEP, RECUR, NORM, MUTED, CHANGED = "#222222", "#d9730d", "#7b3fa0", "#1f77b4", "#8a8a8a", "#b3261e"
GATE_FILL, BLOCK_FILL, H_FILL = "#fdf1d6", "#dcebf7", "#e3f1df"


class _Canvas:
    """The figure, with helpers in data units (one unit = half an inch)."""

    def __init__(self, width: float, height: float):
        from matplotlib.figure import Figure  # a bare Figure: no pyplot, no GUI backend

        self.figure = Figure(figsize=(width / 2, height / 2))
        self.ax = self.figure.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(0, height)
        self.ax.set_axis_off()

    def text(self, x, y, s, gid=None, size=10, color=INK, **kw):
        artist = self.ax.text(x, y, s, fontsize=size, color=color, ha=kw.pop("ha", "center"),
                              va=kw.pop("va", "center"), **kw)
        artist.set_gid(gid)
        return artist

    def box(self, x, y, lines, fill, gid=None, edge=INK, w=BOX_W, h=BOX_H, colors=None):
        from matplotlib.patches import FancyBboxPatch

        patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.25",
                               facecolor=fill, edgecolor=edge, linewidth=1.4, zorder=3)
        patch.set_gid(gid)
        self.ax.add_patch(patch)
        step = 0.55
        top = y + step * (len(lines) - 1) / 2
        for k, line in enumerate(lines):
            self.text(x, top - k * step, line, gid=gid and f"{gid}-label-{k}", size=10 if k == 0 else 9.5,
                      color=(colors or {}).get(k, INK), zorder=4, fontweight="bold" if k == 0 else "normal")

    def node(self, x, y, symbol, gid=None):
        from matplotlib.patches import Circle

        circle = Circle((x, y), 0.42, facecolor="white", edgecolor=INK, linewidth=1.4, zorder=3)
        circle.set_gid(gid)
        self.ax.add_patch(circle)
        self.text(x, y, symbol, size=14, zorder=4)

    def arrow(self, points, color=INK, style="-", gid=None, width=1.4, head=True):
        xs, ys = zip(*points)
        line, = self.ax.plot(xs[:-1] + (xs[-1],), ys, color=color, linestyle=style, linewidth=width, zorder=2,
                             solid_capstyle="butt")
        line.set_gid(gid)
        if head:
            self.ax.annotate("", xy=points[-1], xytext=points[-2], zorder=2,
                             arrowprops=dict(arrowstyle="-|>", color=color, lw=width, shrinkA=0, shrinkB=0,
                                             mutation_scale=14, linestyle="-"))

    def save(self, path: Path | None) -> str:
        import matplotlib

        buffer = io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "lstmcore"}):
            self.figure.savefig(buffer, format="svg")
            if path is not None:
                path = Path(path)
                if path.suffix.lower() == ".png":
                    self.figure.savefig(path, format="png", dpi=110)
                else:
                    path.write_text(buffer.getvalue())
        return buffer.getvalue()


def _activation_line(label: str, activation: str, default: str) -> tuple[str, str]:
    """The activation text of a box, and its colour (highlighted when it differs from the LSTM's usual one)."""
    return f"{label} = {activation}", (INK if activation == default else CHANGED)


def _draw_gated(canvas: _Canvas, s: CellStructure, top: float) -> None:
    has = {role: s.gate(role) for role in GATE_ROLES}
    y_top = CELL_Y
    # the cell state line, c_{t-1} -> [x f] -> [+] -> c_t
    canvas.text(0.35, y_top, "$c_{t-1}$", size=13, ha="left")
    canvas.text(21.65, y_top, "$c_t$", size=13, ha="right")
    forget_x, sum_x = X["forget"], X["sum"]
    canvas.arrow([(1.5, y_top), (forget_x - 0.42, y_top)] if has["forget"] or s.coupled else
                 [(1.5, y_top), (sum_x - 0.42, y_top)])
    if has["forget"] or s.coupled:
        canvas.node(forget_x, y_top, "×")
        canvas.arrow([(forget_x + 0.42, y_top), (sum_x - 0.42, y_top)])
    else:
        canvas.text(forget_x, y_top + 0.55, "no forget gate: f = 1", size=9, color=MUTED, style="italic")
    canvas.node(sum_x, y_top, "+")
    canvas.arrow([(sum_x + 0.42, y_top), (20.6, y_top)])
    canvas.text((forget_x + sum_x) / 2, y_top + 0.5, "cell state", size=9, color=MUTED)

    # the input bus: x_t and y_{t-1} feed the block input and every gate
    fed = [X[r] for r in GATE_ROLES if has[r]] + [X["block"]]
    canvas.text(0.35, BUS_Y, "$x_t,\\ y_{t-1}$", size=13, ha="left")
    canvas.arrow([(2.3, BUS_Y), (max(fed), BUS_Y)], head=False)
    for x in fed:
        canvas.arrow([(x, BUS_Y), (x, ROW - BOX_H / 2)])

    # gates; normalised pre-activations get a third line
    norm = ["normalised (LN)"] if "gates" in s.normalizations else []
    for role in GATE_ROLES:
        gate, x = has[role], X[role]
        if gate is not None:
            text, color = _activation_line("σ", gate.activation, DEFAULTS["gate"])
            canvas.box(x, ROW, [f"{role} gate {SYMBOL[role]}", text] + norm, GATE_FILL, gid=f"gate-{role}",
                       colors={1: color, 2: NORM})
        elif role == "forget" and s.coupled:
            canvas.box(x, ROW, ["f = 1 − i", "coupled"], "#f4e4f7", gid="coupling")
            canvas.arrow([(X["input"] - BOX_W / 2, ROW), (x + BOX_W / 2, ROW)])
        else:
            canvas.text(x, ROW, f"no {role} gate\n{SYMBOL[role]} = 1", size=9, color=MUTED, style="italic",
                        linespacing=1.4)
    text, color = _activation_line("g", s.block_input_activation, DEFAULTS["block_input"])
    canvas.box(X["block"], ROW, ["block input z", text] + norm, BLOCK_FILL, gid="block-input",
               colors={1: color, 2: NORM})
    if norm:
        canvas.text(0.35, top - 2.15, "LN: layer normalisation of the pre-activations", size=9, color=NORM,
                    ha="left", gid="norm-gates")

    # z * i -> the sum
    block_top = ROW + BOX_H / 2
    if has["input"]:
        canvas.node(sum_x, MUL_Y, "×")
        canvas.arrow([(X["block"], block_top), (X["block"], MUL_Y), (sum_x + 0.42, MUL_Y)])
        canvas.arrow([(X["input"], block_top), (X["input"], MUL_Y), (sum_x - 0.42, MUL_Y)])
        canvas.arrow([(sum_x, MUL_Y + 0.42), (sum_x, y_top - 0.42)])
    else:
        canvas.arrow([(X["block"], block_top), (X["block"], MUL_Y), (sum_x, MUL_Y), (sum_x, y_top - 0.42)])
    if has["forget"] or s.coupled:
        canvas.arrow([(forget_x, block_top), (forget_x, y_top - 0.42)])

    # output: c_t -> h -> [x o] -> y_t
    hx = X["h"]
    h_y = 7.3
    text, color = _activation_line("h", s.output_activation, DEFAULTS["output"])
    canvas.arrow([(hx, y_top), (hx, h_y + BOX_H / 2)])
    canvas.box(hx, h_y, ["output activation", text], H_FILL, gid="output-activation", colors={1: color}, w=3.1)
    if has["output"]:
        canvas.node(hx, ROW, "×")
        canvas.arrow([(hx, h_y - BOX_H / 2), (hx, ROW + 0.42)])
        canvas.arrow([(X["output"] + BOX_W / 2, ROW), (hx - 0.42, ROW)])
        start = (hx, ROW - 0.42)
    else:
        start = (hx, h_y - BOX_H / 2)
    canvas.arrow([start, (hx, BUS_Y + 0.2), (20.6, BUS_Y + 0.2)])
    canvas.text(21.65, BUS_Y + 0.2, "$y_t$", size=13, ha="right")
    canvas.text(20.5, BUS_Y + 0.75, "block output", size=9, color=MUTED, ha="right")
    if "cell" in s.normalizations:
        canvas.text(hx + 0.25, 9.05, "$h(\\mathrm{LN}(c_t))$", size=10, ha="left", color=NORM, gid="norm-cell")
    else:
        canvas.text(hx + 0.25, 9.05, "$h(c_t)$", size=10, ha="left")

    # peepholes: dashed, from the cell line; i and f see c_{t-1}, o sees c_t
    peeps = {role: g.peephole for role, g in has.items() if g is not None and g.peephole}
    tap_prev, tap_new = 2.5, 16.4
    for role, source in peeps.items():
        x_gate = X[role]
        tap = tap_prev if source == "c_prev" else tap_new
        if role == "forget":
            points = [(tap, y_top), (tap, ROW + 0.3), (x_gate - BOX_W / 2, ROW + 0.3)]
        elif role == "input" and source == "c_prev":
            points = [(tap, y_top), (tap, 6.45), (x_gate - 0.7, 6.45), (x_gate - 0.7, block_top)]
        elif role == "output" and source == "c_new":
            points = [(tap, y_top), (tap, 6.2), (X["output"] + 0.7, 6.2), (X["output"] + 0.7, block_top)]
        else:   # an unusual source (o seeing c_{t-1}, i seeing c_t): straight from the tap
            points = [(tap, y_top), (x_gate, block_top)]
        canvas.arrow(points, color=PEEP, style=(0, (4, 2.5)), gid=f"peephole-{role}")
        seen = "c_{t-1}" if source == "c_prev" else "c_t"
        beside_tap = role != "input"
        label_x, label_y = ((tap - 0.15, 7.6) if beside_tap else
                            ((points[1][0] + points[2][0]) / 2, points[1][1] + 0.32))
        canvas.text(label_x, label_y, f"$p_{SYMBOL[role]} \\odot {seen}$", size=10, color=PEEP,
                    ha="right" if beside_tap else "center", gid=f"peephole-{role}-label")
    if peeps:
        canvas.text(0.35, top - 1.55, "- - peephole (into the gate's pre-activation)", size=9, color=PEEP, ha="left",
                    gid="peephole-legend")

    # gate recurrence: every gate receives the gates of step t-1
    if s.gate_recurrence:
        xs = [X[r] + 0.75 for r in GATE_ROLES if has[r]]
        canvas.arrow([(3.1, RECUR_Y), (max(xs), RECUR_Y)], color=RECUR, style="-.", head=False, gid="gate-recurrence")
        for x in xs:
            canvas.arrow([(x, RECUR_Y), (x, ROW - BOX_H / 2)], color=RECUR)
        canvas.text(3.0, RECUR_Y, "$[i, f, o]_{t-1}$ via $R_g$", size=10, color=RECUR, ha="right",
                    gid="gate-recurrence-label")
    if s.clip:
        canvas.text(21.65, top - 1.55, f"clip: z̄, ī, f̄, ō clamped to [−{s.clip:g}, {s.clip:g}]", size=9,
                    color=CHANGED, ha="right", gid="clip")


def _draw_states(canvas: _Canvas, s: CellStructure) -> None:
    for k, (name, description) in enumerate(s.extra_states):
        y = CELL_Y + 1.0 + k * 0.8
        canvas.arrow([(1.5, y), (20.6, y)], color=MUTED, width=1.0, gid=f"state-{name}")
        canvas.text(0.35, y, f"${name}_{{t-1}}$", size=11, ha="left", color=MUTED)
        canvas.text(21.65, y, f"${name}_t$", size=11, ha="right", color=MUTED)
        canvas.text(11, y + 0.28, f"state {name}: {description}", size=9, color=MUTED)


def _draw_box(canvas: _Canvas, variant, top: float) -> None:
    """A variant that does not describe its structure: one box, its states in and out."""
    states = tuple(variant.state_names)
    canvas.box(11, 6, [variant.name, "(structure not described)"], BLOCK_FILL, gid="cell", w=7, h=3)
    for k, name in enumerate(states):
        y = 7 - k * (2.0 / max(1, len(states) - 1)) if len(states) > 1 else 6
        canvas.arrow([(2.6, y), (7.5, y)], gid=f"state-{name}")
        canvas.arrow([(14.5, y), (19.4, y)])
        canvas.text(2.4, y, f"${name}_{{t-1}}$", size=12, ha="right")
        canvas.text(19.6, y, f"${name}_t$", size=12, ha="left")
    canvas.arrow([(11, 1.6), (11, 4.5)])
    canvas.text(11, 1.2, "$x_t$", size=12)


def diagram(variant, path=None) -> str:
    """An SVG drawing of ``variant``'s cell (a name or a ``Variant``); also written to ``path`` when given, as PNG if
    it ends in ``.png``, SVG otherwise. Returns the SVG text.

    Drawn from ``variant.cell_structure()``: the gates present (an absent one is marked ``= 1``), the peepholes and the
    cell state each sees, coupling, activations (red where they differ from sigma/tanh/tanh), gate recurrence,
    clip, normalisations and extra states.
    """
    from lstmcore.plugins import get_variant

    variant = get_variant(variant)
    structure = structure_of(variant)
    extra = len(structure.extra_states) if structure else 0
    notes = structure.notes if structure else ()
    top = 13.2 + 0.8 * extra
    height = top + 0.55 * len(notes)
    canvas = _Canvas(22, height)
    offset = 0.55 * len(notes)
    canvas.ax.set_ylim(-offset, top)
    title = variant.name + (f" — {variant.description}" if variant.description else "")
    canvas.text(0.35, top - 0.7, title, size=12.5, ha="left", fontweight="bold", gid="title")
    if structure is None:
        _draw_box(canvas, variant, top)
    else:
        _draw_gated(canvas, structure, top)
        _draw_states(canvas, structure)
    for k, note in enumerate(notes):
        canvas.text(0.35, -0.3 - 0.55 * k, note, size=9.5, ha="left")
    return canvas.save(path)
