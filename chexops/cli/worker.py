"""`chexops worker`: the shared grid on an Optuna RDB study (see chexops.scaleout.worker)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from chexops.config import load_config, validate
from chexops.naming import PARAMS_FILE


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


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
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--per-device",
              help="Start this many workers on each visible GPU (or the CPU) and wait for them: a number, or auto "
                   "(from --profile: the measured packing gain and memory; 1 on a CPU). [default: this process "
                   "is the one worker]")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False, exists=True),
              help="A `chexops plan --pack K --save FILE` measurement of this device, for --per-device auto.")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path),
              help="With several workers: one log file each here (worker-<device>-<k>.log) instead of this "
                   "terminal.")
def worker_command(storage_url: str, study_name: str, params_path: str, heartbeat: int, grace: int | None,
                   max_retry: int, no_register: bool, quiet: bool, per_device: str | None, profile_path: str | None,
                   log_dir: Path | None) -> None:
    """Train configurations of the study grid taken from a shared Optuna study until the grid is done."""
    if grace is not None and grace <= heartbeat:
        raise click.BadParameter(f"must be longer than --heartbeat ({heartbeat} s), got {grace}",
                                 param_hint="--grace")
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
            sys.exit(start_workers(argv, count, log_dir))
    import logging

    # the worker library logs what it claims, finishes and hands back; a worker's log file is that stream
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout, force=True)
    logging.getLogger("chexops").setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # a scheduler's stop hands the configuration back
    from chexops.errors import WorkerError
    from chexops.scaleout.worker import run_worker

    report = run_worker(config, storage_url, study_name, heartbeat, grace, max_retry, not no_register, not quiet)
    click.echo(f"[worker] grid {study_name!r} done; this worker completed {len(report.completed)}: "
               f"{', '.join(report.completed) or '-'}" + (f"; failed here: {', '.join(report.failed)}"
                                                          if report.failed else ""))
    if report.grid_failed:
        raise WorkerError(f"configurations without a completed trial: {', '.join(report.grid_failed)} (their "
                          "errors are in the trials' `error` user attr). Fix the cause and run them with "
                          "`chexops train`, or start a new --study: finished runs resume as done.")
