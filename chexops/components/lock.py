"""plugins.lock.json: the installed plugins a study's stages ran with (distribution, version, hash of their code).

DVC cannot see inside site-packages, so the pipeline's first stage (`plugins`, always re-run, under a second)
writes this file and every later stage depends on it: changing a plugin's code or version changes the file, and
DVC re-runs exactly the stages that use plugins. Every stage also checks the file against what is installed, so a
stage run by hand never silently uses other plugin code than the record says.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from chexops.errors import PluginError
from chexops.naming import PLUGINS_LOCK


def _package_files(module: str) -> tuple[Path, list[Path]]:
    """The folder and source files of the top-level package (or single module) that provides `module`."""
    spec = importlib.util.find_spec(module.split(".")[0])
    if spec is None or spec.origin is None:
        raise PluginError(f"cannot find the source of plugin module {module!r}; reinstall its package.")
    if spec.submodule_search_locations:
        root = Path(spec.origin).parent
        files = sorted(p for p in root.rglob("*")
                       if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"))
        return root, files
    return Path(spec.origin).parent, [Path(spec.origin)]


def code_hash(module: str) -> str:
    """sha256 over the relative names and bytes of a plugin package's files."""
    root, files = _package_files(module)
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def installed() -> list[dict[str, Any]]:
    """The outside plugins that load in this environment (CHEXOPS_LOAD_PLUGINS applies), sorted by name."""
    from chexops.components.manager import IN_TEST, plugin_manager

    pm, infos = plugin_manager()
    rows = []
    for info in sorted(infos.values(), key=lambda i: i.name):
        if info.builtin or info.distribution == IN_TEST:  # chexops' own code (a DVC dependency already), or
            continue  # a plugin object a test registered, which no installed code provides
        module = pm.get_plugin(info.name).__name__
        rows.append({"name": info.name, "distribution": info.distribution, "version": info.version,
                     "module": module, "code_sha256": code_hash(module)})
    return rows


def lock_payload() -> str:
    return json.dumps({"plugins": installed()}, indent=2) + "\n"


def write_lock(path: str | Path = PLUGINS_LOCK, grid: dict[str, Any] | None = None) -> list[str]:
    """Record the installed plugins (plugins.lock.json) and each component's fingerprint (plugins.lock/, one file
    per component, which the stages depend on); `grid` (params.yaml's) adds its initializer arguments and
    truncated entries. Returns what changed: DVC then re-runs exactly the stages that use it."""
    from chexops.components.lineage import LOCK_DIR, lock_files, write_lock_files
    from chexops.naming import DEFAULT_STRATEGY

    path, text = Path(path), lock_payload()
    changed = []
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
        changed.append(path.name)
    grid = grid or {}
    truncated = grid.get("truncated") or []
    entries = list(truncated.values()) if isinstance(truncated, dict) else list(truncated)
    files = lock_files(list(grid.get("initializers") or []), entries, DEFAULT_STRATEGY)
    return changed + write_lock_files(files, path.parent / LOCK_DIR)


def check_lock(path: str | Path = PLUGINS_LOCK) -> None:
    """Refuse to run a stage with other plugins than plugins.lock.json records (no file: nothing to check)."""
    path = Path(path)
    if not path.is_file():
        return
    try:
        recorded = {p["name"]: p for p in json.loads(path.read_text())["plugins"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise PluginError(f"{path} is not a plugins lock file ({exc}); rewrite it with `chexops plugins --lock`.") \
            from exc
    now = {p["name"]: p for p in installed()}
    changes = [f"{n} added" for n in now.keys() - recorded.keys()]
    changes += [f"{n} removed" for n in recorded.keys() - now.keys()]
    for name in now.keys() & recorded.keys():
        was, new = recorded[name], now[name]
        if was["version"] != new["version"]:
            changes.append(f"{name} {was['version']} -> {new['version']}")
        elif was["code_sha256"] != new["code_sha256"]:
            changes.append(f"{name} code changed")
    if changes:
        raise PluginError(f"the installed plugins differ from {path} ({'; '.join(sorted(changes))}): results would "
                          "not match their record. Run `dvc repro` (its `plugins` stage records them and re-runs the "
                          "stages that use them), or `chexops plugins --lock` before running a stage by hand.")
