"""The study in MLflow as the stages use it: the Tracker opened on the study's experiment (described so its UI
explains itself), the study's parent run, and the dataset inputs a run records."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from chexops import naming, records
from chexops.config import Config, grid_keys
from chexops.stages.context import StageContext, data_hash, describe_data


def tracker_of(ctx: StageContext) -> Any:
    """The context's Tracker, opened on first use (mlflow is imported only then)."""
    if ctx.tracker is None:
        ctx.tracker = open_tracker(ctx.config)
    return ctx.tracker


def dataset_inputs(config: Config, splits: tuple[str, ...]) -> list[dict[str, Any]]:
    """The prepared splits a stage reads, as MLflow dataset inputs; digest the DVC hash of the prepared cache (the
    prepare stage's content hash when DVC has not recorded one)."""
    from chexops.tracking.presentation import dataset_inputs as inputs

    cache = Path(config.data.cache_dir)
    info = records.read_splits(config.data.index_dir)
    return inputs(config.data.source, config.data.image_size, {s: split_digest(config, s) for s in splits},
                  info["root"], str(cache), info, describe_data(config), splits)


def split_digest(config: Config, split: str) -> str:
    """A split's own digest: the md5 DVC recorded for its cached array, else a hash of the prepare stage's content
    hash and the split's name (each split a distinct dataset either way)."""
    import hashlib

    recorded = records.dvc_file_hash(Path(config.data.cache_dir), f"{split}.npy")  # data.cache's array
    return recorded or hashlib.md5(f"{data_hash(config)}:{split}".encode()).hexdigest()


MAX_ALIAS = 255  # MLflow's limit on an alias's length

# --- the study in MLflow -----------------------------------------------------------------------------------------

def open_tracker(config: Config) -> Any:
    """The study's MLflow experiment, described so the UI explains how its runs are named."""
    from chexops.tracking.presentation import describe_experiment
    from chexops.tracking.runs import Tracker

    tracker = Tracker.open(config.tracking.uri, config.tracking.artifacts, config.experiment)
    describe_experiment(tracker, config.study.name, len(grid_keys(config)), describe_data(config))
    return tracker


def dvc_experiment() -> str | None:
    """The `dvc exp run` experiment the stage runs in (DVC sets DVC_EXP_NAME for its stages); None under `dvc
    repro`, `chexops train` and the worker."""
    return os.environ.get(naming.DVC_EXP_ENV) or None


def run_name(name: str) -> str:
    """An MLflow run's name: `name`, or `name [<experiment>]` inside `dvc exp run`, so an experiment's runs are
    told apart from the baseline's at a glance."""
    exp = dvc_experiment()
    return f"{name} [{exp}]" if exp else name


def candidate_alias() -> str:
    """The alias a newly registered version takes: `candidate`, or `candidate-<experiment>` inside `dvc exp run`,
    so an experiment's version never takes the baseline's `candidate` (MLflow allows letters, digits, _ and -)."""
    from chexops.tracking.runs import CANDIDATE_ALIAS

    exp = dvc_experiment()
    return f"{CANDIDATE_ALIAS}-{re.sub(r'[^A-Za-z0-9_-]', '-', exp)}"[:MAX_ALIAS] if exp else CANDIDATE_ALIAS


def study_run(config: Config, tracker: Any) -> str:
    """The study's parent run (found by its tag, created by the first stage that needs it). Study-wide settings
    change between `dvc repro`s, so they are its `params.json` artifact (logged by analyze), not params. A `dvc
    exp run` experiment has its own (`<study>@<experiment>`): its analyze never overwrites the baseline's."""
    from chexops.tracking.presentation import study_run_tags
    from chexops.tracking.tags import DVC_EXPERIMENT

    exp = dvc_experiment()
    tags = study_run_tags(config.study.name, describe_data(config)) | ({DVC_EXPERIMENT: exp} if exp else {})
    return tracker.study_run(run_name(naming.summary_run_name(config.study.name)),
                             f"{config.study.name}@{exp}" if exp else config.study.name, tags)


def child_tags(config: Config, tracker: Any) -> dict[str, str]:
    """What makes a run a child of the study run in MLflow (the UI nests it there), and the `dvc exp run`
    experiment it was made in."""
    from chexops.tracking.tags import DVC_EXPERIMENT, PARENT

    exp = dvc_experiment()
    return {PARENT: study_run(config, tracker)} | ({DVC_EXPERIMENT: exp} if exp else {})
