"""A plugin mistake never trains: the deep checks run before a component is first used (train, build, the stages,
the worker), once per version of its code, and fail in one line (exit 2) before any data is prepared."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BLOCKS = ("layer1", "layer2", "layer3", "layer4")
FAMILY = """
import chexops

@chexops.hookimpl
def register_families(register):
    register(chexops.FamilySpec(name="tiny_resnet", timm_name="resnet18", tag="tv_in1k", group="Test",
                                imagenet_top1=None, blocks={blocks!r}, max_drop=3))
"""
POLICY = """
import numpy as np
import chexops

@chexops.hookimpl
def register_label_policies(register):
    register(chexops.LabelPolicySpec(name="soft", apply=soft))

def soft(labels):
{body}
"""


def install(root: Path, source: str) -> Path:
    """A distribution as pip leaves it (module + dist-info with its entry point), in its own folder."""
    site = root / "site"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    (site / "mistake_plugin.py").write_text(textwrap.dedent(source))
    info = site / "chexops_mistake-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: chexops-mistake\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[chexops]\nmistake_plugin = mistake_plugin\n")
    return site


def chexops(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHEXOPS_", "MLFLOW_"))} | {
        "PYTHONPATH": str(root / "site"), "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(root / "cache")}
    return subprocess.run([sys.executable, "-m", "chexops", *args], capture_output=True, text=True, env=env,
                          cwd=root, timeout=300)


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """An empty study folder: the repository's params.yaml, nothing prepared."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_blocks_out_of_forward_order_stop_train_before_any_data(study: Path) -> None:
    install(study, FAMILY.format(blocks=("layer1", "layer3", "layer2", "layer4")))
    result = chexops(study, "train", "--family", "tiny_resnet", "--truncate", "1", "--quiet")
    one_line_error(result, "tiny_resnet", "blocks are listed as")
    assert "prepar" not in result.stdout.lower() and not (study / "data").exists(), result.stdout


def test_a_label_policy_with_targets_outside_0_1_stops_train(study: Path) -> None:
    body = "    labels = np.nan_to_num(labels, nan=0.0).astype(np.float32)\n" \
           "    return labels * 2, np.ones_like(labels)"  # -1 -> -2, 1 -> 2
    install(study, POLICY.format(body=textwrap.indent(body, "")))
    params = (study / "params.yaml").read_text().replace("label_policy: u-ignore", "label_policy: soft")
    (study / "params.yaml").write_text(params)
    one_line_error(chexops(study, "train", "--family", "resnet18", "--quiet"), "soft", "outside [0, 1]")
    assert not (study / "data").exists()


def test_a_label_policy_that_changes_its_input_fails_the_check(study: Path) -> None:
    body = "    labels[np.isnan(labels)] = 0.0  # in place: the caller's labels change\n" \
           "    labels[labels < 0] = 0.5\n" \
           "    return labels.astype(np.float32), np.ones(labels.shape, np.float32)"
    install(study, POLICY.format(body=body))
    one_line_error(chexops(study, "plugins", "--check"), "soft", "changed the labels it was given", "copy")


def test_a_hook_function_without_the_marker_fails_the_check(study: Path) -> None:
    install(study, FAMILY.format(blocks=BLOCKS).replace("@chexops.hookimpl\n", ""))
    result = chexops(study, "plugins", "--check")  # loading it already warns; the check fails
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: ") and "register_families" in error and "@chexops.hookimpl" in error, error


def test_an_unknown_timm_name_is_one_line(study: Path) -> None:
    install(study, FAMILY.format(blocks=BLOCKS).replace('"resnet18"', '"resnet_18"'))
    one_line_error(chexops(study, "build", "tiny_resnet"), "tiny_resnet", "resnet_18")


def test_a_passed_check_is_remembered_until_the_code_changes(study: Path) -> None:
    install(study, FAMILY.format(blocks=BLOCKS))
    assert chexops(study, "build", "tiny_resnet", "--json").returncode == 0
    remembered = list((study / "cache" / "chexops" / "verified" / "families").glob("tiny_resnet-*"))
    assert len(remembered) == 1
    install(study, FAMILY.format(blocks=("layer2", "layer1", "layer3", "layer4")))  # new code: checked again
    one_line_error(chexops(study, "build", "tiny_resnet"), "blocks are listed as")
