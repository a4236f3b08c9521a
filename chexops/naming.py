"""Every name and path of a study, defined once: run keys, run / model / trial names, run and data folders,
the files each stage leaves, and the metric that ranks checkpoints.

Imports neither torch nor mlflow, so the CLI, the pipelines and any tool can name things without them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from chexops.errors import TrackingError

# Files a stage leaves in its run folder.
STATE_FILE = "state.pt"  # the resumable training state (train/<run>/)
MANIFEST_FILE = "manifest.json"  # the kept checkpoints (train/<run>/)
RUN_RECORD_FILE = "mlflow_run.json"  # the MLflow run id of the configuration (train/<run>/)
TRAIN_SUMMARY_FILE = "train.json"
EVAL_FILE = "eval.json"  # eval/<run>/

# Files of the data stages.
SYNTHETIC_DIR = Path("data/synthetic")
SPLITS = ("train", "valid", "test")
SPLITS_FILE = "splits.json"  # in data.index_dir
CACHE_FILE = "cache.json"  # in data.cache_dir
PLUGINS_LOCK = "plugins.lock.json"  # the installed plugins every stage depends on, at the repository root

# Checkpoints are ranked, and Optuna trials scored, by this validation metric; a run's best value of it is
# recorded under BEST_RANKING_METRIC (manifest.json, train.json, the tune record).
RANKING_METRIC = "val_mean_auroc_6"
BEST_RANKING_METRIC = f"best_{RANKING_METRIC}"


def truncation_label(depth: int) -> str:
    """How runs and reports name a truncation depth: `full`, `drop-1`, `drop-2`, ..."""
    return "full" if depth == 0 else f"drop-{depth}"


@dataclass(frozen=True)
class RunKey:
    """One configuration of the study grid."""

    family: str
    initializer: str
    depth: int = 0

    @property
    def name(self) -> str:
        """`densenet121/imagenet/full`: the MLflow run name."""
        init = self.initializer
        if ":" in init:  # checkpoint:/long/path/model.pt -> checkpoint-model
            base, _, arg = init.partition(":")
            init = f"{base}-{Path(arg).stem}"
        return f"{self.family}/{init}/{truncation_label(self.depth)}"

    @property
    def slug(self) -> str:
        """A folder- and registry-safe form of the name: `densenet121__imagenet__full`."""
        return re.sub(r"[^A-Za-z0-9_.-]", "-", self.name.replace("/", "__"))

    # One folder per stage, so each DVC stage owns its outputs: tune -> train -> eval -> registry.
    def tune_file(self, runs_dir: str | Path) -> Path:
        return Path(runs_dir) / "tune" / f"{self.slug}.json"

    def tune_trial_dir(self, runs_dir: str | Path, number: int) -> Path:
        return Path(runs_dir) / "tune" / self.slug / f"trial-{number}"

    def train_dir(self, runs_dir: str | Path) -> Path:
        return Path(runs_dir) / "train" / self.slug

    def eval_dir(self, runs_dir: str | Path) -> Path:
        return Path(runs_dir) / "eval" / self.slug

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


def summary_run_name(study: str) -> str:
    """The MLflow run of the analyze stage, which holds the report."""
    return f"{study}/summary"


def registered_model_name(experiment: str, run_name: str) -> str:
    """`chextransfer` + `densenet121/random/full` -> `chextransfer.densenet121.random.full` (no `/` or `:`)."""
    parts = [re.sub(r"[^A-Za-z0-9_.-]+", "-", p).strip("-") for p in (experiment, *run_name.split("/"))]
    if not all(parts):
        raise TrackingError(f"cannot make a registered model name from experiment {experiment!r} and run "
                            f"{run_name!r}: a part is empty after removing characters MLflow does not allow.")
    return ".".join(parts)


def cache_file(cache_dir: str | Path) -> Path:
    """The prepare stage's record of what the cache holds (image size, hashes, test source)."""
    return Path(cache_dir) / CACHE_FILE
