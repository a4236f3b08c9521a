"""The sbatch script `chexops submit slurm` writes, the stop request the worker's USR1 handler makes, and
`chexops grid status` on a study, without a scheduler."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chexops.errors import SlurmError
from chexops.scaleout.slurm import SlurmArray, job_id, time_seconds

REPO = Path(__file__).resolve().parents[2]


def directives(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_script_asks_for_the_array_signal_requeue_and_appended_logs(tmp_path):
    array = SlurmArray(study="cx", tasks=6, max_running=2, gpus=1, cpus=4, mem="16G", time="4:00:00",
                       partition="gpu", account="lab", signal_lead=90, per_device="2", log_dir=tmp_path / "logs",
                       workdir=tmp_path, python="/opt/venv/bin/python", setup=["module load cuda"],
                       sbatch_options=["--qos=long"])
    script = array.script()
    assert script.startswith("#!/bin/bash\n")
    assert directives(script) == [
        "--job-name=chexops-cx", "--array=0-5%2", "--gres=gpu:1", "--cpus-per-task=4", "--mem=16G",
        "--time=4:00:00", "--partition=gpu", "--account=lab", "--requeue", "--open-mode=append",
        "--signal=B:USR1@90", f"--output={tmp_path}/logs/%x-%A_%a.log", f"--chdir={tmp_path}", "--qos=long"]
    lines = script.splitlines()
    # the worker replaces the batch shell (exec), after the user's setup lines, so USR1 to the shell reaches it
    assert lines.index("module load cuda") < len(lines) - 1
    last = shlex.split(lines[-1])
    assert last[:5] == ["exec", "/opt/venv/bin/python", "-m", "chexops", "worker"]
    assert {"--slurm-requeue", "--quiet"} <= set(last) and last[last.index("--per-device") + 1] == "2"
    assert "CHEXOPS_WORKER_STORAGE" in script and "postgresql" not in script  # the URL is never written


def test_script_passes_bash_syntax_check(tmp_path):
    path = tmp_path / "job.sbatch"
    path.write_text(SlurmArray(study="cx", tasks=1, setup=["source .venv/bin/activate"]).script())
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


@pytest.mark.parametrize(("value", "seconds"), [("30", 1800), ("5:30", 330), ("4:00:00", 14400), ("1-2", 93600),
                                                ("1-02:30", 95400), ("2-00:00:10", 172810)])
def test_time_formats(value, seconds):
    assert time_seconds(value) == seconds


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"time": "0:40", "signal_lead": 120}, "not shorter than --time"),
    ({"time": "four hours"}, "is not a SLURM time"),
    ({"tasks": 0}, "--tasks must be at least 1"),
    ({"sbatch_options": ["qos=long"]}, "long sbatch option"),
])
def test_bad_requests_are_one_line_errors(kwargs, message):
    with pytest.raises(SlurmError, match=message):
        SlurmArray(study="cx", **kwargs).script()


def test_job_id_names_the_array_task(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "107")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    assert job_id() == "107"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "100")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert job_id() == "100_7"  # what scontrol requeue takes to requeue this task alone


def _params(tmp_path: Path) -> Path:
    raw = {"study": {"name": "s"}, "grid": {"families": ["resnet18"], "initializers": ["random"], "truncated": []},
           "train": {"device": "cpu"}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_dry_run_prints_the_script_with_one_task_per_configuration(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), CHEXOPS_LOAD_PLUGINS="")
    done = subprocess.run([sys.executable, "-m", "chexops", "submit", "slurm", "--optuna-study", "cx", "--params",
                           str(_params(tmp_path)), "--gpus", "1", "--time", "1:00:00", "--dry-run"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "#SBATCH --array=0-0\n" in done.stdout and "#SBATCH --signal=B:USR1@120" in done.stdout
    assert not (tmp_path / "slurm-logs").exists()  # a dry run writes and submits nothing


def test_usr1_requests_a_stop_that_the_training_loop_sees():
    from chexops.cli.worker import _request_stop
    from chexops.train import interrupt

    interrupt.clear_stop()
    previous = signal.signal(signal.SIGUSR1, _request_stop)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert interrupt.stop_requested() and interrupt.stop_reason() == "SIGUSR1"
    finally:
        signal.signal(signal.SIGUSR1, previous)
        interrupt.clear_stop()


def test_grid_status_from_the_study(tmp_path):
    import optuna

    from chexops.scaleout.grid_status import GRID_ATTR, RUN_PARAM, grid_status, summary

    url = f"sqlite:///{tmp_path / 'grid.db'}"
    study = optuna.create_study(storage=url, study_name="g", direction="maximize")
    names = ["a/random/full", "b/random/full", "c/random/full", "d/random/full"]
    for name in names:
        study.enqueue_trial({RUN_PARAM: name}, user_attrs={RUN_PARAM: name})
    study.set_user_attr(GRID_ATTR, names)
    storage = study._storage
    trials = study.get_trials()
    dist = optuna.distributions.CategoricalDistribution(names)
    for t, state in zip(trials, ["done", "running", "failed"], strict=False):
        tid = t._trial_id
        storage.set_trial_state_values(tid, optuna.trial.TrialState.RUNNING)
        storage.set_trial_param(tid, RUN_PARAM, names.index(t.user_attrs[RUN_PARAM]), dist)
        storage.set_trial_user_attr(tid, "worker", "node1:42")
        storage.set_trial_user_attr(tid, "slurm_job", "9_1")
        if state == "done":
            storage.set_trial_state_values(tid, optuna.trial.TrialState.COMPLETE, [0.7])
        elif state == "failed":
            storage.set_trial_user_attr(tid, "error", "DataError: bad")
            storage.set_trial_state_values(tid, optuna.trial.TrialState.FAIL)
    statuses = grid_status(url, "g", examples=lambda run: 64)
    assert [(s.run, s.state) for s in statuses] == list(zip(names, ["done", "running", "failed", "queued"],
                                                            strict=True))
    running = statuses[1]
    assert (running.worker, running.slurm_job, running.examples) == ("node1:42", "9_1", 64)
    assert statuses[0].value == pytest.approx(0.7) and statuses[2].error == "DataError: bad"
    assert summary(statuses) == {"queued": 1, "running": 1, "done": 1, "failed": 1}
