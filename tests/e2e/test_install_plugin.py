"""A plugin installed with pip into a fresh virtual environment is listed, and CHEXOPS_LOAD_PLUGINS hides it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def chexops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()} | {"CHEXOPS_LOAD_PLUGINS": "", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "chexops", *args], capture_output=True, text=True,
                          env=base | (env or {}), timeout=300)


@pytest.mark.slow
def test_installed_plugin_is_listed_and_can_be_hidden(tmp_path):
    """A real `pip install` of the example plugin (into a target folder, so the test environment stays clean)."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT / "plugins" / "chexops-convnext")], check=True, timeout=300)
    env = {"PYTHONPATH": str(target)}
    shown = chexops("components", "families", "--json", env=env | {"CHEXOPS_LOAD_PLUGINS": "chexops-convnext"})
    convnext = next(f for f in json.loads(shown.stdout) if f["name"] == "convnext_tiny")
    assert (convnext["plugin"], convnext["timm_tag"], convnext["imagenet_top1"]) == (
        "chexops-convnext", "convnext_tiny.fb_in1k", 82.066)
    everything = {k: v for k, v in os.environ.items() if k != "CHEXOPS_LOAD_PLUGINS"}
    listed = subprocess.run([sys.executable, "-m", "chexops", "components", "families"], capture_output=True,
                            text=True, env=everything | env, timeout=300)
    assert "convnext_tiny" in listed.stdout  # unset: every installed plugin loads
    hidden = chexops("components", "families", "--json", env=env)  # CHEXOPS_LOAD_PLUGINS= (empty)
    assert "convnext_tiny" not in {f["name"] for f in json.loads(hidden.stdout)}
