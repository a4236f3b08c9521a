"""Spec checks as a plugin author meets them: every mistake is one line at the CLI (exit 2, no traceback) naming
the plugin, the spec and the fix; a broken family does not hide the others; `plugins --check` passes good specs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

GOOD = dict(name="tiny_resnet", timm_name="resnet18", tag="tv_in1k", group="Test", imagenet_top1=None,
            blocks=("layer1", "layer2", "layer3", "layer4"), max_drop=3)


def family_source(**fields) -> str:
    spec = GOOD | fields
    args = ", ".join(f"{k}={v!r}" for k, v in spec.items())
    return f"import chexops\n\n@chexops.hookimpl\ndef register_families(register):\n" \
           f"    register(chexops.FamilySpec({args}))\n"


def install(root: Path, source: str, dist: str = "chexops-mistake", module: str = "mistake_plugin") -> Path:
    """A distribution as pip leaves it (module + dist-info with the entry point) in its own folder."""
    site = root / dist
    site.mkdir()
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[chexops]\n{module} = {module}\n")
    return site


def chexops(*args: str, sites: list[Path], load: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CHEXOPS_LOAD_PLUGINS"} | {
        "PYTHONPATH": os.pathsep.join(map(str, sites)), "HF_HUB_OFFLINE": "1"}
    if load is not None:
        env["CHEXOPS_LOAD_PLUGINS"] = load
    return subprocess.run([sys.executable, "-m", "chexops", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# (fields changed, what the message must say): structural mistakes fail at registration, for every command
REGISTRATION = [
    (dict(max_drop=4), ["max_drop is 4 but there are only 4 blocks", "set max_drop to at most 3"]),
    (dict(blocks=["layer1", "layer2"]), ["blocks is ['layer1', 'layer2']", "give a tuple of module names"]),
    (dict(blocks=("layer1", "layer1")), ["blocks lists layer1 more than once"]),
    (dict(imagenet_top1=0.7), []),  # a fraction is a valid percentage: not a mistake this check can see
    (dict(imagenet_top1=170.0), ["imagenet_top1 is 170.0", "percent"]),
    (dict(name="tiny/resnet"), ["not usable in run names"]),
    (dict(timm_name="resnet18.tv_in1k"), ["combined 'model.tag' name"]),
]


@pytest.mark.parametrize("fields,fragments", REGISTRATION, ids=[str(f) for f, _ in REGISTRATION])
def test_structural_mistakes_fail_at_registration(tmp_path, fields, fragments):
    site = install(tmp_path, family_source(**fields))
    result = chexops("components", "truncations", sites=[site])
    if not fragments:
        assert result.returncode == 0, result.stderr
        return
    one_line_error(result, "plugin 'mistake_plugin' (chexops-mistake)", "family", *fragments)


# deep mistakes pass registration and are found by `chexops plugins --check`
DEEP = [
    (dict(timm_name="resnet81"), ["timm has no model 'resnet81'", "did you mean: resnet18"]),
    (dict(tag="tv_in2k"), ["no pretrained tag 'tv_in2k'", "set tag to one of: ", "tv_in1k"]),
    (dict(blocks=("layer1", "layer2", "layr3", "layer4")), ["block 'layr3' is not a module", "layer3"]),
    (dict(blocks=("layer1", "layer3", "layer2", "layer4")),
     ["run in the order layer1, layer2, layer3, layer4", "blocks=('layer1', 'layer2', 'layer3', 'layer4')"]),
    (dict(blocks=("layer1", "layer2", "fc"), max_drop=2), []),  # fc is last and runs once: a legal (odd) list
    (dict(timm_name="inception_v3", tag="tv_in1k", blocks=("Mixed_5b", "Mixed_5c"), max_drop=1),
     ["a forward pass", "at 32 px failed", "raise min_size"]),
]


@pytest.mark.parametrize("fields,fragments", DEEP, ids=[str(f) for f, _ in DEEP])
def test_deep_mistakes_are_found_by_the_check_command(tmp_path, fields, fragments):
    site = install(tmp_path, family_source(**fields))
    result = chexops("plugins", "--check", "chexops-mistake", sites=[site])
    if not fragments:
        assert result.returncode == 0 and "ok  family tiny_resnet (chexops-mistake)" in result.stdout, result.stderr
        return
    one_line_error(result, "plugin 'mistake_plugin' (chexops-mistake): family 'tiny_resnet'", *fragments)


def test_check_passes_a_good_plugin_and_reports_every_depth(tmp_path):
    site = install(tmp_path, family_source())
    result = chexops("plugins", "--check", "mistake_plugin", sites=[site])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [
        line for line in result.stdout.strip().splitlines() if line.startswith("ok  family tiny_resnet")]
    assert "depths 0-3" in result.stdout


def test_a_bad_timm_name_does_not_break_listing_the_other_families(tmp_path):
    bad = install(tmp_path, family_source(timm_name="resnet81"))
    good = install(tmp_path, family_source(name="other_resnet").replace("tiny_resnet", "other_resnet"),
                   dist="chexops-good", module="good_plugin")
    result = chexops("components", "families", "--json", sites=[bad, good])
    assert result.returncode == 0, result.stderr
    families = {f["name"]: f for f in json.loads(result.stdout)}
    assert families["tiny_resnet"]["parameters"] is None
    assert families["other_resnet"]["parameters"] == families["resnet18"]["parameters"] > 0
    assert len(families) == 18
    warning = [line for line in result.stderr.splitlines() if "tiny_resnet" in line]
    assert len(warning) == 1 and "chexops plugins --check" in warning[0] and "Traceback" not in result.stderr


def test_droppable_block_names_are_listed():
    result = chexops("components", "families", "--json", sites=[], load="")
    families = {f["name"]: f for f in json.loads(result.stdout)}
    assert families["resnet18"]["droppable_blocks"] == ["layer2", "layer3", "layer4"]
    assert families["densenet121"]["droppable_blocks"] == [f"features.denseblock{i}" for i in (2, 3, 4)]


def test_a_hook_function_without_the_decorator_gets_a_warning(tmp_path):
    source = family_source().replace("@chexops.hookimpl\n", "")
    site = install(tmp_path, source)
    result = chexops("plugins", sites=[site])
    assert result.returncode == 0, result.stderr
    assert "register_families() has no @chexops.hookimpl" in result.stderr and "mistake_plugin" in result.stderr


def test_unknown_family_says_a_filter_hides_installed_plugins(tmp_path):
    site = install(tmp_path, family_source())
    error = one_line_error(chexops("build", "tiny_resnet", sites=[site], load=""), "unknown family 'tiny_resnet'")
    assert "CHEXOPS_LOAD_PLUGINS=''" in error and "mistake_plugin (chexops-mistake)" in error
    assert chexops("build", "tiny_resnet", "--json", sites=[site]).returncode == 0


def test_check_of_an_unknown_plugin_lists_the_loaded_ones():
    one_line_error(chexops("plugins", "--check", "chexops-convnxt", sites=[], load=""),
                   "no loaded plugin is called 'chexops-convnxt'", "chexops.components.builtin.families")


def test_build_rejects_a_depth_for_a_strategy_that_takes_none():
    one_line_error(chexops("build", "resnet18", "--strategy", "none", "--truncate", "2", sites=[], load=""),
                   "truncation 'none' takes no depth")
