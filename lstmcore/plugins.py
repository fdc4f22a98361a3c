"""The registry: a pluggy plugin manager that loads the built-ins, then the ``lstmcore`` entry points, and collects
what their hooks register: variants (``register_variants``), groups of variants (``register_groups``) and datasets
(``register_datasets``), each kind checked the same way.

Loading is lazy (on first use) and tolerant: a plugin that fails to import, raises in its hook, registers something that
is not a ``Variant`` (a group, a dataset loader) or takes a name already registered is reported with a warning naming
its distribution and skipped.
``LSTMCORE_STRICT_PLUGINS=1`` turns those reports into ``PluginError``; ``LSTMCORE_DISABLE_PLUGINS=1`` loads built-ins only.
``registry.failures`` lists them (``PluginFailure``); ``lstmcore variants`` shows one row each and exits with 1.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import os
import re
import threading
import traceback
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pluggy

from lstmcore import hookspecs
from lstmcore.variant import Variant

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
BUILTIN_SOURCE = "built-in"


class PluginError(RuntimeError):
    """A plugin could not be loaded (raised in strict mode; a warning otherwise)."""


class PluginWarning(UserWarning):
    """A plugin was skipped; the message names it and says why. The warning points at the plugin's code (its file and
    line, its module for warning filters), not at lstmcore."""


@dataclass(frozen=True)
class PluginFailure:
    """A plugin (or one of its registrations) that could not be loaded: ``source`` is its distribution and version
    (or its in-process name), ``problem`` what went wrong, ``consequence`` what tolerant loading did about it."""

    source: str
    problem: str
    consequence: str = "it is skipped"
    filename: str = "<unknown>"
    lineno: int = 0
    module: str | None = None

    def __str__(self) -> str:
        return f"lstmcore plugin {self.source!r} {self.problem}; {self.consequence}"

    @property
    def strict_message(self) -> str:
        return (f"lstmcore plugin {self.source!r} {self.problem} (LSTMCORE_STRICT_PLUGINS=1: a plugin that fails "
                f"to load is an error; unset it to skip the plugin with a warning)")


_NOT_THE_PLUGIN = (os.path.dirname(os.path.abspath(__file__)) + os.sep, os.path.dirname(pluggy.__file__) + os.sep,
                   os.path.dirname(importlib.__file__) + os.sep, "<frozen ")


def _plugin_location(module_name: str | None, error: BaseException | None = None, function=None,
                     frame_summary=None) -> dict:
    """Where a warning about a plugin should point: the deepest frame of ``error``'s traceback in the plugin's
    package, else the place given (a registration call, the hook function), else the plugin's module file."""
    top = (module_name or "").split(".")[0]
    if error is not None:
        best = None
        for frame, lineno in traceback.walk_tb(error.__traceback__):
            name = frame.f_globals.get("__name__", "")
            in_plugin = top and (name == top or name.startswith(top + "."))
            if in_plugin or (best is None and not frame.f_code.co_filename.startswith(_NOT_THE_PLUGIN)):
                best = (frame.f_code.co_filename, lineno)
        if isinstance(error, SyntaxError) and error.filename:  # the plugin's own file is not in the traceback
            best = (error.filename, error.lineno or 0)
        if best is not None:
            return {"filename": best[0], "lineno": best[1], "module": module_name}
    if frame_summary is not None:
        return {"filename": frame_summary.filename, "lineno": frame_summary.lineno or 0, "module": module_name}
    code = getattr(function, "__code__", None)
    if code is not None:
        return {"filename": code.co_filename, "lineno": code.co_firstlineno, "module": module_name}
    try:
        spec = importlib.util.find_spec(module_name) if module_name else None
    except (ImportError, ValueError):
        spec = None
    origin = getattr(spec, "origin", None)
    return {"filename": origin or module_name or "<unknown>", "lineno": 1 if origin else 0, "module": module_name}


@dataclass(frozen=True)
class Registration:
    """One registered thing (a ``Variant``, a group's tuple of variant names, a dataset loader) and its source."""

    value: object
    source: str  # "built-in" or "<distribution> <version>"
    description: str = ""

    @property
    def variant(self) -> Variant:
        return self.value


