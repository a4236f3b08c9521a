"""The chexops modules a DVC stage runs, found statically: the stage script's imports, the stage function in
chexops.stages (with the helpers it calls there), then every module those import, at any depth (imports inside
functions count too, so the closure errs on the side of more)."""

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


def stage_function_imports(name: str) -> set[str]:
    """Imports of chexops.stages' module level plus those of `name` and the stages.py functions (and
    StageContext methods) it calls."""
    tree = ast.parse(module_file("chexops.stages").read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        functions |= {m.name: m for m in cls.body if isinstance(m, ast.FunctionDef)}
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    used, todo = set(), [name]
    while todo:
        fn = todo.pop()
        if fn in used or fn not in functions:
            continue
        used.add(fn)
        todo += [n.id for n in ast.walk(functions[fn]) if isinstance(n, ast.Name)]
        todo += [n.attr for n in ast.walk(functions[fn]) if isinstance(n, ast.Attribute)]
    return _imports(top + [functions[f] for f in used]) | {"chexops.stages"}


def stage_modules(script: Path, stage: str | None) -> set[str]:
    """Every chexops module the stage script runs (the stage function's own closure when `stage` is given)."""
    start = _imports([ast.parse(script.read_text())])
    if "from _common import" in script.read_text():
        start |= _imports([ast.parse((script.parent / "_common.py").read_text())])
    if stage:
        start |= stage_function_imports(stage)
    # chexops.stages holds every stage: only the module level and the stage's own functions count
    return closure(start, opaque=frozenset({"chexops.stages"}))
