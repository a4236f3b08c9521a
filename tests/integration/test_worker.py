"""`chexops worker`: a shared Optuna grid claimed exactly once per configuration, stale trials retried, and an
end-to-end run of two workers against a real PostgreSQL server and a real `mlflow server` (one of them killed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from chexops.errors import WorkerError
from chexops.evaluate.metrics import headline_key
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

def grid_params(root: Path, tracking_uri: str) -> dict:
    """Four tiny configurations (resnet18 full and with 1-3 blocks dropped) with a budget of a few hundred images."""
    return {
        "study": {"name": "workers"},
        "data": {"source": "synthetic", "synthetic": {"patients": 120, "seed": 2, "image_size": 48},
                 "image_size": 32, "index_dir": str(root / "index"), "cache_dir": str(root / "cache"), "workers": 1},
        "train": {"batch_size": 8, "epochs": 3, "max_examples": 320, "eval_every": 32, "top_k": 2, "lr": 1e-3,
                  "device": "cpu", "runs_dir": str(root / "runs")},
        "eval": {"bootstrap": 50},
        "tracking": {"uri": tracking_uri},
        "grid": {"families": ["resnet18"], "initializers": ["random"],
                 "truncated": [{"family": "resnet18", "depth": d, "init": "random"} for d in (1, 2, 3)]},
    }


def start_worker(root: Path, storage: str, name: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "chexops", "worker", "--storage", storage, "--optuna-study", "grid", "--params",
           str(root / "params.yaml"), "--heartbeat", "2", "--grace", "6", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=open(root / f"{name}.log", "w"), stderr=subprocess.STDOUT)




def _training_with_state(storage: optuna.storages.RDBStorage, worker: subprocess.Popen, root: Path) -> str | None:
    """The configuration `worker` is training, once its run folder holds a saved state."""
    if worker.poll() is not None:
        pytest.fail(f"worker exited with {worker.returncode}:\n{(root / 'doomed.log').read_text()[-4000:]}")
    try:
        study = optuna.load_study(study_name="grid", storage=storage)
    except KeyError:  # no worker has created the study yet
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        name = t.user_attrs.get(RUN_PARAM)
        if t.user_attrs.get("worker", "").endswith(f":{worker.pid}") and name in NAMES:
            if (KEYS[NAMES.index(name)].train_dir(root / "runs") / "state.pt").is_file():
                return name
    return None


def _check_optuna(storage: str, killed_run: str, root: Path) -> None:
    trials = optuna.load_study(study_name="grid", storage=storage).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params[RUN_PARAM] for t in complete) == sorted(NAMES)  # each configuration exactly once
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.params[RUN_PARAM] for t in failed] == [killed_run] and len(trials) == len(NAMES) + 1
    retried = next(t for t in complete if t.params[RUN_PARAM] == killed_run)
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retried) == failed[0].number
    assert retried.user_attrs["resumed_from_examples"] > 0  # picked up the dead worker's state, not restarted
    for t in complete:
        key = KEYS[NAMES.index(t.params[RUN_PARAM])]
        payload = json.loads((key.eval_dir(root / "runs") / "eval.json").read_text())
        trained = json.loads((key.train_dir(root / "runs") / "train.json").read_text())
        # the trial's value is what chose the checkpoints (validation); the test AUROC is only recorded beside it
        assert t.value == pytest.approx(trained["best_val_score"]) and 0 <= t.value <= 1
        assert trained["select_metric"] == "val_mean_auroc_5"
        headline = payload["headline"]["metric"]  # the tiny test split may leave a study task undefined
        assert t.user_attrs[headline] == pytest.approx(payload["metrics"][headline])
        assert t.user_attrs["run"] == key.name and t.user_attrs["mlflow_run_id"] == payload["mlflow_run_id"]


def _check_mlflow(uri: str, root: Path) -> None:
    from mlflow import MlflowClient

    from chexops.naming import registered_model_name

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("workers")
    # the configuration runs; the study's parent run (tag chexops.stage = study) holds them
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("chexops.stage") != "study"]
    assert sorted((r.info.run_name, r.info.status) for r in runs) == sorted((n, "FINISHED") for n in NAMES)
    for r in runs:
        assert headline_key(r.data.metrics) in r.data.metrics  # the 6-task mean, or fewer tasks named as such
        versions = client.search_model_versions(f"name='{registered_model_name('workers', r.info.run_name)}'")
        assert [(v.version, v.run_id) for v in versions] == [("1", r.info.run_id)]  # registered once
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"manifest.json", "eval.json"} <= artifacts  # in the server's shared artifact store
