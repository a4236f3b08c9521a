"""A configuration run's Duration is its training: evaluating and registering it later (other stages, other
processes) reopen it without stretching its end time, unless they fail."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from chexops.tracking.runs import Tracker


def test_reopening_to_evaluate_keeps_the_trained_duration(tmp_path: Path, empty_store: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    tracker = Tracker.open(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "mlartifacts"), "study")
    run_id = tracker.start_run("resnet18/random/full", {}, {})
    tracker.end_run(run_id)
    trained_end = tracker.client.get_run(run_id).info.end_time
    time.sleep(0.05)
    again = Tracker.open(tracker.uri, str(tmp_path / "mlartifacts"), "study")  # the evaluate stage's process
    again.start_run("resnet18/random/full", {}, {}, run_id=run_id, keep_duration=True)
    assert again.client.get_run(run_id).info.status == "RUNNING"
    again.end_run(run_id)
    run = again.client.get_run(run_id).info
    assert run.status == "FINISHED" and run.end_time == trained_end
    again.start_run("resnet18/random/full", {}, {}, run_id=run_id, keep_duration=True)
    again.end_run(run_id, "FAILED", "DataError: test split missing")
    assert again.client.get_run(run_id).info.end_time > trained_end  # a failure is dated when it happened
