"""`chexops worker`: a shared Optuna grid claimed exactly once per configuration, stale trials retried, and an
end-to-end run of two workers against a real PostgreSQL server and a real `mlflow server` (one of them killed)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from chexops.errors import WorkerError
from chexops.naming import RunKey
from chexops.scaleout.worker import RUN_PARAM, Grid, claim, grid_pending, open_grid, open_trial, serialised_claims

KEYS = [RunKey("resnet18", "random", d) for d in range(4)]
NAMES = [k.name for k in KEYS]


# --- the claim mechanism, on SQLite (one machine) and PostgreSQL ---------------------------------------------

def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'grid.db'}"


def test_first_worker_enqueues_the_grid_once_and_others_check_it(tmp_path):
    url = sqlite_url(tmp_path)
    first = open_grid(url, "g", KEYS, heartbeat=1)
    second = open_grid(url, "g", KEYS, heartbeat=1)
    trials = second.study.get_trials()
    assert len(trials) == len(KEYS) and all(t.state == TrialState.WAITING for t in trials)
    assert [t.user_attrs[RUN_PARAM] for t in trials] == NAMES and first.study_id == second.study_id
    with pytest.raises(WorkerError, match=r"holds the grid .* but this worker's params.yaml gives"):
        open_grid(url, "g", KEYS[:2], heartbeat=1)


def _claim_all(url: str, study: str, got: list[int], start: threading.Barrier) -> None:
    grid = open_grid(url, study, _many_keys(), heartbeat=5)  # its own storage and connections, like another worker
    start.wait(timeout=60)
    while True:
        with serialised_claims(url):
            trial_id = claim(grid)
        if trial_id is None:
            return
        got.append(grid.storage.get_trial(trial_id).number)


def _many_keys() -> list[RunKey]:
    return [RunKey("resnet18", f"init{i}", 0) for i in range(40)]


def _assert_each_claimed_once(url: str) -> None:
    open_grid(url, "many", _many_keys(), heartbeat=5)
    claimed: list[list[int]] = [[] for _ in range(6)]
    start = threading.Barrier(len(claimed))
    threads = [threading.Thread(target=_claim_all, args=(url, "many", got, start)) for got in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    numbers = [n for got in claimed for n in got]
    assert sorted(numbers) == list(range(40))  # every trial claimed, none twice
    assert sum(1 for got in claimed if got) >= 2  # the claimers really competed


def test_concurrent_claims_take_each_trial_once_sqlite(tmp_path):
    _assert_each_claimed_once(sqlite_url(tmp_path))


def test_concurrent_claims_take_each_trial_once_postgres(postgres):
    _assert_each_claimed_once(postgres["url"]("claims"))


def test_a_stale_trial_is_failed_and_its_configuration_retried(tmp_path):
    url = sqlite_url(tmp_path)
    grid = open_grid(url, "g", KEYS, heartbeat=1, grace=2)
    dead = claim(grid)  # a worker that claims and then never beats again
    assert grid_pending(grid)
    time.sleep(3.5)
    optuna.storages.fail_stale_trials(grid.study)
    trials = grid.study.get_trials()
    assert trials[0].state == TrialState.FAIL and trials[0].number == grid.storage.get_trial(dead).number
    retry = trials[-1]
    assert retry.state == TrialState.WAITING and RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0
    other = open_grid(url, "g", KEYS, heartbeat=1, grace=2)  # another worker: its own storage and trial cache
    claimed = [claim(other) for _ in range(len(KEYS))]
    names = [open_trial(other, i, NAMES)[1] for i in claimed]
    assert sorted(names) == sorted(NAMES)  # the dead worker's configuration is back, nothing duplicated
    assert claim(other) is None and claim(grid) is None


def test_grid_pending_until_every_trial_is_finished(tmp_path):
    grid: Grid = open_grid(sqlite_url(tmp_path), "g", KEYS[:1], heartbeat=1)
    trial_id = claim(grid)
    assert claim(grid) is None and grid_pending(grid)  # nothing to claim, but one still runs
    grid.study.tell(grid.storage.get_trial(trial_id).number, 0.5)
    assert not grid_pending(grid)


# --- servers --------------------------------------------------------------------------------------------------


# --- end to end -----------------------------------------------------------------------------------------------
