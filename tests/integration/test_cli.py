"""The `chexops` command as a user runs it: output, exit codes, one-line errors, installed plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch


def chexops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()} | {"CHEXOPS_LOAD_PLUGINS": "", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "chexops", *args], capture_output=True, text=True,
                          env=base | (env or {}), timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_components_families_json():
    result = chexops("components", "families", "--json")
    assert result.returncode == 0, result.stderr
    families = {f["name"]: f for f in json.loads(result.stdout)}
    assert len(families) == 16
    d = families["densenet121"]
    assert (d["timm_tag"], d["group"], d["imagenet_top1"], d["max_drop"]) == ("densenet121.tv_in1k", "DenseNet",
                                                                            74.75, 3)
    assert d["parameters"] == 6968206 and d["plugin"] == "chexops"


def test_components_table_and_plugins():
    result = chexops("components")
    assert result.returncode == 0 and "label-policies:" in result.stdout and "u-mixed" in result.stdout
    plugins = json.loads(chexops("plugins", "--json").stdout)
    families_plugin = next(p for p in plugins if p["name"] == "chexops.components.builtin.families")
    assert families_plugin["hooks"] == ["register_families"] and families_plugin["builtin"]


def test_build_report():
    result = chexops("build", "efficientnet_b0", "--truncate", "2", "--num-classes", "5", "--json")
    report = json.loads(result.stdout)
    assert (report["truncation"], report["num_classes"], report["blocks_dropped"]) == ("drop-2", 5,
                                                                                      ["blocks.5", "blocks.6"])


def test_unknown_family_is_one_line_with_suggestions():
    assert_one_line_error(chexops("build", "densnet121"), "unknown family 'densnet121'", "Did you mean: densenet121")


def test_truncation_deeper_than_allowed():
    assert_one_line_error(chexops("build", "resnet18", "--truncate", "9"), "allows dropping 1 to 3 blocks")


def test_checkpoint_missing_or_not_a_state_dict(tmp_path):
    assert_one_line_error(chexops("build", "resnet18", "--init", f"checkpoint:{tmp_path / 'x.pt'}"), "does not exist")
    torch.save({"epoch": 3}, tmp_path / "bad.pt")
    assert_one_line_error(chexops("build", "resnet18", "--init", f"checkpoint:{tmp_path / 'bad.pt'}"),
                          "not a state dict")


def test_weights_for_the_wrong_architecture(tmp_path):
    import timm

    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "w.pt")
    assert_one_line_error(chexops("build", "densenet121", "--init", f"checkpoint:{tmp_path / 'w.pt'}"),
                          "does not fit densenet121")


def test_imagenet_without_weights_says_how_to_get_them(tmp_path):
    assert_one_line_error(chexops("build", "resnet18", "--init", "imagenet", "--weights-dir", str(tmp_path)),
                          "chexops weights fetch resnet18")
