"""Atomic writes, the top-K checkpoint keeper and its manifest.

Every file is written to a temporary name and renamed into place, so a run killed at any moment leaves either
the old file or the new one, never half of one. The manifest is the only record of which checkpoints count.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from chexops.naming import MANIFEST_FILE, RANKING_METRIC


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call `write(fileobj)` into a temporary file beside `path`, fsync it, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, lambda fh: torch.save(obj, fh))


def atomic_write_json(data: Any, path: Path) -> None:
    atomic_write_bytes(path, lambda fh: fh.write(json.dumps(data, indent=2, sort_keys=False).encode()))


@dataclass
class Kept:
    """One kept checkpoint: where it is and how it scored on validation."""

    file: str
    step: int
    examples: int
    epoch: int
    score: float
    metrics: dict[str, float] = field(default_factory=dict)


class TopKKeeper:
    """Keeps the `k` checkpoints with the best validation score (ties: the earlier one stays)."""

    def __init__(self, run_dir: Path, k: int, metadata: dict[str, Any]) -> None:
        self.run_dir, self.k, self.metadata = run_dir, k, metadata
        self.kept: list[Kept] = []

    def consider(self, model: torch.nn.Module, step: int, examples: int, epoch: int, score: float,
                 metrics: dict[str, float]) -> bool:
        """Save the model if it is among the best k so far; returns whether it was kept."""
        if score != score:  # NaN: no defined validation task, nothing to rank by
            return False
        if len(self.kept) >= self.k and score <= self.kept[-1].score:
            return False
        name = f"checkpoints/ckpt-{examples:010d}.pt"
        atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, self.run_dir / name)
        self.kept.append(Kept(name, step, examples, epoch, score, metrics))
        self.kept.sort(key=lambda c: (-c.score, c.examples))
        for dropped in self.kept[self.k:]:
            (self.run_dir / dropped.file).unlink(missing_ok=True)
        self.kept = self.kept[: self.k]
        self.write_manifest()
        return True

    def write_manifest(self, **extra: Any) -> None:
        self.metadata.update(extra)
        checkpoints = [
            {"file": c.file, "step": c.step, "examples": c.examples, "epoch": c.epoch,
             RANKING_METRIC: c.score, "metrics": c.metrics}
            for c in self.kept
        ]
        atomic_write_json({**self.metadata, "top_k": self.k, "checkpoints": checkpoints}, self.run_dir / MANIFEST_FILE)

    def state(self) -> list[dict[str, Any]]:
        return [vars(c) for c in self.kept]

    def restore(self, state: list[dict[str, Any]]) -> None:
        """Back to a saved state; checkpoint files written after it (by a killed run) are removed."""
        self.kept = [Kept(**c) for c in state]
        keep = {c.file for c in self.kept}
        for path in (self.run_dir / "checkpoints").glob("ckpt-*.pt"):
            if f"checkpoints/{path.name}" not in keep:
                path.unlink()
        self.write_manifest()
