"""`chexops worker`: the shared grid on an Optuna RDB study (see chexops.scaleout.worker)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from chexops.cli import quiet_mlflow
from chexops.config import load_config, validate
from chexops.naming import PARAMS_FILE


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


EXIT_STOPPED = 75  # stopped on USR1 with work left (EX_TEMPFAIL): a --per-device parent requeues on it


def _request_stop(signum: int, frame: Any) -> None:
    from chexops.train.interrupt import request_stop

    request_stop(signal.Signals(signum).name)


def _forward_usr1(signum: int, frame: Any) -> None:
    """--per-device parent: pass USR1 on to the workers it started (its process group), once."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    os.killpg(os.getpgrp(), signal.SIGUSR1)


def _requeue() -> None:
    from chexops.scaleout.slurm import requeue_self

    click.echo("[worker] requeueing this SLURM task; it resumes the grid when it runs again", err=False)
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the requeue's kill: the configuration is already handed back
    requeue_self()  # SLURM kills this job now; if it does not at once, exit as stopped
    sys.exit(EXIT_STOPPED)


@click.command("worker")
@click.option("--storage", "storage_url", required=True, envvar="CHEXOPS_WORKER_STORAGE",
              show_envvar=True,
              help="Optuna RDB storage URL shared by all workers, e.g. postgresql+psycopg2://user@host/optuna; "
                   "read from CHEXOPS_WORKER_STORAGE when not given.")
@click.option("--optuna-study", "--study", "study_name", required=True,
              help="The Optuna study holding the grid's queue: one per grid, created by the first worker "
                   "(--study is the older spelling).")
@click.option("--params", "params_path", default=PARAMS_FILE, show_default=True, type=click.Path(dir_okay=False))
@click.option("--heartbeat", default=30, show_default=True, type=click.IntRange(min=1),
              help="Seconds between heartbeats of the running configuration.")
@click.option("--grace", type=click.IntRange(min=1),
              help="Seconds without a heartbeat after which a worker counts as dead. [default: 2 x heartbeat]")
@click.option("--max-retry", default=3, show_default=True, type=click.IntRange(min=0),
              help="How often a configuration whose worker died is retried.")
@click.option("--no-register", is_flag=True, help="Stop each configuration after its test evaluation.")
@click.option("--quiet", is_flag=True, help="No progress bars, no MLflow INFO lines.")
@click.option("--per-device",
              help="Start this many workers on each visible GPU (or the CPU) and wait for them: a number, or auto "
                   "(from --profile: the measured packing gain and memory; 1 on a CPU). [default: this process "
                   "is the one worker]")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False, exists=True),
              help="A `chexops plan --pack K --save FILE` measurement of this device, for --per-device auto.")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path),
              help="With several workers: one log file each here (worker-<device>-<k>.log) instead of this "
                   "terminal.")
@click.option("--slurm-requeue", is_flag=True,
              help="Inside a SLURM job: after a USR1 stop, requeue this job (array task) while the grid has work "
                   "left (what `chexops submit slurm` writes).")
def worker_command(storage_url: str, study_name: str, params_path: str, heartbeat: int, grace: int | None,
                   max_retry: int, no_register: bool, quiet: bool, per_device: str | None, profile_path: str | None,
                   log_dir: Path | None, slurm_requeue: bool) -> None:
    """Train configurations of the study grid taken from a shared Optuna study until the grid is done."""
    if grace is not None and grace <= heartbeat:
        raise click.BadParameter(f"must be longer than --heartbeat ({heartbeat} s), got {grace}",
                                 param_hint="--grace")
    if quiet:
        quiet_mlflow()  # before anything imports mlflow; the children inherit it
    config = validate(load_config(params_path))
    if per_device is not None:
        from chexops.scaleout.packing import resolve_per_device, start_workers, visible_devices

        count = resolve_per_device(per_device, profile_path, config.train.device)
        if count > 1 or len(visible_devices()) > 1:
            if log_dir:
                log_dir.mkdir(parents=True, exist_ok=True)
            os.environ["CHEXOPS_WORKER_STORAGE"] = storage_url  # the children's, never on a command line
            argv = ["--optuna-study", study_name, "--params", params_path, "--heartbeat", str(heartbeat),
                    "--max-retry", str(max_retry)] + (["--grace", str(grace)] if grace else []) + (
                ["--no-register"] if no_register else []) + (["--quiet"] if quiet else [])
            click.echo(f"[worker] starting {count} worker(s) on each of {len(visible_devices())} device(s)")
            signal.signal(signal.SIGUSR1, _forward_usr1)  # the children stop, hand back and exit EXIT_STOPPED
            code = start_workers(argv, count, log_dir)
            if code == EXIT_STOPPED and slurm_requeue:
                _requeue()
            sys.exit(code)
    import logging

    # the worker library logs what it claims, finishes and hands back; a worker's log file is that stream
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout, force=True)
    logging.getLogger("chexops").setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # a scheduler's stop hands the configuration back
    signal.signal(signal.SIGUSR1, _request_stop)  # time limit or preemption ahead: stop at the next safe step
    from chexops.errors import WorkerError
    from chexops.scaleout.worker import run_worker

    report = run_worker(config, storage_url, study_name, heartbeat, grace, max_retry, not no_register, not quiet)
    if report.stopped:
        click.echo(f"[worker] stopped on {report.stopped}; completed here: {', '.join(report.completed) or '-'}; "
                   + ("the grid has work left" if report.pending else "nothing left in the grid"))
        if report.pending:
            if slurm_requeue:
                _requeue()
            sys.exit(EXIT_STOPPED)
        return
    click.echo(f"[worker] grid {study_name!r} done; this worker completed {len(report.completed)}: "
               f"{', '.join(report.completed) or '-'}" + (f"; failed here: {', '.join(report.failed)}"
                                                          if report.failed else ""))
    if report.grid_failed:
        raise WorkerError(f"configurations without a completed trial: {', '.join(report.grid_failed)} (their "
                          "errors are in the trials' `error` user attr). Fix the cause and run them with "
                          "`chexops train`, or start a new --study: finished runs resume as done.")
