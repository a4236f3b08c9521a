"""Round-3 fault audit, not measured before: SIGTERM during a train stage must not leave the MLflow run RUNNING."""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from chexops.interrupts import sigterm_as_interrupt, sigterm_interrupts


@pytest.fixture
def restore_sigterm():
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def test_a_sigterm_inside_the_run_guard_ends_the_run_killed(tmp_path, empty_store, restore_sigterm):
    from chexops.tracking.runs import Tracker

    shutil.copy(empty_store, tmp_path / "mlflow.db")
    tracker = Tracker.open(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "mlartifacts"), "r3-sigterm")
    run_id = tracker.start_run("resnet18/random/full", {}, {})
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sigterm_as_interrupt()
    with pytest.raises(KeyboardInterrupt):
        with tracker.run_guard(run_id):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
    assert tracker.client.get_run(run_id).info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # a second SIGTERM ends the process


def test_a_handler_someone_else_set_is_kept(restore_sigterm):
    def mine(signum, frame):
        return None

    signal.signal(signal.SIGTERM, mine)
    sigterm_as_interrupt()
    assert signal.getsignal(signal.SIGTERM) is mine


def test_a_run_guard_takes_sigterm_only_for_its_block(restore_sigterm):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with pytest.raises(KeyboardInterrupt, match="signal SIGTERM"):
        with sigterm_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def mine(signum, frame):
        return None

    signal.signal(signal.SIGTERM, mine)
    with sigterm_interrupts():
        assert signal.getsignal(signal.SIGTERM) is mine
    assert signal.getsignal(signal.SIGTERM) is mine
