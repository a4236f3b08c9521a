"""Two `chexops worker`s on a PostgreSQL optuna study and an MLflow server finish the grid once each, despite a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from fixtures.servers import wait_for
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from chexops.evaluate.metrics import headline_key
from chexops.naming import RunKey
from chexops.scaleout.worker import RUN_PARAM

KEYS = [RunKey("resnet18", "random", d) for d in range(4)]


NAMES = [k.name for k in KEYS]


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
           str(root / "params.yaml"), "--heartbeat", "2", "--grace", "15", "--quiet"]
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


def _logs(root: Path) -> str:
    """Both workers' last lines: a failure in either explains the other's exit."""
    return "\n".join(f"--- {name}.log\n" + (root / f"{name}.log").read_text()[-3000:]
                     for name in ("doomed", "survivor"))


def _trials(storage: str) -> str:
    """Each trial's state, configuration and error: why a configuration never completed."""
    trials = optuna.load_study(study_name="grid", storage=storage).get_trials()
    return "\n--- trials\n" + "\n".join(f"{t.number} {t.state.name} {t.params.get(RUN_PARAM)} "
                                         f"{t.user_attrs.get('worker', '')} {t.user_attrs.get('error', '')}"
                                         for t in trials)


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


@pytest.mark.slow
def test_two_workers_finish_the_grid_once_each_despite_a_kill(postgres, mlflow_server, tmp_path):
    from fixtures.training import prepare_study

    from chexops.config import config_from_dict

    raw = grid_params(tmp_path, mlflow_server)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    prepare_study(tmp_path, config_from_dict(raw))
    storage = postgres["url"]("optuna_grid")
    doomed, survivor = start_worker(tmp_path, storage, "doomed"), start_worker(tmp_path, storage, "survivor")
    try:
        watch = optuna.storages.RDBStorage(storage)
        killed_run = wait_for(lambda: _training_with_state(watch, doomed, tmp_path), 300,
                              "the first worker to save training state")
        doomed.send_signal(signal.SIGKILL)  # mid-training, between two saved states: a machine lost
        assert survivor.wait(timeout=600) == 0, _logs(tmp_path) + _trials(storage)
    finally:
        for p in (doomed, survivor):
            if p.poll() is None:
                p.kill()
    assert doomed.wait(timeout=30) == -signal.SIGKILL
    _check_optuna(storage, killed_run, tmp_path)
    _check_mlflow(mlflow_server, tmp_path)
    log = (tmp_path / "survivor.log").read_text()
    assert f"{killed_run} (resuming at" in log
    assert "INFO mlflow" not in log and "View run" not in log  # --quiet: chexops' own lines, not MLflow's
    late = start_worker(tmp_path, storage, "late")  # the grid is done: a new worker finds nothing and exits
    assert late.wait(timeout=120) == 0
    assert "this worker completed 0" in (tmp_path / "late.log").read_text()
