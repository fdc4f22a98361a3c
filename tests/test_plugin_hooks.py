"""The group and dataset hooks (``register_groups``, ``register_datasets``) beside ``register_variants``: built-ins
registered through them, throw-away plugins adding, breaking and clashing, and ``lstmcore plugins`` listing it all."""
import inspect
import re
import types
from pathlib import Path

import numpy as np
import pytest

import lstmcore
from lstmcore import hookspecs
from lstmcore.cli import main
from lstmcore.datasets import Dataset, from_sequences, list_datasets, load_dataset
from lstmcore.plugins import BUILTIN_SOURCE, PluginWarning, Registry, registry

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


@pytest.fixture(autouse=True)
def _no_plugin_env(monkeypatch):
    monkeypatch.delenv("LSTMCORE_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("LSTMCORE_DISABLE_PLUGINS", raising=False)


def ramp(n=20, seed=0):
    """A throw-away dataset: predict each sequence's mean."""
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(int(rng.integers(2, 6)), 1)) for _ in range(n)]
    return from_sequences(xs, [x.mean(axis=0) for x in xs], output="linear", seed=seed, name="ramp")


def _plugin(name, groups=(), datasets=(), raises=None):
    """A throw-away plugin module: ``groups`` and ``datasets`` are the argument tuples of its register calls."""
    module = types.ModuleType(name)

    @lstmcore.hookimpl
    def register_groups(register):
        if raises is not None:
            raise raises
        for args in groups:
            register(*args)

    @lstmcore.hookimpl
    def register_datasets(register):
        for args in datasets:
            register(*args)

    module.register_groups, module.register_datasets = register_groups, register_datasets
    return module


@pytest.fixture
def in_default_registry():
    """Add throw-away plugins to the default registry for one test; they are removed afterwards."""
    added = []

    def add(plugin):
        added.append(registry.register_plugin(plugin))
        return plugin

    yield add
    for name in added:
        registry.unregister_plugin(name)


def test_builtins_come_through_the_hooks():
    tables = Registry().tables()
    assert tables["group"]["odyssey"].source == BUILTIN_SOURCE
    assert tables["group"]["odyssey"].value[0] == "peephole"
    assert {name: r.source for name, r in tables["dataset"].items()} == {
        "adding": BUILTIN_SOURCE, "copy": BUILTIN_SOURCE, "jsb_chorales": BUILTIN_SOURCE,
        "temporal_order": BUILTIN_SOURCE}
    assert list_datasets() == ["adding", "copy", "jsb_chorales", "temporal_order"]


def test_a_plugin_group_and_dataset_are_used_everywhere(in_default_registry, tmp_path):
    in_default_registry(_plugin("toy_plugin", groups=[("toys", ["vanilla", "coupled"], "two cells")],
                                datasets=[("ramp", ramp)]))
    assert lstmcore.get_group("toys") == ["vanilla", "coupled"] and "toys" in lstmcore.GROUPS
    assert registry.source("ramp", "dataset") == "toy_plugin"
    data = load_dataset("ramp", n=30, seed=1)
    assert isinstance(data, Dataset) and data.name == "ramp"

    from lstmcore.ablation.config import StudyConfig, resolve_variants
    from lstmcore.ablation.trial import check_dataset, dataset_loader

    assert resolve_variants("toys,peephole") == ["vanilla", "coupled", "peephole"]
    assert dataset_loader("ramp") is ramp
    assert isinstance(check_dataset("ramp", {"n": 24}), Dataset)
    config = StudyConfig.from_tables({"study": {"variants": "toys", "dataset": "ramp", "trials": 1}})
    assert config.variants == ["vanilla", "coupled"]


