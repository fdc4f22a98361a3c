"""Looking inside a cell: ``LSTM.trace`` against ``forward`` for every variant, ``lstmcore.diagram`` of every built-in,
``summary()`` totals, ``lstmcore variants --show/--diagram``, and the doctest of docs/stepping-through-a-cell.md."""
from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lstmcore
from lstmcore.cli import main as cli_main
from lstmcore.diagrams import CellStructure
from variant_names import BUILTIN_VARIANTS, GATED_VARIANTS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "lstmcore-gru" / "src"))
from lstmcore_gru import GRU  # noqa: E402  (the sample plugin: a variant that declares nothing to trace)


class TracedTanhRNN(lstmcore.Variant):
    """h' = tanh(W x + R h + b): a plugin that declares its pre-activation as traceable."""

    name = "traced-rnn"
    state_names = ("h",)

    def parameter_shapes(self, input_size, hidden_size):
        return {"W": (hidden_size, input_size), "R": (hidden_size, hidden_size), "b": (hidden_size,)}

    def forward(self, params, x, state, lengths, reverse, out):
        h = state[0].copy()
        T = x.shape[0]
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            real = np.ones((x.shape[1], 1), bool) if lengths is None else (t < lengths)[:, None]
            h = np.where(real, np.tanh(x[t] @ params["W"].T + h @ params["R"].T + params["b"]), h)
            out[t] = np.where(real, h, 0)
        return (h,), None

    def trace_quantities(self):
        return {"a": "pre-activation", **super().trace_quantities()}

    def trace(self, params, x, state, lengths, reverse):
        final, arrays = super().trace(params, x, state, lengths, reverse)
        h_before = np.concatenate([state[0][None], arrays["h"][:-1]]) if not reverse else \
            np.concatenate([arrays["h"][1:], state[0][None]])
        arrays["a"] = x @ params["W"].T + h_before @ params["R"].T + params["b"]
        if lengths is not None:
            arrays["a"][np.arange(x.shape[0])[:, None] >= lengths] = np.nan
        return final, arrays


PLUGINS = [GRU("gru"), GRU("gru-lbr", linear_before_reset=True), TracedTanhRNN()]
VARIANTS = list(lstmcore.list_variants()) + PLUGINS
LENGTHS = [7, 4, 0]


def _ids(variants):
    return [v if isinstance(v, str) else v.name for v in variants]


def _layer(variant, batch_first, dtype=np.float64, **options):
    return lstmcore.LSTM(3, 4, variant=variant, num_layers=2, bidirectional=True, batch_first=batch_first,
                         dtype=dtype, seed=3, **options)


def _data(layer, seed=0):
    rng = np.random.default_rng(seed)
    T, B = 7, len(LENGTHS)
    x = rng.normal(size=(B, T, 3) if layer.batch_first else (T, B, 3)).astype(layer.dtype)
    names = layer.cells[0].state_names
    state = tuple(rng.normal(size=(4, B, 4)).astype(layer.dtype) for _ in names)
    return x, state


# -- traces -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("variant", VARIANTS, ids=_ids(VARIANTS))
def test_trace_agrees_with_forward_and_follows_the_lengths_contract(variant, batch_first):
    layer = _layer(variant, batch_first)
    x, state = _data(layer)
    output, final = layer(x, state, LENGTHS)
    tr = layer.trace(x, state, LENGTHS)
    np.testing.assert_allclose(tr.output, output, rtol=1e-10, atol=1e-12)
    assert len(tr.final_state) == len(final)
    for traced, expected in zip(tr.final_state, final):
        np.testing.assert_allclose(traced, expected, rtol=1e-10, atol=1e-12)
    T, B, H = 7, len(LENGTHS), 4
    names = layer.cells[0].state_names
    assert len(tr.cells) == 4 and tr.directions == ("forward", "reverse")
    for cell in tr.cells:
        assert set(cell) == set(layer.cells[0].trace_quantities()) >= set(names) | {"output"}
        k, d = cell.layer, tr.directions.index(cell.direction)
        for b, length in enumerate(LENGTHS):
            seq = cell.sequence(b)
            assert all(a.shape == (T, H) for a in seq.values())
            if k == 1:  # the top layer's directions make up the output
                top = (output[b] if batch_first else output[:, b])[:, d * H:(d + 1) * H]
                np.testing.assert_allclose(seq["output"], top, rtol=1e-10, atol=1e-12)
            assert not seq["output"][length:].any()
            for n, name in enumerate(names):
                start, end = state[n][2 * k + d, b], final[n][2 * k + d, b]
                # padded steps carry the state: the last one for forward, the initial one for reverse
                carried = end if d == 0 else start
                np.testing.assert_allclose(seq[name][length:], np.broadcast_to(carried, (T - length, H)), atol=1e-12)
                np.testing.assert_allclose(seq[name][length - 1 if d == 0 else 0] if length else end, end, atol=1e-12)
            for name in set(seq) - set(names) - {"output"}:       # computed quantities: NaN where nothing ran
                assert np.isnan(seq[name][length:]).all() and np.isfinite(seq[name][:length]).all(), name


