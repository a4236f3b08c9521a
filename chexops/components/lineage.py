"""Per-component lineage: what each registered component *does*, hashed, so DVC re-runs exactly the stages that use
a component that changed.

A component's fingerprint covers its spec's fields, and for each callable (create, apply, pretrain) its source and,
followed through the plugin's own code, the functions, classes and constant values it reads. An edit to a constant
no component reads changes no fingerprint; a new plugin version changes the fingerprints of its components only.

The `plugins` stage writes one small file per component, `plugins.lock/<kind>/<name>.json` (and one per grid
initializer argument, e.g. `checkpoint:PATH`, with the checkpoint's sha256; and one per grid.truncated entry), and
each stage in dvc.yaml depends on the files of the components it uses: its family, initializer, label policy and,
for a truncated run, its truncation strategy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import re
import types
from pathlib import Path
from typing import Any

from chexops.errors import PluginError
from chexops.records import file_sha256

LOCK_DIR = Path("plugins.lock")  # per-component files; plugins.lock.json beside it records the distributions
_SIMPLE = (int, float, str, bytes, bool, type(None))
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _own(value: Any, package: str) -> bool:
    """Whether `value` is defined in the plugin's own top-level package (its code, not a library's)."""
    module = getattr(value, "__module__", None) or ""
    return module.split(".")[0] == package


def _source(value: Any) -> str:
    try:
        return inspect.getsource(value)
    except (OSError, TypeError):
        code = getattr(value, "__code__", None)
        return code.co_code.hex() if code is not None else repr(value)


def _function_text(fn: Any, package: str, seen: set[int]) -> list[str]:
    """The source of `fn` and of what it reads from its module: own functions and classes (followed), simple
    constants (by value). Library code and modules are the environment's, recorded by their versions."""
    if id(fn) in seen:
        return []
    seen.add(id(fn))
    parts = [_source(fn)]
    code = getattr(fn, "__code__", None)
    if code is None:
        return parts
    scope = getattr(fn, "__globals__", {})
    closure = [c.cell_contents for c in (fn.__closure__ or ()) if _cell_set(c)]
    for name in sorted(_code_names(code)):
        if name in scope:
            parts += _value_text(name, scope[name], package, seen)
    for i, value in enumerate(closure):
        parts += _value_text(f"<closure {i}>", value, package, seen)
    return parts


def _cell_set(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _value_text(name: str, value: Any, package: str, seen: set[int]) -> list[str]:
    if isinstance(value, _SIMPLE):
        return [f"{name} = {value!r}"]
    if isinstance(value, set | frozenset) and len(repr(value)) < 10_000:  # repr order follows string hashing
        return [f"{name} = {sorted(map(repr, value))}"]
    if isinstance(value, tuple | list | dict) and len(repr(value)) < 10_000:
        return [f"{name} = {value!r}"]
    if inspect.isfunction(value) and _own(value, package):
        return _function_text(value, package, seen)
    if inspect.isclass(value) and _own(value, package) and id(value) not in seen:
        seen.add(id(value))
        return [_source(value)]
    return []


def fingerprint(spec: Any, package: str) -> str:
    """sha256 (16 hex) of what the component does: its fields, its callables' code and what they read."""
    parts: list[str] = [type(spec).__name__]
    seen: set[int] = set()
    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        if callable(value) and not isinstance(value, type):
            parts.append(f"{field.name}:")
            parts += _function_text(value, package, seen)
        else:
            parts.append(f"{field.name} = {value!r}")
    text = _ADDRESS.sub("", "\n".join(parts))  # a default repr's memory address differs in every process
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def component_record(kind: str, name: str) -> dict[str, Any]:
    """What the lock records for one component: the plugin that provides it, its version and fingerprint."""
    from chexops.components.registry import get_registry

    entry = get_registry().entry(kind, name)
    package = (type(entry.spec).__module__ if entry.plugin.builtin else _plugin_package(entry.plugin.name))
    return {"kind": kind, "name": name, "plugin": entry.plugin.name, "distribution": entry.plugin.distribution,
            "version": entry.plugin.version, "fingerprint": fingerprint(entry.spec, package.split(".")[0])}


def _plugin_package(plugin_name: str) -> str:
    from chexops.components.manager import plugin_manager

    pm, _ = plugin_manager()
    return pm.get_plugin(plugin_name).__name__


def initializer_record(initializer: str) -> dict[str, Any]:
    """An initializer as the grid names it; `checkpoint:PATH` also records the file's sha256 (a new checkpoint
    at the same path re-runs what starts from it)."""
    base, _, argument = initializer.partition(":")
    record = component_record("initializers", base)
    if argument:
        path = Path(argument).expanduser()
        record["argument"] = argument
        record["file_sha256"] = file_sha256(path) if path.is_file() else "missing"
    return record


def lock_files(grid_initializers: list[str], truncated: list[dict[str, Any]],
               default_strategy: str) -> dict[Path, dict[str, Any]]:
    """Every per-component file the `plugins` stage writes, relative to LOCK_DIR: each registered component, each
    grid initializer with an argument, and each grid.truncated entry (named by the keys every entry has, family,
    init and depth, as dvc.yaml can template them for a mapping or a list of entries)."""
    from chexops.components.registry import KINDS, get_registry

    registry = get_registry()
    files = {Path(kind) / f"{e.name}.json": component_record(kind, e.name)
             for kind in KINDS for e in registry.entries(kind)}
    for initializer in grid_initializers:
        if ":" in initializer:
            files[Path("initializers") / f"{initializer}.json"] = initializer_record(initializer)
    for entry in truncated:
        name = f"{entry.get('family')}__{entry.get('init')}__drop-{entry.get('depth')}"
        files[Path("truncated") / f"{name}.json"] = component_record("truncations",
                                                                  entry.get("strategy") or default_strategy)
    return files


def write_lock_files(files: dict[Path, dict[str, Any]], folder: Path = LOCK_DIR) -> list[str]:
    """Write the files that changed (and remove those no longer wanted); the changed names, for the log."""
    changed = []
    for rel, record in files.items():
        path = folder / rel
        text = json.dumps(record, indent=2) + "\n"
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(str(rel))
    wanted = {folder / rel for rel in files}
    for stale in sorted(p for p in folder.rglob("*.json") if p not in wanted) if folder.is_dir() else []:
        stale.unlink()
        changed.append(f"{stale.relative_to(folder)} (removed)")
    return changed


def check_recorded(wanted: dict[Path, dict[str, Any]], folder: Path = LOCK_DIR) -> None:
    """Refuse to run with a component other than the lock records (no folder: nothing recorded, nothing to check)."""
    from chexops.components.registry import KINDS

    if not folder.is_dir():
        return
    changed = []
    for rel, now in wanted.items():
        path = folder / rel
        try:
            recorded = json.loads(path.read_text()) if path.is_file() else None
        except ValueError:
            recorded = {}
        if recorded != now:
            what = f"{KINDS[now['kind']][2]} {now['name']!r} ({now['distribution']} {now['version']})"
            changed.append(f"{what}: {'not recorded' if recorded is None else 'changed'}")
    if changed:
        raise PluginError(f"the installed components differ from {folder}/ ({'; '.join(changed)}): results would not "
                          "match their record. Run `dvc repro` (its `plugins` stage records them and re-runs the "
                          "stages that use them), or `chexops plugins --lock` before running a stage by hand.")
