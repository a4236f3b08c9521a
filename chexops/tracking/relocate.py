"""Pointing a project's SQLite store at the project's own artifact folder after the project was copied or moved.

MLflow records absolute artifact locations (experiment, runs, logged models, model versions). A copied project
would read and write the old folder; Tracker.open refuses it and names `chexops registry relocate`, which
rewrites those locations from the recorded folder to the project's.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from chexops.errors import TrackingError

# (table, column) of MLflow's SQLite schema that hold an artifact location
LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("logged_models", "artifact_location"), ("model_versions", "source"),
                    ("model_versions", "storage_location"))


def expected_location(artifacts: str, experiment: str) -> str:
    """Where this project keeps the experiment's artifacts (a local store's: beside the database)."""
    return (Path(artifacts).absolute() / experiment).as_uri()


def check_location(client: Any, uri: str, artifacts: str, experiment: str) -> None:
    """A local store whose experiment keeps its artifacts outside this project's folder (a copy not relocated)
    is refused: reading it would predict or promote with the original folder's models."""
    if not uri.startswith("sqlite:///"):
        return  # a server decides for itself where artifacts go
    found = client.get_experiment_by_name(experiment)
    location = expected_location(artifacts, experiment)
    if found is not None and found.artifact_location.startswith("file:") and found.artifact_location != location:
        raise TrackingError(f"experiment {experiment!r} in {uri} keeps its artifacts in {found.artifact_location}, "
                            f"not in this project's {location} (the project was copied or moved, or "
                            "tracking.artifacts changed), so its models would be read from the other folder. Run "
                            "`chexops registry relocate` to point the store here (copy the artifact folder first "
                            "if it is not here).")


def artifacts_missing(artifacts: str, experiment: str) -> bool:
    """Whether this project's artifact folder for `experiment` holds no file at all (e.g. a copy made without it)."""
    folder = Path(artifacts).absolute() / experiment
    return not folder.is_dir() or not any(p.is_file() for p in folder.rglob("*"))


def relocate(db: Path, old: str, new: str) -> int:
    """Rewrite every recorded location under `old` (a file URI) to lie under `new`; returns the rows changed."""
    if not db.is_file():
        raise TrackingError(f"no tracking store at {db}; run from the project's root or set tracking.uri.")
    pairs = [(old, new), (unquote(urlparse(old).path), unquote(urlparse(new).path))]
    changed = 0
    with sqlite3.connect(db) as con:
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, column in LOCATION_COLUMNS:
            if table not in tables:
                continue
            for before, after in pairs:
                cur = con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608
                                  f"WHERE substr({column}, 1, ?) = ?", (after, len(before) + 1, len(before), before))
                changed += cur.rowcount
    return changed
