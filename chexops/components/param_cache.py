"""Parameter counts of registered families, cached per timm version in the user's cache folder.

Counting builds the network on the meta device: no weights, but still torch and timm imports and a second or so
for the 16 families. The count depends only on the timm version, the architecture and the head size, so it is
kept in `~/.cache/chexops/` (or $XDG_CACHE_HOME) and `chexops components families` answers from it.
A family with its own `create` function is never cached: its code can change without a version bump.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any


def cache_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    try:
        timm_version = metadata.version("timm")
    except metadata.PackageNotFoundError:
        timm_version = "none"
    return base / "chexops" / f"parameters-timm-{timm_version}.json"


def cached_count(family: Any, num_classes: int, count: Callable[[], int]) -> int:
    if family.create is not None:
        return count()
    path, key = cache_path(), f"{family.timm_name}/{num_classes}"
    try:
        known: dict[str, int] = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = count()
        try:  # a read-only home only costs the cache
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
            tmp.replace(path)
        except OSError:
            pass
    return int(known[key])