@pytest.mark.parametrize("variant", GATED_VARIANTS)
def test_builtins_trace_gates_that_reproduce_the_cell_and_output(variant):
    layer = lstmcore.LSTM(3, 5, variant=variant, dtype=np.float64, seed=1, clip=0.8)
    x = np.random.default_rng(2).normal(size=(6, 2, 3))
    cell = layer.trace(x)[0]
    spec = layer.cells[0]
    present = [g for g in "ifo" if g in spec.gate_blocks]
    assert [n for n in cell if n.endswith("_bar")] == ["z_bar"] + [f"{g}_bar" for g in present]
    ones = np.ones_like(cell["c"])
    i, f, o = (cell[g] if g in cell else ones for g in "ifo")
    c_prev = np.concatenate([np.zeros_like(cell["c"][:1]), cell["c"][:-1]])
    np.testing.assert_allclose(cell["c"], cell["z"] * i + c_prev * f, atol=1e-12)
    np.testing.assert_allclose(cell["h"], cell["hc"] * o, atol=1e-12)
    for name in ["z_bar"] + [f"{g}_bar" for g in present]:
        assert np.abs(cell[name]).max() <= 0.8 + 1e-12  # clip clamps every pre-activation
    if spec.coupled:
        np.testing.assert_allclose(cell["f"], 1 - cell["i"])
    np.testing.assert_allclose(cell["h"], layer(x)[0], atol=1e-12)


def test_float32_trace_agrees_with_the_compiled_forward():
    for name in BUILTIN_VARIANTS:
        layer = _layer(name, False, np.float32)
        x, state = _data(layer, seed=5)
        output, finals = layer(x, state, LENGTHS)
        tr = layer.trace(x, state, LENGTHS)
        np.testing.assert_allclose(tr.output, output, atol=2e-5, err_msg=name)
        for traced, final in zip(tr.final_state, finals, strict=True):
            np.testing.assert_allclose(traced, final, atol=2e-5, err_msg=name)
        assert tr[0]["output"].dtype == np.float32


def test_trace_leaves_forward_and_backward_alone():
    layer = _layer("peephole", False)
    x, state = _data(layer)
    output, _ = layer(x, state, LENGTHS)
    layer.trace(np.zeros_like(x))               # a trace between forward and backward must not replace its tape
    d_x = layer.backward(np.ones_like(output))
    fresh = _layer("peephole", False)
    fresh(x, state, LENGTHS)
    np.testing.assert_array_equal(d_x, fresh.backward(np.ones_like(output)))


def test_trace_indexing_and_bad_arguments():
    layer = lstmcore.LSTM(3, 4, variant="vanilla", num_layers=2)
    tr = layer.trace(np.zeros((5, 2, 3), np.float32))
    assert tr[1] is tr[1, 0] is tr[1, "forward"] and tr[1].layer == 1
    with pytest.raises(KeyError, match="direction must be one of"):
        tr[0, "reverse"]
    with pytest.raises(IndexError, match="layer must be an integer"):
        tr[2]
    with pytest.raises(KeyError, match="traces no 'q'"):
        tr[0]["q"]
    with pytest.raises(ValueError, match="expected input_size = 3"):
        layer.trace(np.zeros((5, 2, 4), np.float32))
    with pytest.raises(ValueError, match="lengths must lie in"):
        layer.trace(np.zeros((5, 2, 3), np.float32), lengths=[6, 1])


