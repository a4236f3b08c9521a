"""Round-3 fault audit, #10 (read-only store): `chexops promote` against a read-only mlflow.db is one line, without
MLflow's logged tracebacks before it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chexops import cli as cli_module

NAME = "study.resnet18.random.full"


@pytest.fixture
def read_only_store(tmp_path: Path, empty_store: Path, monkeypatch):
    """A store holding one version, whose connections refuse every write as a read-only file does
    (PRAGMA query_only gives SQLite's own 'attempt to write a readonly database'; chmod does not bind root)."""
    from mlflow import MlflowClient
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    shutil.copy(empty_store, tmp_path / "setup.db")
    client = MlflowClient(f"sqlite:///{tmp_path / 'setup.db'}")
    client.create_registered_model(NAME)
    client.create_model_version(NAME, source=str(tmp_path / "model"))
    (tmp_path / "ro").mkdir()
    shutil.copy(tmp_path / "setup.db", tmp_path / "ro" / "mlflow.db")  # a new URI: MLflow opens a new engine
    tmp_path = tmp_path / "ro"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def query_only(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA query_only = ON")

    event.listen(Engine, "connect", query_only)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    yield uri
    event.remove(Engine, "connect", query_only)


def test_promote_against_a_read_only_store_is_one_line(read_only_store, capsys):
    with pytest.raises(SystemExit) as info:
        cli_module.main(["promote", NAME, "1", "--alias", "champion"])
    captured = capsys.readouterr()
    assert info.value.code == 2
    assert "Traceback" not in captured.err and "Traceback" not in captured.out, captured.err[:2000]
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "readonly" in lines[0], captured.err[:2000]
