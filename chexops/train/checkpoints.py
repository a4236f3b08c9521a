"""Atomic writes, the top-K checkpoint keeper and its manifest.

Every file is written to a temporary name and renamed into place, so a run killed at any moment leaves either
the old file or the new one, never half of one. The manifest is the only record of which checkpoints count.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from chexops.errors import DataError
from chexops.naming import MANIFEST_FILE, RANKING_METRIC, STATE_FILE, RunKey

# What torch.load raises on a truncated, zero-byte or overwritten file, depending on where the damage is.
LOAD_ERRORS = (EOFError, RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile)
_STATE_KEYS = ("fingerprint", "model", "optimizer", "keeper", "torch_rng", "progress")


def load_state_file(path: Path, keys: Sequence[str], what: str, then: str) -> dict[str, Any]:
    """A resumable state file (train or pretrain `state.pt`), loaded without running code and checked to hold
    `keys`; every error names the file as `what` and ends with `then` (what the user does about it).

    runs/ may sit on a filesystem shared with other users' workers, so the file is untrusted: torch's
    weights_only unpickler admits only tensors, dtypes and plain containers/numbers/strings, which is all a state
    holds (state dicts, the keeper's dicts, the CPU RNG byte tensor, the progress counters). A pickle naming any
    other global is refused before anything of it runs. Any failure (a planted pickle, a truncated or random
    file, whose bytes make pickle raise almost anything) is a DataError with the reason on one line.
    """
    try:
        with warnings.catch_warnings():  # a damaged file's "pickle protocol 79" warning would precede the error
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - random bytes raise OverflowError, MemoryError, AttributeError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        if isinstance(exc, pickle.UnpicklingError) and "weights_only" in str(exc):
            first = "it holds objects other than tensors and plain values, so it was not loaded (no code was run)"
        size = path.stat().st_size if path.is_file() else 0
        raise DataError(f"the saved state {path} is damaged or not chexops's ({size} bytes; {type(exc).__name__}: "
                        f"{first[:300]}){then}") from None
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise DataError(f"the {what} {path} lacks {missing}; it was not written by this chexops{then}")
    return state


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call `write(fileobj)` into a temporary file beside `path`, fsync it, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; the file gets the mode open() would give it, so workers of other users on a
        # shared filesystem can read the run, like every other file chexops writes
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the `.<name>.*.tmp` files `atomic_write_bytes` left in `folder` when a process was killed mid-write
    (SIGKILL skips its cleanup). Call it only where this process owns the folder (a run it resumes)."""
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


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


def _restart_hint(key: RunKey) -> str:
    return f"train it anew with `{key.train_command('--restart')}` (or `dvc repro` after deleting the folder)"


def read_state(run_dir: Path, key: RunKey) -> dict[str, Any] | None:
    """The saved training state of `run_dir` (None when there is none), checked to be complete and readable."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        return None
    return load_state_file(path, _STATE_KEYS, "saved training state",
                           f", so the run cannot resume from it; {_restart_hint(key)}.")


def verify_checkpoints(run_dir: Path, key: RunKey, kept: list[dict[str, Any]],
                       expected: dict[str, torch.Tensor] | None = None) -> None:
    """Every checkpoint a saved state keeps exists and loads (with `expected`'s keys and shapes, when given).

    A resumed run's ensemble is these files plus what it trains next; one lost or damaged would otherwise surface
    only in evaluate, after the whole remaining budget was trained and the run was marked finished.
    """
    for c in kept:
        path = run_dir / c["file"]
        if not path.is_file():
            raise DataError(f"checkpoint {path}, one of the top-{len(kept)} the saved state of {key.name} keeps, is "
                            f"missing, so the resumed ensemble would lack it; restore the file, or "
                            f"{_restart_hint(key)}.")
        try:
            weights = torch.load(path, map_location="cpu", weights_only=True)
        except LOAD_ERRORS as exc:
            raise DataError(f"checkpoint {path}, one of the top-{len(kept)} the saved state of {key.name} keeps, is "
                            f"damaged ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                            f"restore the file, or {_restart_hint(key)}.") from None
        if expected is not None and (not isinstance(weights, dict) or set(weights) != set(expected) or any(
                tuple(weights[k].shape) != tuple(v.shape) for k, v in expected.items())):
            raise DataError(f"checkpoint {path} does not hold weights of {key.name}'s network; restore the file, "
                            f"or {_restart_hint(key)}.")
