"""The variant registry: built-ins, in-process plugins (pluggy) and real entry points, with tolerant and strict loading."""
import sys
import textwrap
import types

import numpy as np
import pytest

import lstmcore
from lstmcore.plugins import GROUPS, PluginError, PluginWarning, Registry, get_group

ODYSSEY = ["peephole", "nig", "nfg", "nog", "niaf", "noaf", "vanilla", "coupled", "fgr"]


@pytest.fixture(autouse=True)
def _no_plugin_env(monkeypatch):
    monkeypatch.delenv("LSTMCORE_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("LSTMCORE_DISABLE_PLUGINS", raising=False)


def _plugin(name, *variants, raises=None, marked=True):
    """A throw-away plugin module whose hook registers ``variants`` (or raises ``raises``)."""
    module = types.ModuleType(name)

    def register_variants(register):
        if raises is not None:
            raise raises
        for variant in variants:
            register(variant)

    module.register_variants = lstmcore.hookimpl(register_variants) if marked else register_variants
    return module


def _cell(name, **spec):
    return lstmcore.GatedCell(name, description=f"test cell {name}", **spec)


# ---------------------------------------------------------------------------------------------------------------------
# built-ins and the public functions
# ---------------------------------------------------------------------------------------------------------------------
def test_builtins_are_registered_sorted_with_their_source():
    names = lstmcore.list_variants()
    assert names == sorted(names)
    assert set(ODYSSEY) <= set(names)
    for name in ODYSSEY:
        assert lstmcore.plugins.registry.source(name) == "built-in"
        assert lstmcore.get_variant(name).name == name


def test_unknown_variant_is_a_key_error_listing_the_names():
    with pytest.raises(KeyError) as info:
        lstmcore.get_variant("no-such-cell")
    message = str(info.value)
    assert "no-such-cell" in message and all(name in message for name in ODYSSEY)
    with pytest.raises(KeyError, match="vanilla"):
        lstmcore.LSTM(3, 4, variant="no-such-cell")


def test_odyssey_group_is_the_paper_order_with_v_first():
    assert get_group("odyssey") == ODYSSEY
    assert set(GROUPS["odyssey"]) <= set(lstmcore.list_variants())
    with pytest.raises(KeyError, match="odyssey"):
        get_group("nope")


def _formula(name, M, N):
    v = 4 * N * (M + N) + 7 * N
    three = 3 * N * (M + N) + 5 * N
    return {"peephole": v, "nig": three, "nfg": three, "nog": three, "niaf": v, "noaf": v, "coupled": three,
            "vanilla": 4 * N * (M + N) + 4 * N, "fgr": v + 9 * N * N}[name]


@pytest.mark.parametrize("name", ODYSSEY)
@pytest.mark.parametrize("M,N", [(1, 1), (88, 100), (7, 3)])
def test_parameter_counts_are_the_papers_formulas(name, M, N):
    variant = lstmcore.get_variant(name)
    assert variant.parameter_count(M, N) == _formula(name, M, N)
    assert lstmcore.LSTM(M, N, variant=name).parameter_count() == _formula(name, M, N)


# ---------------------------------------------------------------------------------------------------------------------
# in-process plugins through pluggy
# ---------------------------------------------------------------------------------------------------------------------
def test_in_process_plugin_adds_a_variant_that_runs_in_the_layer():
    registry = Registry()
    source = registry.register_plugin(_plugin("hardsig_plugin", _cell("hardsig", peepholes=True,
                                                                        gate_activation="hard_sigmoid")))
    assert source == "hardsig_plugin"
    assert "hardsig" in registry.names() and registry.source("hardsig") == "hardsig_plugin"
    layer = lstmcore.LSTM(3, 4, variant=registry.get("hardsig"), seed=0)
    output, (h_n, c_n) = layer(np.ones((5, 2, 3), np.float32))
    assert output.shape == (5, 2, 4) and np.isfinite(output).all()
    registry.unregister_plugin(source)
    assert "hardsig" not in registry.names()


def test_plugin_registered_before_loading_is_collected_on_first_use():
    registry = Registry()
    registry.register_plugin(_plugin("early", _cell("early-cell")))
    assert registry._variants is None  # nothing loaded yet: loading is lazy
    assert registry.source("early-cell") == "early"
    registry.reload()
    assert "early-cell" in registry.names()  # in-process plugins survive reload


def test_duplicate_name_is_reported_naming_both_sources_and_skipped():
    registry = Registry()
    with pytest.warns(PluginWarning, match=r"'dup_plugin'.*'vanilla'.*'built-in'"):
        registry.register_plugin(_plugin("dup_plugin", _cell("vanilla", peepholes=True), _cell("fine")))
        registry.names()
    assert registry.source("vanilla") == "built-in" and registry.get("vanilla").peepholes is False
    assert registry.source("fine") == "dup_plugin"  # the plugin's other variant is kept


def test_hook_that_raises_is_reported_and_the_others_load():
    registry = Registry()
    registry.register_plugin(_plugin("broken", raises=RuntimeError("boom")))
    registry.register_plugin(_plugin("working", _cell("works")))
    with pytest.warns(PluginWarning, match=r"'broken' raised in register_variants: RuntimeError: boom"):
        names = registry.names()
    assert "works" in names and set(ODYSSEY) <= set(names)
    assert any("boom" in str(failure) for failure in registry.failures)


def test_registering_something_that_is_not_a_variant_is_reported():
    registry = Registry()
    registry.register_plugin(_plugin("junk", "not a variant", _cell("ok-cell")))
    with pytest.warns(PluginWarning, match="not a lstmcore.Variant"):
        names = registry.names()
    assert "ok-cell" in names


def test_unmarked_hook_is_reported():
    registry = Registry()
    registry.register_plugin(_plugin("unmarked", _cell("never"), marked=False))
    with pytest.warns(PluginWarning, match="without the @lstmcore.hookimpl marker"):
        names = registry.names()
    assert "never" not in names


def test_hook_with_a_wrong_signature_is_reported():
    module = types.ModuleType("wrong_signature")

    @lstmcore.hookimpl
    def register_variants(register, something_else):
        register(_cell("never"))

    module.register_variants = register_variants
    registry = Registry()
    registry.register_plugin(module)
    with pytest.warns(PluginWarning, match="not a valid plugin"):
        assert "never" not in registry.names()


def test_strict_mode_turns_reports_into_errors(monkeypatch):
    monkeypatch.setenv("LSTMCORE_STRICT_PLUGINS", "1")
    registry = Registry()
    registry.register_plugin(_plugin("broken", raises=ValueError("bad plugin")))
    with pytest.raises(PluginError, match="bad plugin"):
        registry.names()


@pytest.mark.parametrize("plugin,name", [(None, None), (types.ModuleType("ok"), 5), (types.ModuleType("ok"), "")])
def test_register_plugin_refuses_bad_arguments(plugin, name):
    with pytest.raises(TypeError, match="plugin"):
        Registry().register_plugin(plugin, name=name)


def test_numerical_gradient_refuses_an_array_it_cannot_perturb_in_place():
    from lstmcore.testing import numerical_gradient

    with pytest.raises(ValueError, match="in place"):
        numerical_gradient(lambda: 0.0, np.zeros((3, 4)).T)


def test_the_same_plugin_name_twice_is_refused():
    registry = Registry()
    registry.register_plugin(_plugin("twice", _cell("a-cell")))
    with pytest.raises(ValueError, match="twice"):
        registry.register_plugin(_plugin("twice", _cell("b-cell")))


# ---------------------------------------------------------------------------------------------------------------------
# real entry points: a distribution installed into a folder on sys.path
# ---------------------------------------------------------------------------------------------------------------------
def _install_distribution(site, dist, version, module, source, entry_point=None):
    """Write ``module.py`` and a ``.dist-info`` declaring it in the ``lstmcore`` entry-point group, as pip would."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[lstmcore]\n{entry_point or module} = {module}\n")


GOOD_PLUGIN = """
    import lstmcore

    @lstmcore.hookimpl
    def register_variants(register):
        register(lstmcore.GatedCell("ep-softsign", peepholes=True, input_activation="softsign"))
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("lstmcore_test_ep_")]:
        del sys.modules[name]


