"""The plugin manager and registry: entry points, CHEXOPS_LOAD_PLUGINS, duplicates, typos, lookups."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from chexops import components as plugins
from chexops.components.registry import get_registry
from chexops.errors import DuplicateComponentError, PluginError, UnknownComponentError

FAMILY_PLUGIN = """
import chexops

@chexops.hookimpl
def register_families(register):
    register(chexops.FamilySpec(name={name!r}, timm_name="resnet18", tag="tv_in1k", group="Test",
                                imagenet_top1=None, blocks=("layer1", "layer2"), max_drop=1))
"""


def install_fake_plugin(root: Path, dist: str, module: str, source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real installed distribution (dist-info with an entry point) on sys.path, as pip would leave it."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[chexops]\n{module} = {module}\n")
    monkeypatch.syspath_prepend(str(root))
    plugins.reset()


def test_builtins_register_through_hooks():
    registry = get_registry()
    assert len(registry.entries("families")) == 16
    assert {e.name for e in registry.entries("initializers")} == {"random", "imagenet", "ssl", "checkpoint"}
    assert {e.name for e in registry.entries("truncations")} == {"none", "drop-last-k"}
    assert {e.name for e in registry.entries("label-policies")} == {"u-ignore", "u-zeros", "u-ones", "u-mixed"}
    assert all(e.plugin.builtin and e.plugin.distribution == "chexops" for e in registry.entries("families"))


def test_entry_point_plugin_loads_and_env_var_filters(tmp_path, monkeypatch):
    install_fake_plugin(tmp_path, "chexops-extra", "extra_plugin", FAMILY_PLUGIN.format(name="tiny"), monkeypatch)
    monkeypatch.delenv("CHEXOPS_LOAD_PLUGINS")
    entry = get_registry().entry("families", "tiny")
    assert (entry.plugin.distribution, entry.plugin.version) == ("chexops-extra", "1.2.3")
    monkeypatch.setenv("CHEXOPS_LOAD_PLUGINS", "")
    plugins.reset()
    with pytest.raises(UnknownComponentError):
        get_registry().family("tiny")
    monkeypatch.setenv("CHEXOPS_LOAD_PLUGINS", "chexops-extra")
    plugins.reset()
    assert get_registry().family("tiny").group == "Test"


def test_env_var_naming_a_missing_plugin_is_an_error(monkeypatch):
    monkeypatch.setenv("CHEXOPS_LOAD_PLUGINS", "no-such-plugin")
    with pytest.raises(PluginError, match="no-such-plugin"):
        get_registry()


def test_duplicate_name_names_both_plugins(tmp_path, monkeypatch):
    install_fake_plugin(tmp_path, "chexops-dup", "dup_plugin", FAMILY_PLUGIN.format(name="resnet18"), monkeypatch)
    monkeypatch.delenv("CHEXOPS_LOAD_PLUGINS")
    with pytest.raises(DuplicateComponentError) as info:
        get_registry()
    assert "chexops.components.builtin.families" in str(info.value) and "chexops-dup" in str(info.value)


def test_misspelled_hook_is_reported(tmp_path, monkeypatch):
    source = FAMILY_PLUGIN.format(name="tiny").replace("def register_families", "def register_familes")
    install_fake_plugin(tmp_path, "chexops-typo", "typo_plugin", source, monkeypatch)
    monkeypatch.delenv("CHEXOPS_LOAD_PLUGINS")
    with pytest.raises(PluginError, match="register_familes.*Did you mean: register_families"):
        get_registry()


def test_registering_the_wrong_type_is_reported(tmp_path, monkeypatch):
    source = "import chexops\n@chexops.hookimpl\ndef register_families(register):\n    register('resnet')\n"
    install_fake_plugin(tmp_path, "chexops-bad", "bad_plugin", source, monkeypatch)
    monkeypatch.delenv("CHEXOPS_LOAD_PLUGINS")
    with pytest.raises(PluginError, match="FamilySpec"):
        get_registry()


def test_unknown_name_suggests_close_matches_and_lists_plugins():
    with pytest.raises(UnknownComponentError) as info:
        get_registry().family("densenet12")
    message = str(info.value)
    assert "Did you mean: densenet121" in message
    assert "Installed plugins: chexops.components.builtin.families" in message


def test_initializer_arguments():
    registry = get_registry()
    spec, argument = registry.initializer("checkpoint:/tmp/x.pt")
    assert (spec.name, argument) == ("checkpoint", "/tmp/x.pt")
    with pytest.raises(UnknownComponentError, match="needs an argument"):
        registry.initializer("checkpoint")
    with pytest.raises(UnknownComponentError, match="takes no argument"):
        registry.initializer("random:3")
