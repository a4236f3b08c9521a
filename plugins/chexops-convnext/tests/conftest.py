"""Install this plugin for real (pip, into a temporary target) so its tests go through the entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(PLUGIN)], check=True, timeout=300)
    return target


@pytest.fixture(autouse=True)
def convnext_loaded(plugin_site, monkeypatch):
    from chexops import components as plugins

    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.setenv("CHEXOPS_LOAD_PLUGINS", "chexops-convnext")
    plugins.reset()
    yield
    plugins.reset()
