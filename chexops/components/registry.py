"""Typed lookup of what plugins registered.

Each hook implementation is called with its own `register` callable, so every component knows which plugin
(and distribution) provided it; that is what makes a duplicate name an error naming both plugins.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from chexops.components import checks
from chexops.components.manager import PluginInfo, filter_description, hidden_plugins, plugin_manager
from chexops.components.specs import FamilySpec, InitializerSpec, LabelPolicySpec, TruncationSpec
from chexops.errors import DuplicateComponentError, PluginError, UnknownComponentError, did_you_mean

T = TypeVar("T")

# kind (as users type it) -> (hook name, spec class, singular noun for messages)
KINDS: dict[str, tuple[str, type, str]] = {
    "families": ("register_families", FamilySpec, "family"),
    "initializers": ("register_initializers", InitializerSpec, "initializer"),
    "truncations": ("register_truncations", TruncationSpec, "truncation"),
    "label-policies": ("register_label_policies", LabelPolicySpec, "label policy"),
}


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered component and the plugin that provided it."""

    spec: T
    plugin: PluginInfo

    @property
    def name(self) -> str:
        return self.spec.name  # type: ignore[attr-defined]


class _Register:
    """The `register` object one hook implementation receives."""

    def __init__(self, kind: str, plugin: PluginInfo, into: dict[str, Entry[Any]]) -> None:
        self.kind, self.plugin, self.into = kind, plugin, into

    def __call__(self, spec: Any) -> None:
        _, spec_class, noun = KINDS[self.kind]
        cls: Any = spec_class  # one of the four spec classes; Any so that `spec` keeps its type below
        if not isinstance(spec, cls):
            raise PluginError(
                f"plugin {self.plugin.name!r} registered {spec!r} as a {noun}; "
                f"register a chexops.{cls.__name__} instead."
            )
        checks.check_structure(spec, noun, self.plugin)
        if spec.name in self.into:
            first = self.into[spec.name].plugin
            raise DuplicateComponentError(
                f"{noun} {spec.name!r} is registered twice: by {first.name} ({first.distribution} "
                f"{first.version}) and by {self.plugin.name} ({self.plugin.distribution} {self.plugin.version}). "
                f"Uninstall one, or choose with CHEXOPS_LOAD_PLUGINS."
            )
        self.into[spec.name] = Entry(spec, self.plugin)


class Registry:
    """Everything the loaded plugins registered, by kind."""

    def __init__(self) -> None:
        pm, self.plugins = plugin_manager()
        self._entries: dict[str, dict[str, Entry[Any]]] = {}
        for kind, (hook_name, _, _) in KINDS.items():
            entries: dict[str, Entry[Any]] = {}
            # Builtins first (pluggy returns implementations in registration order) so listings start with them.
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                impl.function(register=_Register(kind, self.plugins[impl.plugin_name], entries))
            self._entries[kind] = entries

    def entries(self, kind: str) -> list[Entry[Any]]:
        if kind not in KINDS:
            raise UnknownComponentError(
                f"unknown component kind {kind!r}.{did_you_mean(kind, KINDS)} Kinds: {', '.join(KINDS)}."
            )
        return list(self._entries[kind].values())

    def entry(self, kind: str, name: str) -> Entry[Any]:
        entries = self._entries[kind]
        if name in entries:
            return entries[name]
        noun = KINDS[kind][2]
        plugins = ", ".join(f"{p.name} ({p.distribution} {p.version})" for p in self.plugins.values())
        hidden = hidden_plugins()
        hiding = (f" {filter_description()} keeps these installed plugins from loading: {', '.join(hidden)}; "
                  "add the one you need to it, or unset it." if hidden else "")
        raise UnknownComponentError(
            f"unknown {noun} {name!r}.{did_you_mean(name, entries)} Available: {', '.join(entries) or 'none'}. "
            f"Installed plugins: {plugins}.{hiding}"
        )

    def reference_family(self) -> FamilySpec:
        """The family strategies and initializers are checked on: a small built-in one."""
        return self.family(checks.REFERENCE_FAMILY)

    def family(self, name: str) -> FamilySpec:
        return self.entry("families", name).spec

    def truncation(self, name: str) -> TruncationSpec:
        return self.entry("truncations", name).spec

    def label_policy(self, name: str) -> LabelPolicySpec:
        return self.entry("label-policies", name).spec

    def initializer(self, name: str) -> tuple[InitializerSpec, str | None]:
        """`name` or `name:ARGUMENT` (e.g. `checkpoint:/path/model.pt`) -> (spec, argument)."""
        base, sep, argument = name.partition(":")
        spec: InitializerSpec = self.entry("initializers", base).spec
        if spec.needs_argument and not argument:
            raise UnknownComponentError(f"initializer {base!r} needs an argument: write it as '{base}:VALUE'.")
        if sep and not spec.needs_argument:
            raise UnknownComponentError(f"initializer {base!r} takes no argument, but got {name!r}.")
        return spec, (argument or None)


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry (rebuilt after `chexops.components.reset()`)."""
    return Registry()
