"""Every file name, tag key and headline-metric spelling is a literal in one module only (naming.py, records.py,
tracking/tags.py, ...): a second copy drifts. Docstrings and comments may mention them."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "chexops"

FILE_NAME = re.compile(r"^[\w-]+(\.[\w-]+)*\.(json|csv|pt|png|npy|db|md|yaml)$")
TAG_KEY = re.compile(r"^(chexops|mlflow)\.[A-Za-z_]+(\.[A-Za-z_]+)*\.?$")
HEADLINE = {"mean_auroc_6", "test_mean_auroc_6", "mean_auroc_5", "test_auroc_6"}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.rstrip(".").split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def defined_names(source: str) -> set[str]:
    """The file names, tag keys and headline spellings written as whole string literals in `source`."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
            if FILE_NAME.match(text) or text in HEADLINE or (TAG_KEY.match(text) and not _is_module(text)):
                found.add(text)
    return found


def test_the_scanner_finds_what_it_should() -> None:
    source = ('"""eval.json in a docstring"""\nA = "eval.json"\nB = "chexops.family"\nC = "chexops.cli.train"\n'
              'D = "mean_auroc_6"\n')
    assert defined_names(source) == {"eval.json", "chexops.family", "mean_auroc_6"}


def test_each_name_is_a_literal_in_one_module_only() -> None:
    owners: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        for name in defined_names(path.read_text()):
            owners[name].add(str(path.relative_to(PACKAGE.parent)))
    twice = {name: sorted(mods) for name, mods in owners.items() if len(mods) > 1}
    assert not twice, f"defined in several modules (define once, import it): {twice}"