def test_entry_point_plugins_are_discovered_with_their_distribution(site):
    _install_distribution(site, "lstmcore-test-good", "1.2.3", "lstmcore_test_ep_good", GOOD_PLUGIN)
    registry = Registry()
    assert "ep-softsign" in registry.names()
    assert registry.source("ep-softsign") == "lstmcore-test-good 1.2.3"
    assert registry.get("ep-softsign").input_activation.name == "softsign"


def test_entry_point_that_fails_to_import_is_reported_with_its_distribution(site):
    _install_distribution(site, "lstmcore-test-good", "1.0", "lstmcore_test_ep_good", GOOD_PLUGIN)
    _install_distribution(site, "lstmcore-test-broken", "0.1", "lstmcore_test_ep_broken",
                          "import a_module_that_does_not_exist\n")
    registry = Registry()
    with pytest.warns(PluginWarning, match=r"'lstmcore-test-broken 0.1'.*failed to import.*a_module_that_does_not"):
        names = registry.names()
    assert "ep-softsign" in names and set(ODYSSEY) <= set(names)


def test_entry_point_duplicate_of_a_builtin_names_both(site):
    source = GOOD_PLUGIN.replace('"ep-softsign"', '"peephole"')
    _install_distribution(site, "lstmcore-test-dup", "2.0", "lstmcore_test_ep_dup", source)
    registry = Registry()
    with pytest.warns(PluginWarning, match=r"'lstmcore-test-dup 2.0'.*'peephole'.*'built-in'"):
        assert registry.source("peephole") == "built-in"


