"""`chexops submit slurm`: the grid's workers as one sbatch array (see chexops.scaleout.slurm)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from chexops.config import grid_keys, load_config, validate
from chexops.naming import PARAMS_FILE


@click.group("submit")
def submit_group() -> None:
    """Submit the grid's workers to a cluster scheduler."""


@submit_group.command("slurm")
@click.option("--optuna-study", "--study", "study", required=True,
              help="The Optuna study holding the grid (the workers' --study).")
@click.option("--params", "params_path", default=PARAMS_FILE, show_default=True, type=click.Path(dir_okay=False))
@click.option("--tasks", type=click.IntRange(min=1),
              help="Array tasks, one worker (or --per-device pack) each. [default: the grid's configurations]")
@click.option("--max-running", type=click.IntRange(min=1), help="At most this many tasks at once (--array=...%M).")
@click.option("--gpus", default=0, show_default=True, type=click.IntRange(min=0), help="GPUs per task (--gres=gpu:G).")
@click.option("--cpus", type=click.IntRange(min=1), help="CPUs per task.")
@click.option("--mem", help="Memory per task, e.g. 32G.")
@click.option("--time", "time_limit", help="Wall time per task (SLURM format: HH:MM:SS, D-HH:MM ...).")
@click.option("--partition")
@click.option("--account")
@click.option("--signal-lead", default=120, show_default=True, type=click.IntRange(min=1),
              help="Seconds before the time limit that the worker is told (USR1) to save and requeue.")
@click.option("--per-device", help="Workers per GPU inside one task: N or auto (see `chexops worker`).")
@click.option("--profile", "profile_path", help="A `chexops plan --save` file, for --per-device auto.")
@click.option("--log-dir", default="slurm-logs", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="One log per array task here (<job name>-<array job>_<task>.log), appended across requeues.")
@click.option("--setup", multiple=True,
              help="A shell line run before the worker, e.g. 'module load cuda' or 'source .venv/bin/activate'. "
                   "[default: none; the worker runs with this Python]")
@click.option("--python", "python",
              help="The Python running the worker on the nodes. [default: this one; `python` with --setup]")
@click.option("--sbatch-option", "sbatch_options", multiple=True, help="An extra #SBATCH line, e.g. --qos=long.")
@click.option("--job-name", help="[default: chexops-<study>]")
@click.option("--heartbeat", type=click.IntRange(min=1), help="The workers' --heartbeat.")
@click.option("--grace", type=click.IntRange(min=1), help="The workers' --grace.")
@click.option("--no-register", is_flag=True, help="The workers' --no-register.")
@click.option("--dry-run", is_flag=True, help="Print the script; submit nothing.")
def slurm_command(study: str, params_path: str, tasks: int | None, max_running: int | None, gpus: int,
                  cpus: int | None, mem: str | None, time_limit: str | None, partition: str | None,
                  account: str | None, signal_lead: int, per_device: str | None, profile_path: str | None,
                  log_dir: Path, setup: tuple[str, ...], python: str | None, sbatch_options: tuple[str, ...],
                  job_name: str | None, heartbeat: int | None, grace: int | None, no_register: bool,
                  dry_run: bool) -> None:
    """Write an sbatch array of `chexops worker` tasks on the shared Optuna study and submit it.

    Export CHEXOPS_WORKER_STORAGE (and MLFLOW_TRACKING_URI) first: sbatch hands the submitting environment to
    the tasks, and the storage URL is never written into the script."""
    from chexops.scaleout.slurm import SlurmArray, submit

    config = validate(load_config(params_path))
    array = SlurmArray(study=study, params=params_path, tasks=tasks or len(grid_keys(config)),
                       max_running=max_running, gpus=gpus, cpus=cpus, mem=mem, time=time_limit,
                       partition=partition, account=account, signal_lead=signal_lead, per_device=per_device,
                       profile=profile_path, log_dir=log_dir, setup=list(setup), sbatch_options=list(sbatch_options),
                       job_name=job_name, heartbeat=heartbeat, grace=grace, register=not no_register)
    if python or setup:  # a --setup line (activate, module load) chooses the Python on the nodes
        array.python = python or "python"
    if dry_run:
        click.echo(array.script(), nl=False)
        return
    script = log_dir / f"{array.job_name or f'chexops-{study}'}.sbatch"
    job = submit(array, script)
    click.echo(f"submitted array job {job} ({array.tasks} task(s)); script {script}; logs {log_dir}/; "
               f"follow with `chexops grid status --optuna-study {study}` and `squeue -j {job}`")
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        click.echo("note: MLFLOW_TRACKING_URI is not set: the tasks use params.yaml's tracking.uri", err=True)
