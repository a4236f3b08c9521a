"""The grid on a SLURM cluster: an sbatch array of `chexops worker` tasks, and a task requeueing itself.

Each array task is one worker on the shared Optuna study (or `--per-device` workers packed on its GPUs): the study
is the queue, SLURM only provides the machines. The script asks SLURM to signal the batch shell with USR1 `lead`
seconds before the time limit (`--signal=B:USR1@lead`; also sent on preemption when the cluster sets
`preempt_send_user_signal`) and `exec`s the worker, so the worker *is* that shell and gets the signal (a plain
`--signal` goes to job steps, which a batch-started Python is not). On USR1 the worker stops at its next training
step, saves its state, puts its configuration back in the queue and, while the grid has work left, requeues its
own array task with `scontrol requeue`; the requeued task claims a configuration and resumes from its state.
`--requeue` lets the task be requeued and `--open-mode=append` keeps one log per task across requeues. Nothing
here needs `sacct` (often disabled).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from chexops.errors import SlurmError
from chexops.naming import PARAMS_FILE

log = logging.getLogger(__name__)

STORAGE_ENV = "CHEXOPS_WORKER_STORAGE"  # the Optuna storage URL: passed through the environment, never written
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


@dataclass
class SlurmArray:
    """What `chexops submit slurm` asks of SLURM; `script()` is the sbatch file."""

    study: str  # the Optuna study holding the grid
    params: str = PARAMS_FILE
    tasks: int = 1  # array tasks = workers (or packs of --per-device workers)
    max_running: int | None = None  # at most this many tasks at once (%M)
    gpus: int = 0  # GPUs per task (--gres=gpu:G)
    cpus: int | None = None
    mem: str | None = None
    time: str | None = None  # SLURM time format: MM, HH:MM:SS, D-HH:MM ...
    partition: str | None = None
    account: str | None = None
    signal_lead: int = 120  # seconds before the time limit that USR1 comes
    per_device: str | None = None  # workers per GPU inside one task: N or auto
    profile: str | None = None  # for --per-device auto
    log_dir: Path = Path("slurm-logs")
    workdir: Path = field(default_factory=Path.cwd)
    python: str = field(default_factory=lambda: sys.executable)
    setup: list[str] = field(default_factory=list)  # shell lines before the worker: module load, source activate
    sbatch_options: list[str] = field(default_factory=list)  # extra #SBATCH lines, e.g. --qos=long
    job_name: str | None = None
    heartbeat: int | None = None
    grace: int | None = None
    register: bool = True

    def check(self) -> None:
        if self.tasks < 1:
            raise SlurmError(f"--tasks must be at least 1, got {self.tasks}.")
        if self.max_running is not None and self.max_running < 1:
            raise SlurmError(f"--max-running must be at least 1, got {self.max_running}.")
        if self.signal_lead < 1:
            raise SlurmError(f"--signal-lead must be at least 1 second, got {self.signal_lead}.")
        if self.time is not None:
            limit = time_seconds(self.time)
            if self.signal_lead >= limit:
                raise SlurmError(f"--signal-lead {self.signal_lead} s is not shorter than --time {self.time} "
                                 f"({limit} s): the worker would be told to stop before it starts; lower it.")
        for option in self.sbatch_options:
            if not option.startswith("--"):
                raise SlurmError(f"--sbatch-option takes a long sbatch option such as --qos=long, got {option!r}.")

    def directives(self) -> list[str]:
        name = self.job_name or f"chexops-{self.study}"
        array = f"0-{self.tasks - 1}" + (f"%{self.max_running}" if self.max_running else "")
        lines = [f"--job-name={name}", f"--array={array}"]
        lines += [f"--gres=gpu:{self.gpus}"] if self.gpus else []
        lines += [f"--cpus-per-task={self.cpus}"] if self.cpus else []
        lines += [f"--mem={self.mem}"] if self.mem else []
        lines += [f"--time={self.time}"] if self.time else []
        lines += [f"--partition={self.partition}"] if self.partition else []
        lines += [f"--account={self.account}"] if self.account else []
        lines += ["--requeue", "--open-mode=append", f"--signal=B:USR1@{self.signal_lead}",
                  f"--output={Path(self.log_dir).absolute() / '%x-%A_%a.log'}",
                  f"--chdir={Path(self.workdir).absolute()}"]
        return lines + list(self.sbatch_options)

    def worker_command(self) -> list[str]:
        cmd = [self.python, "-m", "chexops", "worker", "--optuna-study", self.study, "--params", self.params, "--quiet",
               "--slurm-requeue"]
        cmd += ["--heartbeat", str(self.heartbeat)] if self.heartbeat else []
        cmd += ["--grace", str(self.grace)] if self.grace else []
        cmd += ["--no-register"] if not self.register else []
        cmd += ["--per-device", self.per_device] if self.per_device else []
        cmd += ["--profile", self.profile] if self.profile else []
        return cmd

    def script(self) -> str:
        self.check()
        head = ["#!/bin/bash"] + [f"#SBATCH {d}" for d in self.directives()]
        body = [
            "# Written by `chexops submit slurm`. Each array task runs `chexops worker` on the shared Optuna study",
            "# (the queue of the grid). USR1 comes at the time limit's lead or on preemption; the worker saves its",
            "# state, hands its configuration back and requeues this task, which then resumes it.",
            "set -eo pipefail",
            f': "${{{STORAGE_ENV}:?export the Optuna storage URL before sbatch; it is never written here}}"',
            'echo "[slurm] $(date -Is) task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname)'
            ' restart ${SLURM_RESTART_COUNT:-0} gpus ${CUDA_VISIBLE_DEVICES:-none}"',
            *self.setup,
            "# exec: the worker replaces this shell, so the batch shell's USR1 reaches it",
            "exec " + shlex.join(self.worker_command()),
        ]
        return "\n".join(head + body) + "\n"


def time_seconds(value: str) -> int:
    """A SLURM --time value (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in seconds."""
    match = _TIME.match(value.strip())
    if not match:
        raise SlurmError(f"--time {value!r} is not a SLURM time (MM, HH:MM:SS, D-HH:MM ...).")
    days, a, b, c = match.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        h, m, s = (parts + [0, 0])[:3]
        return int(days) * 86400 + h * 3600 + m * 60 + s
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def submit(array: SlurmArray, script_path: Path) -> str:
    """Write the script to `script_path` and submit it with sbatch; the array's job id. The submission
    environment (the storage URL, MLFLOW_TRACKING_URI, PATH) goes with the job: sbatch exports it by default."""
    text = array.script()
    if not os.environ.get(STORAGE_ENV):
        raise SlurmError(f"{STORAGE_ENV} is not set: export the Optuna storage URL (e.g. postgresql+psycopg2://"
                         "user@head/optuna) before submitting; the tasks read it from their environment.")
    Path(array.log_dir).mkdir(parents=True, exist_ok=True)
    script_path.parent.mkdir(parents=True, exist_ok=True)
    script_path.write_text(text)
    try:
        done = subprocess.run(["sbatch", "--parsable", str(script_path)], capture_output=True, text=True,
                              timeout=120)
    except FileNotFoundError as exc:
        raise SlurmError("sbatch not found: run `chexops submit slurm` on a SLURM login node, or use --dry-run "
                         "and submit the script yourself.") from exc
    if done.returncode:
        raise SlurmError(f"sbatch refused {script_path}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]


def job_id() -> str | None:
    """This process's SLURM job as scontrol names it: `<array job>_<task>` in an array, else the job id."""
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if task and os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_self() -> str:
    """`scontrol requeue` this job (array task). SLURM kills the job at once: write everything first."""
    job = job_id()
    if not job:
        raise SlurmError("--slurm-requeue outside a SLURM job (no SLURM_JOB_ID): nothing to requeue.")
    log.warning(f"[worker] requeueing SLURM job {job}")
    for handler in logging.getLogger().handlers:
        handler.flush()
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except FileNotFoundError as exc:
        raise SlurmError("scontrol not found on this node: cannot requeue the task.") from exc
    if done.returncode:
        raise SlurmError(f"scontrol requeue {job} failed: {done.stderr.strip()} (was the job submitted with "
                         "--requeue, and does the cluster allow requeueing?)")
    return job