def test_a_plugin_trace_that_breaks_its_declaration_is_named():
    class Liar(TracedTanhRNN):
        name = "liar"

        def trace(self, params, x, state, lengths, reverse):
            final, arrays = super().trace(params, x, state, lengths, reverse)
            del arrays["a"]
            return final, arrays

    with pytest.raises(ValueError, match="variant 'liar': trace\\(\\) returned .* declares"):
        lstmcore.LSTM(2, 3, variant=Liar()).trace(np.zeros((4, 1, 2), np.float32))


def test_trace_plot_draws_every_quantity(tmp_path):
    plot = pytest.importorskip("lstmcore.plot")
    layer = _layer("fgr", True, np.float32)
    x, state = _data(layer)
    tr = layer.trace(x, state, LENGTHS)
    figure = plot.trace(tr, sequence=1, layer=1, direction="reverse", path=tmp_path / "t.png")
    titles = [ax.get_title(loc="left") for ax in figure.axes]
    for name in ("i", "f", "o", "z", "c", "h"):
        assert any(t.startswith(f"{name}: ") for t in titles), name
    assert "following cell" in titles[-1] or any("following cell" in t for t in titles)
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    gru_trace = lstmcore.LSTM(3, 2, variant=GRU("gru")).trace(np.ones((4, 1, 3), np.float32))
    assert [t for t in (ax.get_title(loc="left") for ax in plot.trace(gru_trace).axes) if t][0].startswith("h: ")
    with pytest.raises(ValueError, match="length 0"):
        plot.trace(tr, sequence=2)
    with pytest.raises(ValueError, match="sequence must be an integer"):
        plot.trace(tr, sequence=3)
    with pytest.raises(ValueError, match="cell must be an integer"):
        plot.trace(tr, cell=9)


# -- diagrams ---------------------------------------------------------------------------------------------------------
#: From the paper's table (ARCHITECTURE.md section 4), not from the code: the gates and peepholes of each built-in.
GATES = {"vanilla": "ifo", "peephole": "ifo", "coupled": "io", "nig": "fo", "nfg": "io", "nog": "if", "niaf": "ifo",
         "noaf": "ifo", "fgr": "ifo"}
PEEPHOLES = {**{name: gates for name, gates in GATES.items()}, "vanilla": ""}
ROLE = {"i": "input", "f": "forget", "o": "output"}


@pytest.mark.parametrize("name", sorted(GATES))
def test_every_builtin_diagram_names_its_gates_and_peepholes_and_no_others(name, tmp_path):
    pytest.importorskip("matplotlib")
    svg = lstmcore.diagram(name, tmp_path / f"{name}.png")
    assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    ids = set(re.findall(r'id="([^"]+)"', svg))
    for g in "ifo":
        present = g in GATES[name]
        assert (f"gate-{ROLE[g]}" in ids) == present, (name, g)
        assert (f">{ROLE[g]} gate {g}<" in svg) == present, (name, g)
        assert (f"peephole-{ROLE[g]}" in ids) == (g in PEEPHOLES[name]), (name, g)
    assert ("coupling" in ids) == (name == "coupled") and (">f = 1 − i<" in svg) == (name == "coupled")
    assert ("gate-recurrence" in ids) == (name == "fgr")
    assert (">g = identity<" in svg) == (name == "niaf") and (">h = identity<" in svg) == (name == "noaf")
    assert ("clip" in ids) is False


