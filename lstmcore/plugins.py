"""The variant registry: a pluggy plugin manager that loads the built-ins, then the ``lstmcore`` entry points.

Loading is lazy (on first use) and tolerant: a plugin that fails to import, raises in its hook, registers something that
is not a ``Variant`` or takes a name already registered is reported with a warning naming its distribution and skipped.
``LSTMCORE_STRICT_PLUGINS=1`` turns those reports into ``PluginError``; ``LSTMCORE_DISABLE_PLUGINS=1`` loads built-ins only.
``registry.failures`` lists them (``PluginFailure``); ``lstmcore variants`` shows one row each and exits with 1.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import threading
import traceback
import warnings
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
    variant: Variant
    source: str  # "built-in" or "<distribution> <version>"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


class Registry:
    """Registered variants by name. ``lstmcore.list_variants`` and ``lstmcore.get_variant`` use the default one."""

    def __init__(self):
        self._lock = threading.RLock()
        self._variants: dict[str, Registration] | None = None
        self.plugin_manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.plugin_manager.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self._loaded_sources: set[str] = set()
        self._in_process: dict[str, object] = {}

    # -- loading ----------------------------------------------------------------------------------------------------
    def _report(self, failure: PluginFailure) -> None:
        self.failures.append(failure)
        if _env_flag("LSTMCORE_STRICT_PLUGINS"):
            raise PluginError(failure.strict_message)
        # attributed to the plugin: its file and line, and its module for warning filters
        warnings.warn_explicit(str(failure), PluginWarning, failure.filename, failure.lineno,
                               module=failure.module or failure.source)

    def _collect(self, plugin, source: str, variants: dict[str, Registration]) -> None:
        """Register one plugin with pluggy, call its hook and add what it registers."""
        pm = self.plugin_manager
        module_name = getattr(plugin, "__name__", None) or type(plugin).__module__
        hook = getattr(plugin, "register_variants", None)

        def report(problem, consequence="it is skipped", **where):
            self._report(PluginFailure(source, problem, consequence,
                                       **_plugin_location(module_name, function=hook, **where)))

        if pm.get_plugin(source) is None:
            try:
                pm.register(plugin, name=source)
            except Exception as exc:  # pluggy.PluginValidationError (wrong hook signature), or already registered
                report(f"is not a valid plugin: {type(exc).__name__}: {exc}")
                return
        impls = [impl for impl in pm.hook.register_variants.get_hookimpls() if impl.plugin is plugin]
        if not impls:
            if callable(hook):
                report("defines register_variants without the @lstmcore.hookimpl marker", "it is ignored")
            return
        found: list[tuple[Variant, traceback.FrameSummary]] = []

        def register(variant):
            found.append((variant, traceback.extract_stack(limit=2)[0]))  # where the plugin called register

        for impl in impls:
            try:
                impl.function(register=register)
            except Exception as exc:  # a plugin's bug must not take the others down
                report(f"raised in register_variants: {type(exc).__name__}: {exc}", error=exc)
                return
        for variant, called_at in found:
            if not isinstance(variant, Variant):
                report(f"registered {variant!r}, which is not a lstmcore.Variant", frame_summary=called_at)
                continue
            name = getattr(variant, "name", None)
            if not isinstance(name, str) or not name:
                report("registered a variant without a name", frame_summary=called_at)
                continue
            if name in variants:
                report(f"registered variant {name!r}, which is already registered by {variants[name].source!r}",
                       "the second registration is skipped", frame_summary=called_at)
                continue
            variants[name] = Registration(variant, source)

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
        """Load once: the built-ins, then the entry points, then plugins given to ``register_plugin``."""
        with self._lock:
            if self._variants is not None:
                return self._variants
            variants: dict[str, Registration] = {}
            self.failures = []
            import lstmcore.variants as builtins  # the built-ins use the same hook as any plugin

            self._collect(builtins, BUILTIN_SOURCE, variants)
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
                    self._collect(plugin, source, variants)
            for source, plugin in list(self._in_process.items()):
                self._collect(plugin, source, variants)
            self._variants = variants
            return variants

    def register_plugin(self, plugin, name: str | None = None) -> str:
        """Add a plugin object (a module or any object with a ``@lstmcore.hookimpl`` ``register_variants``) in this
        process, without an entry point; returns its name. Its variants are added now if the registry is loaded,
        with the same checks as an entry point's. ``unregister_plugin(name)`` removes it."""
        if plugin is None:
            raise TypeError("register_plugin needs a plugin object (a module or an object with register_variants)")
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"a plugin's name must be a non-empty string, got {name!r}")
        with self._lock:
            source = name or getattr(plugin, "__name__", None) or f"plugin-{id(plugin):x}"
            if source in self._in_process or source in self._loaded_sources:
                raise ValueError(f"a plugin named {source!r} is already registered")
            self._in_process[source] = plugin
            if self._variants is not None:
                self._collect(plugin, source, self._variants)
            return source

    def unregister_plugin(self, name: str) -> None:
        """Remove a plugin added by ``register_plugin`` and the variants it registered."""
        with self._lock:
            if name not in self._in_process:
                raise KeyError(f"no plugin named {name!r} was added with register_plugin")
            del self._in_process[name]
            if self.plugin_manager.get_plugin(name) is not None:
                self.plugin_manager.unregister(name=name)
            if self._variants is not None:
                self._variants = {k: r for k, r in self._variants.items() if r.source != name}

    def reload(self) -> None:
        """Forget what was loaded; the next use loads again (for tests and after installing a plugin).
        Plugins added with ``register_plugin`` stay."""
        with self._lock:
            for name, _ in list(self.plugin_manager.list_name_plugin()):
                self.plugin_manager.unregister(name=name)
            self._variants = None
            self._loaded_sources = set()

    # -- queries ----------------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self.load())

    def get(self, name: str) -> Variant:
        variants = self.load()
        if isinstance(name, Variant):
            return name
        try:
            return variants[name].variant
        except (KeyError, TypeError):
            raise KeyError(f"unknown variant {name!r}; registered variants: {', '.join(sorted(variants))}") from None

    def source(self, name: str) -> str:
        self.get(name)
        return self.load()[name].source


registry = Registry()


#: Named groups of variants for ablation studies. ``odyssey``: the nine configurations of Greff et al. (2017) in the
#: paper's order, the baseline V (``peephole``) first.
GROUPS: dict[str, tuple[str, ...]] = {
    "odyssey": ("peephole", "nig", "nfg", "nog", "niaf", "noaf", "vanilla", "coupled", "fgr"),
}


def get_group(name: str) -> list[str]:
    """The variant names of a group (``KeyError`` listing the known groups otherwise)."""
    try:
        return list(GROUPS[name])
    except KeyError:
        raise KeyError(f"unknown variant group {name!r}; known groups: {', '.join(sorted(GROUPS))}") from None


def list_variants() -> list[str]:
    """Sorted names of every registered variant (built-ins and plugins)."""
    return registry.names()


def get_variant(name: str) -> Variant:
    """The registered variant called ``name``; ``KeyError`` listing the known names otherwise."""
    return registry.get(name)