def test_strict_mode_with_a_broken_entry_point(site, monkeypatch):
    _install_distribution(site, "lstmcore-test-broken", "0.1", "lstmcore_test_ep_broken", "raise ImportError('x')\n")
    monkeypatch.setenv("LSTMCORE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="lstmcore-test-broken"):
        Registry().names()


def test_warnings_point_at_the_plugin_not_at_lstmcore(site):
    """The warning's file, line and module are the plugin's, so the user sees whose code to fix (and can filter it)."""
    _install_distribution(site, "lstmcore-test-broken", "0.1", "lstmcore_test_ep_broken",
                          "X = 1\nimport a_module_that_does_not_exist\n")
    _install_distribution(site, "lstmcore-test-odd", "0.2", "lstmcore_test_ep_odd", """
        import lstmcore

        @lstmcore.hookimpl
        def register_variants(register):
            register(lstmcore.GatedCell("ep-fine", peepholes=True))
            register("not a variant")
    """)
    _install_distribution(site, "lstmcore-test-boom", "0.3", "lstmcore_test_ep_boom", """
        import lstmcore

        @lstmcore.hookimpl
        def register_variants(register):
            raise RuntimeError("boom")
    """)
    with pytest.warns(PluginWarning) as caught:
        names = Registry().names()
    assert "ep-fine" in names
    by_source = {str(w.message).split("'")[1]: w for w in caught}
    assert set(by_source) == {"lstmcore-test-broken 0.1", "lstmcore-test-odd 0.2", "lstmcore-test-boom 0.3"}
    for source, line in [("lstmcore-test-broken 0.1", 2), ("lstmcore-test-odd 0.2", 7), ("lstmcore-test-boom 0.3", 6)]:
        module = "lstmcore_test_ep_" + source.split("-")[2].split(" ")[0]
        assert (by_source[source].filename, by_source[source].lineno) == (str(site / f"{module}.py"), line)
    import lstmcore.plugins

    assert not any(w.filename.startswith(str(__import__("pathlib").Path(lstmcore.plugins.__file__).parent))
                   for w in caught)
    with __import__("warnings").catch_warnings():  # a filter on the plugin's module silences it alone
        __import__("warnings").filterwarnings("error")
        __import__("warnings").filterwarnings("ignore", module="lstmcore_test_ep_")
        Registry().names()


def test_strict_mode_says_the_plugin_failed_not_that_it_is_skipped(site, monkeypatch):
    _install_distribution(site, "lstmcore-test-broken", "0.1", "lstmcore_test_ep_broken", "raise ImportError('x')\n")
    monkeypatch.setenv("LSTMCORE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError) as info:
        Registry().names()
    message = str(info.value)
    assert "failed to import" in message and "LSTMCORE_STRICT_PLUGINS=1" in message
    assert "skipped" not in message and "ignored" not in message


def test_lstmcore_variants_shows_a_failed_plugin_and_exits_non_zero(site):
    import os
    import subprocess

    _install_distribution(site, "lstmcore-test-broken", "0.1", "lstmcore_test_ep_broken", "raise ImportError('x')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("LSTMCORE_STRICT_PLUGINS", None)
    done = subprocess.run([sys.executable, "-m", "lstmcore", "variants"], capture_output=True, text=True, env=env,
                          cwd="/")
    assert done.returncode == 1
    row = [line for line in done.stdout.splitlines() if "lstmcore-test-broken 0.1" in line]
    assert len(row) == 1 and row[0].startswith("(failed)") and "failed to import: ImportError: x" in row[0]
    assert "peephole" in done.stdout and "1 plugin problem" in done.stderr and "Traceback" not in done.stderr
    env["LSTMCORE_STRICT_PLUGINS"] = "1"
    strict = subprocess.run([sys.executable, "-m", "lstmcore", "variants"], capture_output=True, text=True, env=env,
                            cwd="/")
    assert strict.returncode == 2 and strict.stderr.count("\n") == 1 and "failed to import" in strict.stderr


def test_disabled_mode_loads_only_the_builtins(site, monkeypatch):
    _install_distribution(site, "lstmcore-test-good", "1.0", "lstmcore_test_ep_good", GOOD_PLUGIN)
    _install_distribution(site, "lstmcore-test-broken", "0.1", "lstmcore_test_ep_broken", "raise ImportError('x')\n")
    monkeypatch.setenv("LSTMCORE_DISABLE_PLUGINS", "1")
    registry = Registry()
    names = registry.names()
    assert "ep-softsign" not in names and set(ODYSSEY) <= set(names)
    assert {registry.source(n) for n in names} == {"built-in"}
    assert not registry.failures
    assert "lstmcore_test_ep_broken" not in sys.modules  # not even imported


def test_entry_points_load_once_lazily(site):
    counter = site / "calls.txt"
    source = GOOD_PLUGIN.replace("def register_variants(register):",
                                 f"def register_variants(register):\n        open({str(counter)!r}, 'a').write('x')")
    _install_distribution(site, "lstmcore-test-count", "1.0", "lstmcore_test_ep_count", source)
    registry = Registry()
    assert not counter.exists()  # creating the registry loads nothing
    for _ in range(3):
        registry.names()
        registry.get("ep-softsign")
    assert counter.read_text() == "x"
    registry.reload()
    registry.names()
    assert counter.read_text() == "xx"
