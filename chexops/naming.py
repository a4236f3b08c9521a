"""Every name and path of a study, defined once: run keys, run / model / trial names, run and data folders,
the files each stage leaves, and the metric that ranks checkpoints.

Imports neither torch nor mlflow, so the CLI, the pipelines and any tool can name things without them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from chexops.errors import TrackingError

# Files a stage leaves in its run folder.
STATE_FILE = "state.pt"  # the resumable training state (train/<run>/)
# 1: a finished training run keeps its model and optimizer state (default: dropped, the run never resumes)
KEEP_STATE_ENV = "CHEXOPS_KEEP_TRAIN_STATE"
DVC_EXP_ENV = "DVC_EXP_NAME"  # set by `dvc exp run` for its stages: the experiment's name
MANIFEST_FILE = "manifest.json"  # the kept checkpoints (train/<run>/)
RUN_RECORD_FILE = "mlflow_run.json"  # the MLflow run id of the configuration (train/<run>/)
TRAIN_SUMMARY_FILE = "train.json"
EVAL_FILE = "eval.json"  # eval/<run>/
PREDICTIONS_FILE = "predictions.csv"  # eval/<run>/: study-level truth and ensemble probabilities
ROC_FILE = "roc.png"  # eval/<run>/

PARAMS_FILE = "params.yaml"  # the study's settings, at the repository root (every command's --params default)
REPORT_FILE = "study.md"  # in analysis.reports_dir: the study's report
TEST_LABELS_FILE = "groundtruth.csv"  # CheXpert's study-level test labels, beside test.csv

# Files of the data stages.
SYNTHETIC_DIR = Path("data/synthetic")
SPLITS = ("train", "valid", "test")
SPLITS_FILE = "splits.json"  # in data.index_dir
CACHE_FILE = "cache.json"  # in data.cache_dir
PLUGINS_LOCK = "plugins.lock.json"  # the installed plugins every stage depends on, at the repository root

# Checkpoints are ranked, and Optuna trials scored, by a validation mean chosen with `train.select_metric`
# (the lab's code: the 5 competition tasks). Each checkpoint's value of it is RANKING_METRIC in the manifest, a
# run's best is BEST_RANKING_METRIC (manifest.json, train.json, the tune record), and which mean it is, is
# recorded beside them as `select_metric` (e.g. "val_mean_auroc_5").
# The study's headline: the test mean AUROC over the 6 study tasks (a mean over fewer tasks, when one was undefined
# on the test split, is named for what it covers, e.g. test_mean_auroc_5of6: evaluate.metrics.headline_key).
HEADLINE_MEAN = "mean_auroc_6"
TEST_HEADLINE = f"test_{HEADLINE_MEAN}"
COMPETITION_MEAN = "mean_auroc_5"  # the 5 CheXpert competition tasks: what the lab's code ranks checkpoints by
SELECT_METRICS = (COMPETITION_MEAN, HEADLINE_MEAN)
RANKING_METRIC = "val_score"
BEST_RANKING_METRIC = f"best_{RANKING_METRIC}"


def select_metric_key(select_metric: str) -> str:
    """`mean_auroc_5` -> `val_mean_auroc_5`: the validation metric that ranks checkpoints."""
    return f"val_{select_metric}"


# Files of the pretrain stage (runs/pretrain/<family>__<initializer>/).
BACKBONE_FILE = "backbone.pt"  # the pretrained network's state dict, what the initializer loads
PRETRAIN_FILE = "pretrain.json"  # what was pretrained, how, the backbone's sha256 and its MLflow run


def pretrain_dir(runs_dir: str | Path, family: str, initializer: str) -> Path:
    """Where the pretrain stage leaves the (family, initializer) backbone; one per pair, shared by every
    fine-tune of it (full, truncated, each label fraction)."""
    return Path(runs_dir) / "pretrain" / f"{family}__{initializer}"


def fraction_label(fraction: float) -> str:
    """`labels-0.1`: how folders name a label fraction (str(float), as DVC renders params.yaml's value)."""
    return f"labels-{float(fraction)}"


def seed_label(seed: int) -> str:
    """`seed-1`: how run names and folders name a repeat with another train seed (grid.seeds)."""
    return f"seed-{int(seed)}"


DEFAULT_STRATEGY = "drop-last-k"  # the truncation strategy of a grid.truncated entry that names none


def truncation_label(depth: int, strategy: str = DEFAULT_STRATEGY) -> str:
    """How runs and reports name a truncation: `full`, `drop-1`, `drop-2`, ... for the default strategy;
    `<strategy>-<depth>` for another one (`<strategy>` alone when it takes no depth)."""
    if strategy == DEFAULT_STRATEGY:
        return "full" if depth == 0 else f"drop-{depth}"
    return f"{strategy}-{depth}" if depth else strategy


@dataclass(frozen=True)
class RunKey:
    """One configuration of the study grid."""

    family: str
    initializer: str
    depth: int = 0
    fraction: float = 1.0  # of the labelled training split
    strategy: str = DEFAULT_STRATEGY
    seed: int | None = None  # a repeat of the configuration with this train seed (grid.seeds); None: train.seed

    def __post_init__(self) -> None:
        # a strategy passed where the fraction goes would otherwise name a folder "labels-drop-last-k"
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, int | float):
            raise TypeError(f"RunKey.fraction must be a number, got {self.fraction!r}; pass strategy= by name.")

    def _init_label(self) -> str:
        init = self.initializer
        if ":" in init:  # checkpoint:/long/path/model.pt -> checkpoint-model
            base, _, arg = init.partition(":")
            init = f"{base}-{Path(arg).stem}"
        return init

    @property
    def name(self) -> str:
        """`densenet121/imagenet/full`: the MLflow run name (`resnet18/random/keep-first-2` for a strategy other
        than drop-last-k, `densenet121/ssl/full/labels-0.1` for a label fraction)."""
        name = f"{self.family}/{self._init_label()}/{truncation_label(self.depth, self.strategy)}"
        name = name if self.fraction == 1.0 else f"{name}/{fraction_label(self.fraction)}"
        return name if self.seed is None else f"{name}/{seed_label(self.seed)}"

    @property
    def slug(self) -> str:
        """The run's folder name, `densenet121__imagenet__full__labels-1.0`: family, initializer, depth and label
        fraction, never the strategy.

        dvc.yaml names a run's outputs from its grid entry, and DVC can only template paths from keys every entry
        has; `strategy` is optional, so it cannot be part of the folder (the grid therefore refuses two strategies
        at the same family, initializer and depth), and the fraction is always there, 1.0 included.
        """
        name = f"{self.family}__{self._init_label()}__{truncation_label(self.depth)}__{fraction_label(self.fraction)}"
        name = name if self.seed is None else f"{name}__{seed_label(self.seed)}"  # dvc.yaml's train_seeds outs
        return re.sub(r"[^A-Za-z0-9_.-]", "-", name)

    def pretrain_dir(self, runs_dir: str | Path) -> Path:
        return pretrain_dir(runs_dir, self.family, self.initializer)

    # One folder per stage, so each DVC stage owns its outputs: tune -> train -> eval -> registry.
    def tune_file(self, runs_dir: str | Path) -> Path:
        # a grid.seeds repeat trains at its configuration's learning rate
        return Path(runs_dir) / "tune" / f"{replace(self, seed=None).slug}.json"

    def tune_trial_dir(self, runs_dir: str | Path, number: int) -> Path:
        return Path(runs_dir) / "tune" / self.slug / f"trial-{number}"

    def train_command(self, *flags: str) -> str:
        """`chexops train ...` naming exactly this configuration (strategy and label fraction included, so the
        command never means the full-label or default-strategy run), followed by `flags` (e.g. --restart)."""
        parts = ["chexops train", f"--family {self.family}", f"--init {self.initializer}", f"--truncate {self.depth}"]
        if self.strategy != DEFAULT_STRATEGY:
            parts.append(f"--strategy {self.strategy}")
        if self.fraction != 1.0:
            parts.append(f"--fraction {self.fraction}")
        if self.seed is not None:
            parts.append(f"--seed {self.seed}")
        return " ".join([*parts, *flags])

    def train_dir(self, runs_dir: str | Path) -> Path:
        return Path(runs_dir) / "train" / self.slug

    def eval_dir(self, runs_dir: str | Path) -> Path:
        return Path(runs_dir) / "eval" / self.slug

    def metrics_file(self, runs_dir: str | Path) -> Path:
        """The run's test AUROC-6 with its CI for `dvc metrics show` (one row per run)."""
        return Path(runs_dir) / "metrics" / f"{self.slug}.json"

    def registry_file(self, runs_dir: str | Path) -> Path:
        return Path(runs_dir) / "registry" / f"{self.slug}.json"

    def trial_run_name(self, number: int) -> str:
        """The nested MLflow run of one Optuna trial of this configuration's lr search."""
        return f"{self.name}/trial-{number}"

    @property
    def tune_run_name(self) -> str:
        return f"tune:{self.name}"

    def optuna_study_name(self, experiment: str) -> str:
        return f"{experiment}/{self.name}"


