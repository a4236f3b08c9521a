"""`chexops submit slurm` against a real single-node SLURM (Debian's slurmctld, slurmd, munge) started here under a
temp folder: a 2-task array trains a grid of 2 configurations, one task gets USR1 mid-training (as at a time limit
or a preemption), saves, hands its configuration back, requeues itself, and the grid ends with every
configuration trained once, resumed rather than restarted, with one FINISHED MLflow run each."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from fixtures.servers import free_port, wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SBIN = Path("/usr/sbin")


def _daemon(name: str) -> str | None:
    return shutil.which(name) or (str(SBIN / name) if (SBIN / name).is_file() else None)


SLURM_CONF = """\
ClusterName=chexops
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.sock,cred_expire=10
StateSaveLocation={root}/state/ctld
SlurmdSpoolDir={root}/state/d
SlurmctldPidFile={root}/state/slurmctld.pid
SlurmdPidFile={root}/state/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=10
GresTypes=gpu
NodeName=localhost NodeHostname={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=2000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES State=UP
"""


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop(pid: int | None, timeout: float = 15) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def _start_munge(root: Path) -> int:
    """A munged of this test's own (socket, pid, seed and log under `root`), so that no other test's munged
    coming or going touches this cluster; its PID."""
    run = root / "munge"
    run.mkdir()
    shutil.chown(run, "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", _daemon("munged"), f"--socket={run}/munge.sock",
                    f"--pid-file={run}/munged.pid", f"--seed-file={run}/munged.seed", f"--log-file={run}/munged.log"],
                   check=True, timeout=30)
    return wait_for(lambda: _pid(run / "munged.pid"), 10, "munged's pid file", poll=0.3)


@pytest.fixture(scope="module")
def slurm():
    """munged, slurmctld and slurmd of its own on 127.0.0.1 with free ports, 2 CPUs and 2 fake GPUs."""
    if None in (_daemon("slurmctld"), _daemon("slurmd"), _daemon("munged"), shutil.which("sbatch")):
        pytest.skip("SLURM is not installed: apt-get install -y slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        pytest.skip("the single-node SLURM test starts slurmd and makes fake GPU devices, which needs root")
    root = Path(tempfile.mkdtemp(prefix="chexops-slurm-"))
    root.chmod(0o755)  # munged runs as user munge: its folder below must be reachable
    for sub in ("etc", "state/ctld", "state/d", "log"):
        (root / sub).mkdir(parents=True)
    for i in range(2):  # fake GPUs: character devices; SLURM only hands out their indexes
        os.mknod(root / f"gpu{i}", 0o666 | 0o020000, os.makedev(1, 3))
    conf = root / "etc" / "slurm.conf"
    conf.write_text(SLURM_CONF.format(root=root, host=socket.gethostname().split(".")[0], ctld_port=free_port(),
                                      d_port=free_port()))
    (root / "etc" / "gres.conf").write_text(f"AutoDetect=off\nNodeName=localhost Name=gpu File={root}/gpu[0-1]\n")
    env = dict(os.environ, SLURM_CONF=str(conf))
    munge_pid = _start_munge(root)
    try:
        subprocess.run([_daemon("slurmctld"), "-f", str(conf)], check=True, env=env, timeout=30)
        subprocess.run([_daemon("slurmd"), "-f", str(conf), "-N", "localhost"], check=True, env=env, timeout=30)

        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env)
            return out.stdout.strip() == "idle"

        try:
            wait_for(idle, 60, "the SLURM node to be idle", poll=0.3)
        except BaseException:
            state = subprocess.run(["sinfo", "-N", "-o", "%N %T %E"], capture_output=True, text=True, env=env)
            logs = "".join(p.read_text()[-1500:] for p in sorted((root / "log").glob("*.log")))
            print(f"sinfo:\n{state.stdout}{state.stderr}\nlogs:\n{logs}")
            raise
        yield {"env": env, "root": root}
    finally:
        _stop(_pid(root / "state" / "slurmd.pid"))
        _stop(_pid(root / "state" / "slurmctld.pid"))
        _stop(munge_pid)
        shutil.rmtree(root, ignore_errors=True)


def grid_params(root: Path) -> dict:
    """Two tiny configurations (resnet18 full and with a block dropped), long enough to be signalled mid-way."""
    return {
        "study": {"name": "slurm"},
        "data": {"source": "synthetic", "synthetic": {"patients": 120, "seed": 2, "image_size": 48},
                 "image_size": 32, "index_dir": str(root / "index"), "cache_dir": str(root / "cache"), "workers": 1},
        "train": {"batch_size": 8, "epochs": 30, "max_examples": 640, "eval_every": 200, "top_k": 2, "lr": 1e-3,
                  "device": "cpu", "runs_dir": str(root / "runs")},
        "eval": {"bootstrap": 20},
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}"},
        "grid": {"families": ["resnet18"], "initializers": ["random"],
                 "truncated": [{"family": "resnet18", "depth": 1, "init": "random"}]},
    }


def _env(slurm_env: dict, storage: str) -> dict:
    env = {k: v for k, v in slurm_env.items() if k != "MLFLOW_TRACKING_URI"}
    path = env.get("PYTHONPATH")
    return env | {"PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO), "OMP_NUM_THREADS": "1",
                  "CHEXOPS_WORKER_STORAGE": storage, "CHEXOPS_LOAD_PLUGINS": ""}


def _chexops(args: list[str], root: Path, env: dict) -> str:
    done = subprocess.run([sys.executable, "-m", "chexops", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _prepare(root: Path, env: dict) -> None:
    for stage in ("ingest", "prepare"):
        done = subprocess.run([sys.executable, str(REPO / "pipelines" / f"{stage}.py"), "--params", "params.yaml",
                               "--quiet"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


def _training_task(storage: str, root: Path) -> tuple[str, str] | None:
    """(configuration, SLURM job) of a running trial whose run folder already holds a saved state."""
    import optuna

    from chexops.naming import RunKey

    keys = {k.name: k for k in (RunKey("resnet18", "random", d) for d in (0, 1))}
    try:
        study = optuna.load_study(study_name="grid", storage=storage)
    except KeyError:
        return None
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        name, job = t.user_attrs.get("run"), t.user_attrs.get("slurm_job")
        if name in keys and job and (keys[name].train_dir(root / "runs") / "state.pt").is_file():
            return name, job
    return None


def test_array_task_signalled_mid_training_requeues_and_resumes(slurm, tmp_path):
    import optuna
    from mlflow import MlflowClient

    t0 = time.monotonic()
    root = tmp_path
    (root / "params.yaml").write_text(yaml.safe_dump(grid_params(root)))
    storage = f"sqlite:///{root / 'grid.db'}"
    env = _env(slurm["env"], storage)
    _prepare(root, env)
    # one store, created before the tasks start (two workers creating one SQLite MLflow store at once race)
    MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}").search_experiments()
    out = _chexops(["submit", "slurm", "--optuna-study", "grid", "--tasks", "2", "--gpus", "1", "--cpus", "1",
                    "--heartbeat", "2", "--grace", "8", "--log-dir", "logs", "--signal-lead", "30"], root, env)
    job = re.search(r"submitted array job (\d+)", out).group(1)
    script = (root / "logs" / "chexops-grid.sbatch").read_text()
    assert "#SBATCH --signal=B:USR1@30" in script and "\nexec " in script and "#SBATCH --requeue" in script
    name, task = wait_for(lambda: _training_task(storage, root), 150, "a task to save training state", poll=0.3)
    assert task.startswith(f"{job}_")
    subprocess.run(["scancel", "--signal=USR1", "--batch", task], check=True, env=env, timeout=30)

    def finished() -> bool:
        q = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, env=env)
        return q.returncode == 0 and not q.stdout.strip()

    try:
        wait_for(finished, 200, "the array to finish", poll=1.0)
    finally:
        queue = subprocess.run(["squeue", "-j", job, "-o", "%i %T %r"], capture_output=True, text=True, env=env)
        print(f"squeue after {time.monotonic() - t0:.0f} s:\n{queue.stdout}{queue.stderr}")
    logs = {p.name: p.read_text() for p in (root / "logs").glob("*.log")}
    log = logs[f"chexops-grid-{task}.log"]
    assert "stopped on SIGUSR1" in log and "requeueing this SLURM task" in log, log[-3000:]
    assert "restart 1" in log, log[-3000:]  # one log per task, appended across the requeue
    stop_line = re.search(r"stopped at (\d+)/(\d+) examples", log)
    assert stop_line and 0 < int(stop_line.group(1)) < int(stop_line.group(2)), log[-3000:]

    trials = optuna.load_study(study_name="grid", storage=storage).get_trials()
    runs = sorted(t.params["run"] for t in trials)
    assert len(trials) == 2 and len(set(runs)) == 2, [(t.number, t.state, t.params) for t in trials]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    stopped = next(t for t in trials if t.params["run"] == name)
    assert stopped.user_attrs["stops"] == 1
    assert stopped.user_attrs["resumed_from_examples"] == int(stop_line.group(1))  # resumed where it stopped

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("slurm")
    mruns = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("chexops.stage") != "study"]
    assert sorted((r.info.run_name, r.info.status) for r in mruns) == sorted((n, "FINISHED") for n in runs)
    resumed = next(r for r in mruns if r.info.run_name == name)
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "train_loss")]
    assert steps == sorted(set(steps)), steps  # one history: no evaluation logged twice from a restart

    status = _chexops(["grid", "status", "--optuna-study", "grid", "--params", "params.yaml"], root, env)
    assert "2 done" in status and "0 failed" in status, status
    print(f"SLURM grid test: {time.monotonic() - t0:.0f} s")
