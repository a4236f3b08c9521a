"""The plugin manager: built-ins plus the packages installed under the entry-point group `chexops`.

Built-in components are ordinary plugins registered through the same hooks, so an outside package can do
anything they do. `CHEXOPS_LOAD_PLUGINS` limits which installed plugins load: unset loads all of them, an
empty value loads the built-ins only, `a,b` loads those (by entry-point or distribution name). `select()` does
the same from code (chexops.testing), and can add plugin objects that were never installed.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from chexops.components import hookspecs
from chexops.errors import PluginError, did_you_mean

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "chexops"
IN_TEST = "(in-test)"  # the distribution of plugin objects given to select(): no installed package provides them
ENV_LOAD_PLUGINS = "CHEXOPS_LOAD_PLUGINS"
BUILTIN_MODULES = (
    "chexops.components.builtin.families",
    "chexops.components.builtin.initializers",
    "chexops.components.builtin.truncations",
    "chexops.components.builtin.label_policies",
    "chexops.components.builtin.commands",
)


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin: where it came from and which hooks it implements."""

    name: str
    distribution: str
    version: str
    builtin: bool
    hooks: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Selection:
    """Which plugins load when chosen from code: installed ones by name (None: as the environment says), plus
    plugin objects (modules, classes, instances with hook functions) that are not installed at all."""

    only: tuple[str, ...] | None = None
    objects: tuple[object, ...] = ()


_selection: list[Selection] = []  # at most one; a list so select() needs no `global`


def select(only: Sequence[str] | None = None, objects: Sequence[object] = ()) -> None:
    """Load only the installed plugins named in `only` (entry-point or distribution names; [] for none) and the
    given plugin objects, instead of what CHEXOPS_LOAD_PLUGINS says. `select()` with no arguments undoes it."""
    _selection.clear()
    if only is not None or objects:
        _selection.append(Selection(None if only is None else tuple(only), tuple(objects)))
    plugin_manager.cache_clear()


def _chexops_version() -> str:
    try:
        return metadata.version("chexops")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def _allowed_plugins() -> set[str] | None:
    if _selection and _selection[0].only is not None:
        return set(_selection[0].only)
    raw = os.environ.get(ENV_LOAD_PLUGINS)
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _installed_entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _register_checked(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name!r} has an invalid hook: {exc}") from exc
    _warn_undecorated(plugin, name)


def undecorated_hooks(plugin: object) -> list[str]:
    """Functions named like a hook (register_*) that lack @chexops.hookimpl: pluggy never calls them."""
    marker = f"{hookspecs.PROJECT}_impl"
    own = getattr(plugin, "__name__", None)
    return [attr for attr, value in inspect.getmembers(plugin, inspect.isfunction)
            if attr.startswith("register_") and (not inspect.ismodule(plugin) or value.__module__ == own)
            and not hasattr(value, marker)]


def _warn_undecorated(plugin: object, name: str) -> None:
    """pluggy registers only decorated functions: a hook function without the marker would do nothing, silently."""
    for attr in undecorated_hooks(plugin):
        log.warning("plugin %r: %s() has no @chexops.hookimpl, so chexops never calls it; decorate it with "
                    "@chexops.hookimpl.", name, attr)


def hidden_plugins() -> list[str]:
    """Installed plugins that the current filter (CHEXOPS_LOAD_PLUGINS or select()) keeps from loading."""
    allowed = _allowed_plugins()
    if allowed is None:
        return []
    return [f"{ep.name} ({ep.dist.name if ep.dist else '?'})" for ep in _installed_entry_points()
            if ep.name not in allowed and (ep.dist is None or ep.dist.name not in allowed)]


def filter_description() -> str:
    """How the loaded plugins were chosen, for error messages."""
    if _selection and _selection[0].only is not None:
        return f"chexops.testing loads only {', '.join(_selection[0].only) or 'the built-ins'}"
    return f"{ENV_LOAD_PLUGINS}={os.environ.get(ENV_LOAD_PLUGINS, '')!r}"


def _load_entry_points(pm: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
    allowed = _allowed_plugins()
    eps = _installed_entry_points()
    if allowed:
        known = {ep.name for ep in eps} | {ep.dist.name for ep in eps if ep.dist}
        for wanted in sorted(allowed - known):
            raise PluginError(
                f"{ENV_LOAD_PLUGINS} names {wanted!r}, which is not an installed chexops plugin."
                f"{did_you_mean(wanted, known)} Installed: {', '.join(sorted(known)) or 'none'}."
            )
    for ep in eps:
        dist = ep.dist.name if ep.dist else "?"
        if allowed is not None and ep.name not in allowed and dist not in allowed:
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken third-party package must not look like a chexops bug
            raise PluginError(
                f"plugin {ep.name!r} from {dist} failed to import ({type(exc).__name__}: {exc}). "
                f"Fix or uninstall it, or leave it out with {ENV_LOAD_PLUGINS}."
            ) from exc
        _register_checked(pm, module, ep.name)
        infos[ep.name] = PluginInfo(ep.name, dist, ep.dist.version if ep.dist else "?", builtin=False)


def _check_hook_names(pm: pluggy.PluginManager) -> None:
    """A misspelled hook would otherwise be ignored silently: pluggy only reports it when asked."""
    known = [name for name in dir(hookspecs) if name.startswith("register_")]
    for name, caller in pm.hook.__dict__.items():
        if caller.spec is not None:
            continue
        for impl in caller.get_hookimpls():
            raise PluginError(
                f"plugin {impl.plugin_name!r} implements {name!r}, which is not a chexops hook."
                f"{did_you_mean(name, known)} Valid hooks: {', '.join(known)}."
            )


@functools.cache
def plugin_manager() -> tuple[pluggy.PluginManager, dict[str, PluginInfo]]:
    """The process-wide plugin manager and what it loaded (`chexops.components.reset()` forgets it)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    version = _chexops_version()
    for module_name in BUILTIN_MODULES:
        _register_checked(pm, importlib.import_module(module_name), module_name)
        infos[module_name] = PluginInfo(module_name, "chexops", version, builtin=True)
    _load_entry_points(pm, infos)
    for obj in _selection[0].objects if _selection else ():
        name = getattr(obj, "__name__", None) or type(obj).__name__
        _register_checked(pm, obj, name)
        infos[name] = PluginInfo(name, IN_TEST, "0", builtin=False)
    _check_hook_names(pm)
    for name, info in list(infos.items()):
        plugin = pm.get_plugin(name)
        hooks = tuple(sorted(c.name for c in pm.get_hookcallers(plugin) or []))
        infos[name] = PluginInfo(info.name, info.distribution, info.version, info.builtin, hooks)
    return pm, infos