def pretrain_run_name(family: str, initializer: str) -> str:
    """The MLflow run of a pretrain stage: `densenet121/ssl/pretrain`."""
    return f"{family}/{initializer}/pretrain"


def data_description(source: str, image_size: int, test_source: str | None = None) -> str:
    """What data made a number, said wherever one is shown: synthetic data is never called CheXpert's test set."""
    what = (f"synthetic CheXpert-format phantoms, {image_size} px" if source == "synthetic"
            else f"CheXpert folder, {image_size} px")
    return what + (f"; test: {describe_test_split(source, test_source)}" if test_source else "")


def describe_test_split(source: str, recorded: str) -> str:
    """What the test split is, in words: never 'official' for synthetic data."""
    return ("synthetic " if source == "synthetic" else "") + _test_source(recorded)


def _test_source(recorded: str) -> str:
    """'official' -> the folder's labelled test split; 'holdout:0.1:seed0' -> a patient hold-out of train."""
    if recorded == "official":
        return "labelled test split (test.csv + groundtruth.csv)"
    if recorded.startswith("holdout:"):
        _, fraction, seed = recorded.split(":")
        return f"patient hold-out ({fraction} of train patients, {seed})"
    return recorded


SUMMARY_METRICS_FILE = "summary.json"  # in analysis.reports_dir: the study's headline numbers for `dvc metrics`