def test_diagram_of_options_a_described_plugin_and_an_undescribed_one(tmp_path):
    pytest.importorskip("matplotlib")
    svg = lstmcore.diagram(lstmcore.get_variant("vanilla").with_options(gate_activation="hard_sigmoid", clip=2.5))
    assert ">σ = hard_sigmoid(0.2, 0.5)<" in svg and "clamped to [−2.5, 2.5]" in svg

    class Described(TracedTanhRNN):
        name = "described"

        def cell_structure(self):
            return {"gates": [{"role": "forget", "peephole": "c_prev"}, {"role": "output"}],
                    "normalizations": ["gates", "cell"], "extra_states": [("n", "normaliser")],
                    "notes": ["h_t = o * c_t / n_t"]}

    svg = lstmcore.diagram(Described(), tmp_path / "d.svg")
    ids = set(re.findall(r'id="([^"]+)"', svg))
    assert {"gate-forget", "gate-output", "peephole-forget", "norm-gates", "norm-cell", "state-n"} <= ids
    assert "gate-input" not in ids and ">h_t = o * c_t / n_t<" in svg
    assert (tmp_path / "d.svg").read_text() == svg
    assert 'id="cell"' in lstmcore.diagram(GRU("gru")) and ">gru<" in lstmcore.diagram(GRU("gru"))

    class Bad(Described):
        def cell_structure(self):
            return {"gates": [{"role": "reset"}]}

    with pytest.raises(ValueError, match="role must be one of"):
        lstmcore.diagram(Bad())
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        CellStructure.parse({"colour": 1}, "x")
    with pytest.raises(KeyError, match="unknown variant 'nope'"):
        lstmcore.diagram("nope")


def test_cli_diagram_and_show(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert cli_main(["variants", "--diagram", "coupled", "-o", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert cli_main(["variants", "--diagram", "coupled", "-o", str(tmp_path / "c.svg")]) == 0
    assert "gate-input" in (tmp_path / "c.svg").read_text()
    capsys.readouterr()
    assert cli_main(["variants", "--diagram", "coupled"]) == 2
    assert "--diagram NAME needs -o FILE" in capsys.readouterr().err
    assert cli_main(["variants", "--show", "nope"]) == 2
    assert "unknown variant 'nope'" in capsys.readouterr().err
    assert cli_main(["variants", "--diagram", "coupled", "-o", str(tmp_path / "no" / "c.svg")]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert cli_main(["variants", "--show", "peephole", "fgr", "coupled"]) == 0
    text = capsys.readouterr().out
    # ARCHITECTURE.md's formulas: V 4N(M+N) + 7N, FGR V + 9N^2, CIFG 3N(M+N) + 5N
    assert "total: 4I·H + 4H² + 7H" in text and "total: 4I·H + 13H² + 7H" in text and "total: 3I·H + 3H² + 5H" in text
    assert "W    (4H, I)" in text and "Rg   (3H, 3H)" in text and "gate_activation = sigmoid" in text
    assert "c_t = z * i + c_{t-1} * f" in text


# -- summaries --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS, ids=_ids(VARIANTS))
def test_summary_totals_equal_parameter_count(variant):
    from lstmcore.training import SequenceModel

    layer = _layer(variant, False)
    summary = layer.summary()
    assert summary.total == layer.parameter_count()
    text = str(summary)
    assert f"Total parameters: {layer.parameter_count():,}" in text
    for key, value in layer.params.items():
        assert re.search(rf"\b{re.escape(key)}\s+{re.escape(str(value.shape))}\s+{value.size:,}\b", text), key
    assert text.count("(reverse)") == 2 and text.count("(forward)") == 2
    model = SequenceModel(3, 4, 5, variant=variant, num_layers=2, seed=0)
    assert model.summary().total == model.parameter_count() and "W_out" in str(model.summary())
    assert "(B, T, 5)" in str(model.summary())


# -- docs and import weight ------------------------------------------------------------------------------------------
def test_stepping_through_a_cell_doctest():
    result = doctest.testfile(str(REPO / "docs" / "stepping-through-a-cell.md"), module_relative=False,
                              optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


def test_import_stays_light():
    code = ("import sys, lstmcore, lstmcore.tracing, lstmcore.diagrams, lstmcore.summaries; "
            "print(sorted(m for m in ('matplotlib', 'torch', 'optuna') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd="/").stdout == "[]\n"


def test_trace_jsb_example_trains_traces_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    from shared_data import shared_data_dir

    data = shared_data_dir("jsb-chorales", "*.json")
    if data is None:
        pytest.skip("the JSB Chorales data is not beside the checkout")
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import trace_jsb
    finally:
        sys.path.remove(str(REPO / "examples"))
    tr, figure = trace_jsb.main(["--data", str(data), "--epochs", "1", "--hidden", "6", "--steps", "10",
                                 "--out", str(tmp_path / "jsb.png")])
    assert tr[0]["f"].shape == (1, 10, 6) and (tmp_path / "jsb.png").read_bytes()[:4] == b"\x89PNG"