def test_the_module_function_shortcut_still_works(tmp_path, monkeypatch):
    (tmp_path / "my_data.py").write_text("from test_plugin_hooks import ramp\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from lstmcore.ablation.trial import check_dataset

    assert check_dataset("my_data:ramp", {"n": 24}).name == "ramp"


@pytest.mark.parametrize("groups, datasets, problem", [
    ([("", ["vanilla"])], [], "a group named ''"),
    ([("Bad Name", ["vanilla"])], [], "lower-case"),
    ([("empty", [])], [], "not a non-empty list of variant names"),
    ([("one-string", "vanilla")], [], "not a non-empty list of variant names"),
    ([("vanilla", ["peephole"])], [], "which is the name of a variant by 'built-in'"),
    ([("odyssey", ["peephole"])], [], "group 'odyssey', which is already registered by 'built-in'"),
    ([("toomany", ["a"], "d", "extra")], [], "called register of register_groups wrongly"),
    ([], [("pkg:fn", ramp)], "':' marks the package.module:function shortcut"),
    ([], [("not-callable", 42)], "which is not callable"),
    ([], [("adding", ramp)], "dataset 'adding', which is already registered by 'built-in'"),
])
def test_bad_registrations_are_reported_and_skipped(groups, datasets, problem):
    registry_ = Registry()
    registry_.register_plugin(_plugin("bad_plugin", groups=groups + [("fine-group", ["vanilla"])],
                                      datasets=datasets + [("fine-data", ramp)]))
    with pytest.warns(PluginWarning, match=re.escape(problem)):
        tables = registry_.tables()
    assert "fine-group" in tables["group"] and "fine-data" in tables["dataset"]  # the rest of the plugin loads
    assert tables["group"]["odyssey"].source == BUILTIN_SOURCE and tables["dataset"]["adding"].value is not ramp
    assert any(problem in str(failure) for failure in registry_.failures)


def test_a_hook_that_raises_is_reported_and_its_other_hooks_still_count():
    registry_ = Registry()
    registry_.register_plugin(_plugin("half_broken", raises=RuntimeError("no groups today"),
                                      datasets=[("fine-data", ramp)]))
    with pytest.warns(PluginWarning, match="'half_broken' raised in register_groups: RuntimeError: no groups today"):
        tables = registry_.tables()
    assert "fine-data" in tables["dataset"]


def test_unknown_group_and_dataset_list_the_known_ones():
    with pytest.raises(KeyError, match="unknown variant group 'nope'; known groups: .*odyssey"):
        lstmcore.get_group("nope")
    with pytest.raises(KeyError, match="unknown dataset 'nope'; known: adding, copy, jsb_chorales, temporal_order"):
        load_dataset("nope")


def test_lstmcore_plugins_lists_what_each_plugin_contributed(in_default_registry, capsys):
    in_default_registry(_plugin("toy_plugin", groups=[("toys", ["vanilla"])], datasets=[("ramp", ramp)]))
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    blocks = {block.splitlines()[0]: block for block in re.split(r"\n(?=\S)", out.strip())}
    assert "odyssey" in blocks[BUILTIN_SOURCE] and "jsb_chorales" in blocks[BUILTIN_SOURCE]
    assert "vanilla, peephole" in blocks[BUILTIN_SOURCE]
    toy = blocks["toy_plugin"]
    assert re.search(r"groups +toys", toy) and re.search(r"datasets +ramp", toy) and "variants" not in toy


def test_lstmcore_plugins_shows_a_broken_plugin_and_exits_1(in_default_registry, capsys):
    with pytest.warns(PluginWarning):
        in_default_registry(_plugin("broken_plugin", raises=ValueError("bad")))
        status = main(["plugins"])
    captured = capsys.readouterr()
    assert status == 1 and "(failed)" in captured.out and "broken_plugin" in captured.out
    assert "1 plugin problem(s)" in captured.err


def test_every_hook_has_a_docstring_with_an_example_and_a_section_in_the_docs():
    hooks = [name for name, value in vars(hookspecs).items() if name.startswith("register_") and callable(value)]
    assert set(hooks) >= {"register_variants", "register_groups", "register_datasets"}
    text = DOCS.read_text(encoding="utf-8")
    for name in hooks:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "Example" in doc and "@lstmcore.hookimpl" in doc and f"def {name}(register)" in doc, name
        assert f"`{name}(register)`" in text, f"docs/plugins.md does not document {name}"


def test_the_docs_example_registers_its_group_and_dataset():
    from test_plugin_docs import _doc_module

    module = _doc_module("def register_datasets(register)")
    registry_ = Registry()
    registry_.register_plugin(module, name="my-cells")
    assert registry_.group("gates") == ["peephole", "nig", "nfg", "nog"]
    data = registry_.dataset("running-sum")(n=30, seed=2)
    assert isinstance(data, Dataset) and data.n_inputs == 1 and data.per_step
    assert registry_.contributions()["my-cells"] == {"variant": [], "group": ["gates"], "dataset": ["running-sum"]}