def summary_run_name(study: str) -> str:
    """The study's parent MLflow run: every configuration's run is its child; the analyze stage logs the report
    and the summary metrics to it."""
    return f"{study}/summary"


def registered_model_name(experiment: str, run_name: str) -> str:
    """`chextransfer` + `densenet121/random/full` -> `chextransfer.densenet121.random.full` (no `/` or `:`)."""
    return _dotted((experiment, *run_name.split("/")), f"experiment {experiment!r} and run {run_name!r}")


def logged_model_name(run_name: str) -> str:
    """`densenet121/random/full` -> `densenet121-random-full`: the run's logged ensemble, named after its
    configuration (MLflow refuses `/ : . %` and quotes in a logged model's name)."""
    return _dotted(run_name.split("/"), f"run {run_name!r}").replace(".", "-")


def _dotted(parts: tuple[str, ...] | list[str], what: str) -> str:
    cleaned = [re.sub(r"[^A-Za-z0-9_.-]+", "-", p).strip("-") for p in parts]
    if not all(cleaned):
        raise TrackingError(f"cannot make a model name from {what}: a part is empty after removing characters "
                            "MLflow does not allow.")
    return ".".join(cleaned)


STUDY_RUN_KIND = "study"  # chexops.stage of the study's parent run


def cache_file(cache_dir: str | Path) -> Path:
    """The prepare stage's record of what the cache holds (image size, hashes, test source)."""
    return Path(cache_dir) / CACHE_FILE
