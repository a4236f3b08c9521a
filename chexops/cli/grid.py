"""`chexops grid status`: each configuration of a worker grid, from its Optuna study (no scheduler needed)."""

from __future__ import annotations

import json

import click


@click.group("grid")
def grid_group() -> None:
    """The grid shared by `chexops worker`s (an Optuna study)."""


@grid_group.command("status")
@click.option("--storage", "storage_url", required=True, envvar="CHEXOPS_WORKER_STORAGE", show_envvar=True,
              help="The workers' Optuna storage URL.")
@click.option("--optuna-study", "--study", "study", required=True, help="The Optuna study holding the grid.")
@click.option("--params", "params_path", type=click.Path(dir_okay=False, exists=True),
              help="With the grid's params.yaml: progress (examples trained) from each run folder's saved state.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per configuration.")
def status_command(storage_url: str, study: str, params_path: str | None, as_json: bool) -> None:
    """Per configuration: queued, running, done or failed; which worker and SLURM job holds it; progress."""
    from chexops.scaleout.grid_status import grid_status, summary

    examples = _examples_reader(params_path) if params_path else None
    statuses = grid_status(storage_url, study, examples)
    if as_json:
        for s in statuses:
            click.echo(json.dumps(vars(s)))
        return
    width = max((len(s.run) for s in statuses), default=3)
    click.echo(f"{'run':<{width}}  {'state':<7}  {'examples':>8}  {'value':>6}  trials  stops  worker / job")
    for s in statuses:
        value = f"{s.value:.3f}" if s.value is not None else "-"
        held = " ".join(x for x in (s.worker, s.slurm_job and f"job {s.slurm_job}") if x) or "-"
        examples_text = "-" if s.examples is None else str(s.examples)
        click.echo(f"{s.run:<{width}}  {s.state:<7}  {examples_text:>8}  {value:>6}  {s.trials:>6}  {s.stops:>5}  "
                   f"{held}" + (f"  error: {s.error[:120]}" if s.state == "failed" and s.error else ""))
    counts = summary(statuses)
    click.echo(", ".join(f"{n} {state}" for state, n in counts.items()))


def _examples_reader(params_path: str):
    from chexops.config import grid_keys, load_config, validate
    from chexops.scaleout.worker import resumed_from

    config = validate(load_config(params_path))
    keys = {key.name: key for key in grid_keys(config)}

    def examples(run: str) -> int | None:
        key = keys.get(run)
        return None if key is None else resumed_from(key.train_dir(config.train.runs_dir), key)

    return examples
