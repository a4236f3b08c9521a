"""`chexops train`: one configuration end to end (prepare data if needed, train, evaluate, register).

Under `torchrun --nproc-per-node N -m chexops train ...` every process trains the one configuration (DDP, see
chexops.distributed); rank 0 alone logs to MLflow, writes the run folder, then evaluates and registers.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from chexops.config import Config
from chexops.distributed import DistContext
from chexops.runs import RunKey


@click.command("train")
@click.option("--family", required=True, help="Architecture family, e.g. densenet121 (see `chexops components`).")
@click.option("--init", "initializer", default="random", show_default=True,
              help="random, imagenet or checkpoint:PATH.")
@click.option("--truncate", default=0, show_default=True, type=click.IntRange(min=0), help="Final blocks to drop.")
@click.option("--params", "params_path", default="params.yaml", show_default=True, type=click.Path(dir_okay=False))
@click.option("--lr", type=float, help="Override train.lr.")
@click.option("--restart", is_flag=True, help="Train anew instead of resuming a run left in the run folder.")
@click.option("--no-register", is_flag=True, help="Stop after the test evaluation.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_command(family: str, initializer: str, truncate: int, params_path: str, lr: float | None, restart: bool,
                  no_register: bool, quiet: bool) -> None:
    """Train one configuration under params.yaml, evaluate its ensemble, register it in MLflow."""
    from dataclasses import replace

    from chexops import distributed
    from chexops.config import load_config, validate

    config = load_config(params_path)
    grid = replace(config.grid, families=[family], initializers=[initializer])
    config = validate(replace(config, grid=grid))
    if truncate:  # validated like a grid entry, before any work starts
        from chexops.registry import get_registry

        get_registry().family(family)
    if lr is not None and lr <= 0:
        raise click.BadParameter(f"must be > 0, got {lr}", param_hint="--lr")
    key = RunKey(family, initializer, truncate)
    ctx = distributed.init_from_env(config.train.device)
    try:
        if ctx is not None and not ctx.is_main:
            _follow_rank(config, key, lr)
            return
        _train_main(config, key, lr, restart, no_register, quiet, ctx)
    finally:
        distributed.shutdown()


def _follow_rank(config: Config, key: RunKey, lr: float | None) -> None:
    """A non-zero DDP rank: train alongside rank 0, which does all the writing, logging and evaluation."""
    from chexops.train.loop import Trainer

    _require_prepared(config)
    run_dir = key.train_dir(config.train.runs_dir)
    Trainer(config, key, run_dir, lr or config.train.lr, config.train.max_examples, None, None, False).fit()


def _require_prepared(config: Config) -> None:
    from chexops.errors import ConfigError

    if not (Path(config.data.cache_dir) / "cache.json").is_file():
        raise ConfigError(f"no prepared data in {config.data.cache_dir}: under torchrun the processes would "
                          "prepare it all at once. Prepare it first (`dvc repro prepare`, or `chexops train` "
                          "once without torchrun), then start torchrun again.")


def _train_main(config: Config, key: RunKey, lr: float | None, restart: bool, no_register: bool, quiet: bool,
                ctx: DistContext | None) -> None:
    from chexops.data.stages import ingest, prepare
    from chexops.study import evaluate_stage, open_tracker, register_stage, train_stage

    if ctx is not None:
        _require_prepared(config)
    tracker = open_tracker(config)
    if not (Path(config.data.cache_dir) / "cache.json").is_file():
        click.echo("No prepared data yet: running ingest and prepare first.")
        ingest(config, progress=not quiet)
        prepare(config, progress=not quiet)
    summary = train_stage(config, key, tracker, lr=lr, progress=not quiet, restart=restart)
    click.echo(f"trained {key.name}: {summary['examples']} examples in {summary['seconds']} s, "
               f"best validation mean AUROC {summary['best_val_mean_auroc_6']:.3f}")
    payload = evaluate_stage(config, key, tracker)
    m = payload["metrics"]
    click.echo(f"test mean AUROC (6 tasks) {m['test_mean_auroc_6']:.3f} "
               f"[{m['test_mean_auroc_6_ci_low']:.3f}, {m['test_mean_auroc_6_ci_high']:.3f}]; "
               f"best single checkpoint {payload['best_single']['test_mean_auroc_6']:.3f}")
    if not no_register:
        record = register_stage(config, key, tracker)
        click.echo(json.dumps(record))
