"""Pointing a project's SQLite store at the project's own artifact folder after the project was copied or moved.

MLflow records absolute artifact locations (experiment, runs, logged models, model versions). A copied project
would read and write the old folder; Tracker.open refuses it and names `chexops registry relocate`, which
rewrites those locations from the recorded folder to the project's.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlparse

from chexops.errors import TrackingError

# (table, column) of MLflow's SQLite schema that hold an artifact location
LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("logged_models", "artifact_location"), ("model_versions", "source"),
                    ("model_versions", "storage_location"))


def expected_location(artifacts: str, experiment: str) -> str:
    """Where this project keeps the experiment's artifacts (a local store's: beside the database)."""
    return (Path(artifacts).absolute() / experiment).as_uri()


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
