"""A process stopped by SIGTERM (dvc exp's queue, a scheduler, `kill`) inside a run leaves it KILLED, not RUNNING."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import sys, time
    from chexops.tracking.runs import Tracker
    tracker = Tracker.open(sys.argv[1], sys.argv[2], "study")
    run_id = tracker.start_run("resnet18/random/full", {}, {})
    with tracker.run_guard(run_id):
        print(run_id, flush=True)
        time.sleep(120)
""")


def test_sigterm_marks_the_run_killed(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = os.environ | {"PYTHONPATH": str(ROOT), "MLFLOW_LOGGING_LEVEL": "WARNING"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, uri, str(tmp_path / "mlartifacts")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_id = child.stdout.readline().strip()
    assert run_id, child.stderr.read()
    assert MlflowClient(uri).get_run(run_id).info.status == "RUNNING"
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=60)
    assert child.returncode != 0
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert run.data.tags["error"] == "KeyboardInterrupt (signal SIGTERM)"
