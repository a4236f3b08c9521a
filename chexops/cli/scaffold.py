"""`chexops plugin new NAME`: a plugin package that installs, registers one family and passes its own tests."""

from __future__ import annotations

import re
from pathlib import Path

import click

from chexops.errors import ConfigError

DIST_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*([-_][A-Za-z0-9]+)*")

PYPROJECT = '''[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A chexops plugin"
requires-python = ">=3.11"
dependencies = ["chexops"]

[project.optional-dependencies]
# `pip install -e "./{dist}[test]"`: chexops' own install has no pytest, and a pytest from outside the venv
# runs another Python, without torch
test = ["pytest"]

# chexops finds the plugin through this entry point; `CHEXOPS_LOAD_PLUGINS={entry}` (or {dist}) loads only it
[project.entry-points.chexops]
{entry} = "{package}.plugin"

[tool.setuptools.packages.find]
include = ["{package}*"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

PLUGIN = '''"""{dist}: registers the architecture family {family} (timm resnet10t, pretrained tag c3_in1k).

Add more families, or initializers, truncations and label policies, through the other hooks (see the chexops
README, "Write a plugin"); `chexops plugins --check {dist}` checks everything this package registers.
"""

from __future__ import annotations

from typing import Any

import chexops


@chexops.hookimpl
def register_families(register: Any) -> None:
    register(
        chexops.FamilySpec(
            name="{family}",                 # what users type in params.yaml and on the command line
            timm_name="resnet10t",           # the timm architecture
            tag="c3_in1k",                   # the pretrained tag the imagenet initializer loads
            group="ResNet",                  # families of one group are compared with each other
            imagenet_top1=None,              # the tag's ImageNet top-1 from timm's results table (None: left out of
                                             # the ImageNet-vs-CheXpert analyses until you fill it in)
            blocks=("layer1", "layer2", "layer3", "layer4"),  # stage modules, in forward order
            max_drop=3,                      # drop-last-k may remove up to 3 final blocks (one always stays)
            description="ResNet-10-T: timm resnet10t.c3_in1k",
        )
    )
'''

TESTS = '''"""{dist} registers {family}, which passes chexops' checks and builds at every depth."""

from __future__ import annotations

import torch

import chexops
from chexops.testing import check_family


def test_registered_by_this_package(chexops_plugins):
    loaded = chexops_plugins("{dist}")
    assert loaded.component("families", "{family}").distribution == "{dist}"


def test_passes_the_deep_checks(chexops_plugins):
    chexops_plugins("{dist}")
    report = check_family("{family}")
    assert sorted(report.parameters) == [0, 1, 2, 3]


def test_every_depth_builds_and_runs(chexops_plugins):
    chexops_plugins("{dist}")
    for depth in range(4):
        model, report = chexops.build_model("{family}", truncate=depth)
        with torch.no_grad():
            assert model.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, 14)
        assert report.plugin == "{dist}"
'''

README = '''# {dist}

A chexops plugin: the architecture family `{family}`.

```bash
pip install -e ".[test]"             # chexops finds it through its entry point; [test] adds pytest
python -m pytest                     # its tests, with chexops.testing (the venv's Python, with torch)
chexops plugins --check {dist}       # every component it registers, checked
chexops components families          # lists {family}
```
'''


def write_plugin(name: str, parent: Path) -> Path:
    """Write the package folder `parent/name`; refuses a name pip or Python cannot use, or an existing folder."""
    if not DIST_NAME.fullmatch(name):
        raise ConfigError(f"{name!r} cannot be a distribution name; use letters, digits and '-' or '_' between "
                          "them, e.g. chexops-mynets.")
    root = parent / name
    if root.exists():
        raise ConfigError(f"{root} already exists; choose another name or remove it.")
    package = name.replace("-", "_").lower()
    entry = package.removeprefix("chexops_") or package
    values = {"dist": name, "package": package, "entry": entry, "family": f"{entry}_resnet10t"}
    files = {"pyproject.toml": PYPROJECT, "README.md": README, f"{package}/__init__.py": '"""{dist}."""\n',
             f"{package}/plugin.py": PLUGIN, "tests/test_plugin.py": TESTS}
    for rel, template in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values))
    return root


@click.group("plugin")
def plugin_group() -> None:
    """Write plugins (`chexops plugins` lists and checks the installed ones)."""


@plugin_group.command("new")
@click.argument("name")
@click.option("--dir", "parent", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder to create the package in.")
def new_command(name: str, parent: str) -> None:
    """Write a ready plugin package NAME/: pyproject with the entry point, one family, tests using chexops.testing."""
    root = write_plugin(name, Path(parent))
    path = root if root.is_absolute() else f"./{root}"  # pip reads a bare `name[test]` as a package to download
    click.echo(f"wrote {root}/ ; next: pip install -e \"{path}[test]\" && python -m pytest {root}")
