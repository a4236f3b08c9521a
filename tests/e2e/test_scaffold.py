"""`chexops plugin new NAME`: the package it writes installs with pip and passes its own tests."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from chexops.cli.scaffold import write_plugin
from chexops.errors import ConfigError


def chexops(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"CHEXOPS_LOAD_PLUGINS": ""}
    return subprocess.run([sys.executable, "-m", "chexops", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


def test_the_package_has_the_entry_point_a_family_and_tests(tmp_path):
    root = write_plugin("chexops-demo", tmp_path)
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["name"] == "chexops-demo" and project["dependencies"] == ["chexops"]
    assert project["entry-points"]["chexops"] == {"demo": "chexops_demo.plugin"}
    plugin = (root / "chexops_demo" / "plugin.py").read_text()
    assert "@chexops.hookimpl" in plugin and 'name="demo_resnet10t"' in plugin
    tests = (root / "tests" / "test_plugin.py").read_text()
    assert "from chexops.testing import check_family" in tests and 'chexops_plugins("chexops-demo")' in tests
    compile(plugin, "plugin.py", "exec"), compile(tests, "test_plugin.py", "exec")


def test_the_family_passes_the_deep_checks(tmp_path, chexops_plugins, monkeypatch):
    root = write_plugin("chexops-demo", tmp_path)
    monkeypatch.syspath_prepend(str(root))
    import chexops_demo.plugin

    chexops_plugins(chexops_demo.plugin)
    from chexops.testing import check_family

    assert sorted(check_family("demo_resnet10t").parameters) == [0, 1, 2, 3]


@pytest.mark.parametrize("name,message", [("chexops demo", "cannot be a distribution name"),
                                          ("existing", "already exists")])
def test_refusals_are_one_line(tmp_path, name, message):
    (tmp_path / "existing").mkdir()
    result = chexops("plugin", "new", name, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    with pytest.raises(ConfigError, match=message):
        write_plugin(name, tmp_path)


@pytest.mark.slow
def test_new_plugin_installs_and_passes_its_tests_in_a_fresh_venv(tmp_path):
    """chexops plugin new chexops-demo && pip install -e "./chexops-demo[test]" && python -m pytest chexops-demo, in
    a new venv that sees this interpreter's packages (chexops, torch, pytest, setuptools): offline, and in seconds."""
    result = chexops("plugin", "new", "chexops-demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # a .pth line that is code: addsitedir also processes the parent's own .pth files (its editable chexops)
    Path(purelib, "_parent_env.pth").write_text(f"import site; site.addsitedir({site.getsitepackages()[0]!r})\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CHEXOPS_LOAD_PLUGINS", "VIRTUAL_ENV")}
    pip = subprocess.run([python, "-m", "pip", "install", "-q", "--no-build-isolation", "-e", "./chexops-demo[test]"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-3000:]
    assert Path(purelib, "chexops_demo-0.1.0.dist-info").is_dir()  # installed into the new venv, not this one
    tests = subprocess.run([python, "-m", "pytest", "chexops-demo", "-q"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "3 passed" in tests.stdout