_NAME_RE = re.compile(r"^[a-z][a-z0-9_\-]*$")


def _variant_entry(variant):
    """``register(variant)`` of ``register_variants``: (name, value, description) or the problem."""
    if not isinstance(variant, Variant):
        return f"registered {variant!r}, which is not a lstmcore.Variant"
    name = getattr(variant, "name", None)
    if not isinstance(name, str) or not name:
        return "registered a variant without a name"
    return name, variant, variant.description


def _group_entry(name, variants, description=""):
    """``register(name, variants, description="")`` of ``register_groups``."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        return f"registered a group named {name!r}; a name is lower-case letters, digits, '_' or '-'"
    if isinstance(variants, str) or not all(isinstance(v, str) and v for v in (variants or ())) or not variants:
        return f"registered group {name!r} with {variants!r}, not a non-empty list of variant names"
    return name, tuple(variants), str(description)


def _dataset_entry(name, loader):
    """``register(name, loader)`` of ``register_datasets``."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        return (f"registered a dataset named {name!r}; a name is lower-case letters, digits, '_' or '-' (':' marks "
                f"the package.module:function shortcut)")
    if not callable(loader):
        return f"registered dataset {name!r} with {loader!r}, which is not callable"
    return name, loader, (inspect.getdoc(loader) or "").split("\n")[0]


@dataclass(frozen=True)
class Kind:
    """What one registration hook collects: ``entry`` turns the arguments of its ``register`` call into
    ``(name, value, description)``, or says what is wrong with them."""

    hook: str
    noun: str
    entry: Callable


KINDS = (Kind("register_variants", "variant", _variant_entry), Kind("register_groups", "group", _group_entry),
         Kind("register_datasets", "dataset", _dataset_entry))


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


