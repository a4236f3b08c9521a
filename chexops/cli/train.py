"""`chexops train`: one configuration end to end (prepare data if needed, train, evaluate, register).

The same `run_configuration` as `dvc repro` and `chexops worker`: after `dvc repro`, training a configuration the
grid holds is a no-op (or a resume), never a second run. Under `torchrun --nproc-per-node N -m chexops train ...`
every process trains the one configuration (DDP, see chexops.train.distributed); rank 0 alone logs to MLflow,
writes the run folder, then evaluates and registers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from chexops import naming
from chexops.cli import quiet_mlflow
from chexops.naming import DEFAULT_STRATEGY, PARAMS_FILE, RunKey

if TYPE_CHECKING:
    from chexops.stages.context import StageContext


@click.command("train")
@click.option("--family", required=True, help="Architecture family, e.g. densenet121 (see `chexops components`).")
@click.option("--init", "initializer", default="random", show_default=True,
              help="random, imagenet, ssl (pretrains first when needed) or checkpoint:PATH.")
@click.option("--truncate", default=0, show_default=True, type=click.IntRange(min=0),
              help="Truncation depth, as --strategy reads it (drop-last-k: final blocks dropped).")
@click.option("--strategy", default=DEFAULT_STRATEGY, show_default=True,
              help="Truncation strategy, as `strategy:` in a grid.truncated entry.")
@click.option("--fraction", default=1.0, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="Fraction of the labelled training patients to train on.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="A repeat of the configuration with this train seed (as a grid.seeds entry; not registered).")
@click.option("--params", "params_path", default=PARAMS_FILE, show_default=True, type=click.Path(dir_okay=False),
              help="The study's settings (data, train, tracking, grid); relative paths in it are read from the "
                   "current folder.")
@click.option("--lr", type=float, help="Override the tuned / configured learning rate.")
@click.option("--restart", is_flag=True, help="Train anew instead of resuming a run left in the run folder.")
@click.option("--no-register", is_flag=True, help="Stop after the test evaluation.")
@click.option("--quiet", is_flag=True, help="No progress bars, no MLflow INFO lines.")
def train_command(family: str, initializer: str, truncate: int, strategy: str, fraction: float, seed: int | None,
                  params_path: str, lr: float | None,
                  restart: bool, no_register: bool, quiet: bool) -> None:
    """Train one configuration under params.yaml, evaluate its ensemble, register it in MLflow."""
    from chexops.components.lock import check_lock
    from chexops.config import check_run, load_config, validate
    from chexops.stages.context import StageContext, verify_components

    if quiet:
        quiet_mlflow()
    config = validate(load_config(params_path))
    if lr is not None and not 0 < lr < float("inf"):
        raise click.BadParameter(f"must be a finite number > 0, got {lr}", param_hint="--lr")
    key = RunKey(family, initializer, truncate, fraction, strategy, seed)
    # validated like a grid entry, before anything is written
    check_run(key.family, key.initializer, key.depth, strategy=key.strategy)
    check_lock()
    verify_components(config, [key])  # deep checks of its plugin components, before any data is prepared
    if lr is not None and not restart:
        _refuse_another_lr(config, key, lr)
    ctx = StageContext(config, key, progress=not quiet, restart=restart, lr=lr)
    from chexops.train import distributed

    dist = distributed.init_from_env(config.train.device)
    try:
        if dist is not None and not dist.is_main:
            _follow_rank(ctx)
        else:
            _train_main(ctx, no_register, under_torchrun=dist is not None)
    finally:
        distributed.shutdown()


def _refuse_another_lr(config, key: RunKey, lr: float) -> None:
    """An --lr other than the one the run folder was trained at changes the run: say so rather than call it up to
    date (or resume it at another rate)."""
    from chexops.errors import ConfigError
    from chexops.train.loop import saved_state_matches

    run_dir = key.train_dir(config.train.runs_dir)
    if (run_dir / naming.STATE_FILE).is_file() and saved_state_matches(config, key, run_dir, lr) is False:
        raise ConfigError(f"{run_dir} holds {key.name} trained with other settings than --lr {lr} (another learning "
                          f"rate, or params.yaml changed since); train it anew at this rate with "
                          f"`{key.train_command('--lr', str(lr), '--restart')}`, or drop --lr to keep the run.")


def _check_still_registered(ctx: StageContext, version: int) -> None:
    """An up-to-date run is one the store holds: a replaced or emptied mlflow.db (a zero-byte file opens as a new,
    empty store) must not be reported as 'registered as version N'."""
    from chexops.errors import TrackingError
    from chexops.stages.experiment import tracker_of
    from chexops.tracking.registry import get_version

    tracker = tracker_of(ctx)
    name = naming.registered_model_name(ctx.config.experiment, ctx.run.name)
    try:
        get_version(tracker.client, name, version)
    except TrackingError as exc:
        raise TrackingError(
            f"{ctx.run.name} is trained and evaluated, and {ctx.run.registry_file(ctx.runs_dir)} records it as "
            f"version {version} of {name!r}, but the tracking store {tracker.uri} does not hold it ({exc}); point "
            f"tracking.uri (or MLFLOW_TRACKING_URI) at the store that holds it, or record it in this one anew with "
            f"`{ctx.run.train_command('--restart')}`.") from None


def _follow_rank(ctx: StageContext) -> None:
    """A non-zero DDP rank: train alongside rank 0, which does all the writing, logging and evaluation."""
    from chexops.stages.context import require_prepared
    from chexops.stages.tune import chosen_lr
    from chexops.train.loop import Trainer

    config, key = ctx.config, ctx.run
    require_prepared(config)
    Trainer(config, key, lr=ctx.lr or chosen_lr(config, key), progress=False).fit()


def _train_main(ctx: StageContext, no_register: bool, under_torchrun: bool) -> None:
    from chexops import naming
    from chexops.evaluate.metrics import headline_text
    from chexops.records import cache_record
    from chexops.stages import ingest, prepare
    from chexops.stages.configuration import run_configuration

    config = ctx.config
    if cache_record(config.data.cache_dir) is None:
        if under_torchrun:  # N processes would prepare it all at once
            raise click.UsageError(f"no prepared data in {config.data.cache_dir}: prepare it first (`dvc repro "
                                   "prepare`, or `chexops train` once without torchrun), then start torchrun again.")
        click.echo("No prepared data yet: running ingest and prepare first.")
        ingest.run(ctx)
        prepare.run(ctx)
    result = run_configuration(ctx, register_model=not no_register)
    if result["up_to_date"] and "registered_version" in result:
        _check_still_registered(ctx, result["registered_version"])
    m = result["metrics"]
    auroc = f"test mean AUROC (study tasks) {headline_text(m)}"
    if result["up_to_date"]:
        registered = (f"registered as {naming.registered_model_name(config.experiment, ctx.run.name)} version "
                      f"{result['registered_version']}" if "registered_version" in result else
                      "never registered (a grid.seeds repeat)")
        click.echo(f"{ctx.run.name} is up to date: trained, evaluated and {registered}; {auroc}. Pass --restart "
                   "to train it anew.")
        return
    t = result["train"]
    click.echo(f"trained {ctx.run.name}: {t['examples']} examples in {t['seconds']} s, "
               f"best {ctx.config.train.select_metric.replace('_', ' ')} on validation "
               f"{result[naming.BEST_RANKING_METRIC]:.3f}")
    click.echo(f"{auroc}; best single checkpoint {result['best_single']['test_mean_auroc']:.3f}")
    if "registered_version" in result:
        name = naming.registered_model_name(config.experiment, ctx.run.name)
        click.echo(f"the ensemble is identical to {name} version {result['registered_version']}: nothing new "
                   "registered, no alias moved" if result["registered_unchanged"] else
                   f"registered {name} version {result['registered_version']}" + (
                       f" (alias {result['registered_alias']})" if result["registered_alias"] else ""))
    elif ctx.run.seed is not None:
        click.echo("not registered: a grid.seeds repeat measures the spread across train seeds (study.md)")
