"""Install this plugin for real (pip, into a temporary target) so its tests go through the entry point, as they
would after `pip install -e .`; `chexops_plugins` (from chexops.testing) then loads only it."""

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


@pytest.fixture
def convnext(plugin_site, monkeypatch, chexops_plugins):
    monkeypatch.syspath_prepend(str(plugin_site))
    return chexops_plugins("chexops-convnext")