class Registry:
    """What the plugins registered: variants, groups and datasets by name. ``lstmcore.list_variants``,
    ``lstmcore.get_variant``, ``lstmcore.get_group`` and ``lstmcore.datasets.load_dataset`` use the default one."""

    def __init__(self):
        self._lock = threading.RLock()
        self._tables: dict[str, dict[str, Registration]] | None = None  # kind's noun -> name -> registration
        self.plugin_manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.plugin_manager.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self._loaded_sources: set[str] = set()
        self._in_process: dict[str, object] = {}

    @property
    def _variants(self) -> dict[str, Registration] | None:
        return None if self._tables is None else self._tables["variant"]

    # -- loading ----------------------------------------------------------------------------------------------------
    def _report(self, failure: PluginFailure) -> None:
        self.failures.append(failure)
        if _env_flag("LSTMCORE_STRICT_PLUGINS"):
            raise PluginError(failure.strict_message)
        # attributed to the plugin: its file and line, and its module for warning filters
        warnings.warn_explicit(str(failure), PluginWarning, failure.filename, failure.lineno,
                               module=failure.module or failure.source)

    def _collect(self, plugin, source: str, tables: dict[str, dict[str, Registration]],
                 pluggy_name: str | None = None) -> None:
        """Register one plugin with pluggy, call each of its hooks and add what they register."""
        pm = self.plugin_manager
        module_name = getattr(plugin, "__name__", None) or type(plugin).__module__
        pluggy_name = pluggy_name or source
        if pm.get_plugin(pluggy_name) is None:
            try:
                pm.register(plugin, name=pluggy_name)
            except Exception as exc:  # pluggy.PluginValidationError (wrong hook signature), or already registered
                self._report(PluginFailure(source, f"is not a valid plugin: {type(exc).__name__}: {exc}",
                                           **_plugin_location(module_name)))
                return
        for kind in KINDS:
            self._collect_kind(plugin, source, module_name, kind, tables)

    def _collect_kind(self, plugin, source: str, module_name: str, kind: Kind, tables) -> None:
        hook = getattr(plugin, kind.hook, None)

        def report(problem, consequence="it is skipped", **where):
            self._report(PluginFailure(source, problem, consequence,
                                       **_plugin_location(module_name, function=hook, **where)))

        impls = [impl for impl in getattr(self.plugin_manager.hook, kind.hook).get_hookimpls()
                 if impl.plugin is plugin]
        if not impls:
            if callable(hook):
                report(f"defines {kind.hook} without the @lstmcore.hookimpl marker", "it is ignored")
            return
        found: list[tuple[tuple, dict, traceback.FrameSummary]] = []

        def register(*args, **kwargs):
            found.append((args, kwargs, traceback.extract_stack(limit=2)[0]))  # where the plugin called register

        for impl in impls:
            try:
                impl.function(register=register)
            except Exception as exc:  # a plugin's bug must not take the others down
                report(f"raised in {kind.hook}: {type(exc).__name__}: {exc}", error=exc)
                return
        table = tables[kind.noun]
        for args, kwargs, called_at in found:
            try:
                entry = kind.entry(*args, **kwargs)
            except TypeError as exc:  # register called with the wrong arguments
                entry = f"called register of {kind.hook} wrongly: {exc}"
            if isinstance(entry, str):
                report(entry, frame_summary=called_at)
                continue
            name, value, description = entry
            clash = table.get(name) or (tables["group"].get(name) if kind.noun == "variant" else
                                        tables["variant"].get(name) if kind.noun == "group" else None)
            if clash is not None:
                taken = "already registered" if name in table else "the name of a " + \
                    ("group" if kind.noun == "variant" else "variant")
                report(f"registered {kind.noun} {name!r}, which is {taken} by {clash.source!r}",
                       "the second registration is skipped", frame_summary=called_at)
                continue
            table[name] = Registration(value, source, description)

    def _entry_points(self):
        """The ``lstmcore`` entry points, once per distribution and name (duplicate discovery happens)."""
        seen, result = set(), []
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            source = f"{dist.name} {dist.version}" if dist is not None else ep.value
            key = (dist.name if dist is not None else None, ep.name, ep.value)
            if key not in seen:
                seen.add(key)
                result.append((ep, source))
        return result

    def load(self) -> dict[str, Registration]:
        """Load once: the built-ins, then the entry points, then plugins given to ``register_plugin``. Returns the
        variants (``tables()`` has every kind)."""
        return self.tables()["variant"]

    def tables(self) -> dict[str, dict[str, Registration]]:
        """Everything registered, loaded once: ``{"variant": {...}, "group": {...}, "dataset": {...}}``."""
        with self._lock:
            if self._tables is not None:
                return self._tables
            tables: dict[str, dict[str, Registration]] = {kind.noun: {} for kind in KINDS}
            self.failures = []
            import lstmcore.datasets as builtin_datasets
            import lstmcore.variants as builtin_variants  # the built-ins use the same hooks as any plugin

            self._collect(builtin_variants, BUILTIN_SOURCE, tables)
            self._collect(builtin_datasets, BUILTIN_SOURCE, tables, pluggy_name=f"{BUILTIN_SOURCE} datasets")
            self._loaded_sources = {BUILTIN_SOURCE}
            if not _env_flag("LSTMCORE_DISABLE_PLUGINS"):
                for ep, source in self._entry_points():
                    try:
                        plugin = ep.load()
                    except Exception as exc:
                        self._report(PluginFailure(
                            source, f"(entry point {ep.name} = {ep.value}) failed to import: "
                                    f"{type(exc).__name__}: {exc}",
                            **_plugin_location(ep.value.partition(":")[0].strip(), error=exc)))
                        continue
                    self._loaded_sources.add(source)
                    self._collect(plugin, source, tables)
            for source, plugin in list(self._in_process.items()):
                self._collect(plugin, source, tables)
            self._tables = tables
            return tables

    def register_plugin(self, plugin, name: str | None = None) -> str:
        """Add a plugin object (a module or any object with ``@lstmcore.hookimpl`` hooks) in this process, without an
        entry point; returns its name. What it registers is added now if the registry is loaded, with the same checks
        as an entry point's. ``unregister_plugin(name)`` removes it."""
        if plugin is None:
            raise TypeError("register_plugin needs a plugin object (a module or an object with register_variants)")
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"a plugin's name must be a non-empty string, got {name!r}")
        with self._lock:
            source = name or getattr(plugin, "__name__", None) or f"plugin-{id(plugin):x}"
            if source in self._in_process or source in self._loaded_sources:
                raise ValueError(f"a plugin named {source!r} is already registered")
            self._in_process[source] = plugin
            if self._tables is not None:
                self._collect(plugin, source, self._tables)
            return source

    def unregister_plugin(self, name: str) -> None:
        """Remove a plugin added by ``register_plugin`` and everything it registered."""
        with self._lock:
            if name not in self._in_process:
                raise KeyError(f"no plugin named {name!r} was added with register_plugin")
            del self._in_process[name]
            if self.plugin_manager.get_plugin(name) is not None:
                self.plugin_manager.unregister(name=name)
            if self._tables is not None:
                self._tables = {noun: {k: r for k, r in table.items() if r.source != name}
                                for noun, table in self._tables.items()}

    def reload(self) -> None:
        """Forget what was loaded; the next use loads again (for tests and after installing a plugin).
        Plugins added with ``register_plugin`` stay."""
        with self._lock:
            for name, _ in list(self.plugin_manager.list_name_plugin()):
                self.plugin_manager.unregister(name=name)
            self._tables = None
            self._loaded_sources = set()

    # -- queries ----------------------------------------------------------------------------------------------------
    def names(self, kind: str = "variant") -> list[str]:
        return sorted(self.tables()[kind])

    def _lookup(self, kind: str, name) -> Registration:
        table = self.tables()[kind]
        try:
            return table[name]
        except (KeyError, TypeError):
            raise KeyError(f"unknown {kind} {name!r}; registered {kind}s: {', '.join(sorted(table))}") from None

    def get(self, name: str) -> Variant:
        if isinstance(name, Variant):
            return name
        return self._lookup("variant", name).value

    def group(self, name: str) -> list[str]:
        """The variant names of a group, in order."""
        try:
            return list(self._lookup("group", name).value)
        except KeyError:
            raise KeyError(f"unknown variant group {name!r}; known groups: {', '.join(self.names('group'))}") from None

    def dataset(self, name: str):
        """The loader of a registered dataset."""
        try:
            return self._lookup("dataset", name).value
        except KeyError:
            raise KeyError(f"unknown dataset {name!r}; known: {', '.join(self.names('dataset'))}") from None

    def source(self, name: str, kind: str = "variant") -> str:
        return self._lookup(kind, name).source

    def contributions(self) -> dict[str, dict[str, list[str]]]:
        """What each plugin registered: ``{source: {"variant": [...], "group": [...], "dataset": [...]}}``, the
        built-ins first, then in loading order."""
        result: dict[str, dict[str, list[str]]] = {}
        for noun, table in self.tables().items():
            for name, registration in table.items():
                result.setdefault(registration.source, {kind.noun: [] for kind in KINDS})[noun].append(name)
        return result


registry = Registry()


class _Groups(Mapping):
    """``lstmcore.GROUPS``: the registered groups, read-only, ``{name: (variant, ...)}`` (``register_groups``)."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        return tuple(registry.group(name))

    def __iter__(self):
        return iter(registry.names("group"))

    def __len__(self) -> int:
        return len(registry.names("group"))

    def __repr__(self) -> str:
        return f"GROUPS({dict(self)!r})"


#: Named groups of variants for ablation studies, as registered through ``register_groups``; the built-in
#: ``odyssey`` is the nine configurations of Greff et al. (2017) in the paper's order, the baseline V first.
GROUPS: Mapping[str, tuple[str, ...]] = _Groups()


def get_group(name: str) -> list[str]:
    """The variant names of a group (``KeyError`` listing the known groups otherwise)."""
    return registry.group(name)


def list_variants() -> list[str]:
    """Sorted names of every registered variant (built-ins and plugins)."""
    return registry.names()


def get_variant(name: str) -> Variant:
    """The registered variant called ``name``; ``KeyError`` listing the known names otherwise."""
    return registry.get(name)
