"""The variant registry: a pluggy plugin manager that loads the built-ins, then the ``lstmcore`` entry points.

Loading is lazy (on first use) and tolerant: a plugin that fails to import, raises in its hook, registers something that
is not a ``Variant`` or takes a name already registered is reported with a warning naming its distribution and skipped.
``LSTMCORE_STRICT_PLUGINS=1`` turns those reports into ``PluginError``; ``LSTMCORE_DISABLE_PLUGINS=1`` loads built-ins only.
"""
from __future__ import annotations

import importlib.metadata
import os
import threading
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
    """A plugin was skipped; the message names it and says why."""


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
        self.failures: list[str] = []
        self._loaded_sources: set[str] = set()
        self._in_process: dict[str, object] = {}

    # -- loading ----------------------------------------------------------------------------------------------------
    def _report(self, message: str) -> None:
        self.failures.append(message)
        if _env_flag("LSTMCORE_STRICT_PLUGINS"):
            raise PluginError(message)
        warnings.warn(message, PluginWarning, stacklevel=4)

    def _collect(self, plugin, source: str, variants: dict[str, Registration]) -> None:
        """Register one plugin with pluggy, call its hook and add what it registers."""
        pm = self.plugin_manager
        if pm.get_plugin(source) is None:
            try:
                pm.register(plugin, name=source)
            except Exception as exc:  # pluggy.PluginValidationError (wrong hook signature), or already registered
                self._report(f"lstmcore plugin {source!r} is not a valid plugin: {type(exc).__name__}: {exc}")
                return
        impls = [impl for impl in pm.hook.register_variants.get_hookimpls() if impl.plugin is plugin]
        if not impls:
            if callable(getattr(plugin, "register_variants", None)):
                self._report(f"lstmcore plugin {source!r} defines register_variants without the "
                             "@lstmcore.hookimpl marker; it is ignored")
            return
        found: list[Variant] = []
        for impl in impls:
            try:
                impl.function(register=found.append)
            except Exception as exc:  # a plugin's bug must not take the others down
                self._report(f"lstmcore plugin {source!r} raised in register_variants: {type(exc).__name__}: {exc}")
                return
        for variant in found:
            if not isinstance(variant, Variant):
                self._report(f"lstmcore plugin {source!r} registered {variant!r}, which is not a lstmcore.Variant")
                continue
            name = getattr(variant, "name", None)
            if not isinstance(name, str) or not name:
                self._report(f"lstmcore plugin {source!r} registered a variant without a name")
                continue
            if name in variants:
                self._report(f"variant {name!r} from {source!r} is already registered by "
                             f"{variants[name].source!r}; the second registration is skipped")
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
                        self._report(f"lstmcore plugin {source!r} (entry point {ep.name} = {ep.value}) failed to "
                                     f"import: {type(exc).__name__}: {exc}")
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
