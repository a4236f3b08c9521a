"""Testing a chexops plugin: a pytest plugin, active wherever chexops is installed (entry point `pytest11`).

    from chexops.testing import check_family

    def test_my_family(chexops_plugins):
        loaded = chexops_plugins("chexops-myplugin")     # this installed distribution and the built-ins, nothing else
        assert loaded.component("families", "my_family").distribution == "chexops-myplugin"
        report = check_family("my_family")              # the deep checks of `chexops plugins --check`
        assert report.parameters[1] < report.parameters[0]

`chexops_plugins(...)` takes installed plugins by entry-point or distribution name, and plugin objects defined in
the test itself (a module, class or instance with `@chexops.hookimpl` functions); with no arguments, only the
built-ins load. Whatever CHEXOPS_LOAD_PLUGINS says is ignored until the test ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chexops.components import manager, reset
from chexops.components.registry import get_registry
from chexops.components.verify import CheckReport, check

__all__ = ["CheckReport", "Component", "LoadedPlugins", "check_component", "check_family", "chexops_plugins",
           "load_plugins"]


@dataclass(frozen=True)
class Component:
    """A registered component and where it came from."""

    kind: str
    name: str
    spec: Any
    plugin: str  # the entry-point name (or the in-test object's name)
    distribution: str
    version: str


class LoadedPlugins:
    """What the selected plugins registered."""

    def names(self, kind: str) -> list[str]:
        """Names of the registered components of `kind` (families, initializers, truncations, label-policies)."""
        return [e.name for e in get_registry().entries(kind)]

    def component(self, kind: str, name: str) -> Component:
        get_registry().entries(kind)  # an unknown kind is an error listing the kinds
        entry = get_registry().entry(kind, name)
        p = entry.plugin
        return Component(kind, entry.name, entry.spec, p.name, p.distribution, p.version)

    def plugins(self) -> list[str]:
        """The loaded plugins' entry-point names, built-ins first."""
        return list(get_registry().plugins)


def load_plugins(*plugins: str | object) -> LoadedPlugins:
    """Load the built-ins plus exactly these plugins (names of installed ones, or plugin objects); a mistake in one
    of them raises here, as it would when chexops starts."""
    manager.select(only=[p for p in plugins if isinstance(p, str)],
                   objects=[p for p in plugins if not isinstance(p, str)])
    reset()
    get_registry()
    return LoadedPlugins()


def check_family(name: str) -> CheckReport:
    """The deep checks of a loaded family: timm name and tag, blocks in forward order, every depth builds smaller.
    Raises chexops.PluginError (one line naming the plugin, the spec and the fix) on the first problem."""
    return check("families", name)


def check_component(kind: str, name: str) -> CheckReport:
    """The deep checks of any loaded component: `kind` is families, initializers, truncations or label-policies."""
    return check(kind, name)


@pytest.fixture
def chexops_plugins() -> Iterator[Any]:
    """`chexops_plugins(*names_or_objects)` loads only those plugins (and the built-ins) for this test."""
    load_plugins()
    yield load_plugins
    manager.select()
    reset()
