"""The layout keeps its promises: no private names across modules, no import cycles, a CLI that starts fast."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.lineage import REPO, module_file

MODULES = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
           for p in (REPO / "chexops").rglob("*.py")}


def chexops_imports(path: Path, module_level: bool) -> list[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("chexops"):
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("chexops")]
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_another_modules_private_names(module: str) -> None:
    private = [f"{m}.{n}" for m, names in chexops_imports(MODULES[module], False) for n in names
               if n.startswith("_") and m != module]
    assert not private, f"{module} imports private names {private}"


def import_graph(module_level: bool) -> dict[str, set[str]]:
    """module -> the chexops modules it imports (at module level only, or anywhere, inside functions too)."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        deps = set()
        for imported, names in chexops_imports(path, module_level):
            submodules = {f"{imported}.{n}" for n in names if module_file(f"{imported}.{n}")}
            deps |= submodules
            if not names or len(submodules) < len(names):  # `from pkg import submodule` needs only the submodule
                deps.add(imported)
        graph[module] = {d for d in deps if d in MODULES and d != module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for dep in graph.get(node, ()):
                if dep == start:
                    return path + [dep]
                if dep not in seen:
                    seen.add(dep)
                    stack.append((dep, path + [dep]))
        return None

    return [" -> ".join(c) for m in graph if m != "chexops" and (c := cycle_from(m))]


def test_no_import_cycles_counting_imports_inside_functions() -> None:
    # an import inside a function only hides a cycle from Python; the modules still depend on each other
    assert not find_cycles(import_graph(module_level=False))


def test_the_cycle_check_sees_imports_inside_functions() -> None:
    graph = {"a": {"b"}, "b": set()}
    assert find_cycles(graph) == []
    graph["b"].add("a")  # as `def f(): from a import x` in b would add
    assert find_cycles(graph) == ["a -> b -> a", "b -> a -> b"]


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["train", "--help"]])
def test_the_cli_starts_without_torch_or_pandas(args: list[str]) -> None:
    code = ("import sys\nfrom chexops.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'pandas', 'timm', 'mlflow', 'optuna') if m in sys.modules)\n"
            "print('HEAVY', heavy)\n")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={"CHEXOPS_LOAD_PLUGINS": "", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout[-2000:]


def test_naming_is_torch_free() -> None:
    code = ("import sys\nimport chexops.naming\n"
            "print(sorted(m for m in ('torch', 'numpy', 'mlflow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_no_test_module_imports_another() -> None:
    # shared helpers live in tests/fixtures/ and shared fixtures in tests/conftest.py; a test module that imports
    # another runs that module's fixtures and couples two tiers
    tests = REPO / "tests"
    modules = {p.stem for p in tests.rglob("test_*.py")}
    offenders = [f"{p.relative_to(REPO)}: {name}" for p in tests.rglob("*.py")
                 for name, _ in imported_modules(p) if name.split(".")[0] in modules]
    assert not offenders, offenders


def imported_modules(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
    return found
