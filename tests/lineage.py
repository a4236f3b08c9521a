"""The chexops modules a DVC stage runs, found statically: the stage script's imports (its own chexops.stages module),
then every module those import, at any depth (imports inside functions count too, so the closure errs on the side
of more)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_file(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _imports(nodes: list[ast.AST]) -> set[str]:
    found: set[str] = set()
    for top in nodes:
        for node in ast.walk(top):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] == "chexops" and module_file(m)}


@cache
def _module_imports(module: str) -> frozenset[str]:
    return frozenset(_imports([ast.parse(module_file(module).read_text())]))


def closure(modules: set[str], opaque: frozenset[str] = frozenset()) -> set[str]:
    """`modules` and all they import; an `opaque` module counts itself but is not followed."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run their __init__
        if module not in opaque:
            todo += _module_imports(module)
        if module == "chexops.components.manager":  # loads the built-in plugins by name, not by import
            todo += [f"chexops.components.builtin.{p.stem}" for p in (REPO / "chexops/components/builtin").glob("*.py")]
    return seen


def stage_modules(script: Path) -> set[str]:
    """Every chexops module the stage script runs: its imports (each script imports only its own stage module
    and pipelines/_common.py's), followed at any depth."""
    start = _imports([ast.parse(script.read_text())])
    if "from _common import" in script.read_text():
        start |= _imports([ast.parse((script.parent / "_common.py").read_text())])
    return closure(start)
