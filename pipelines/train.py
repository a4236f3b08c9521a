"""DVC stage train: one configuration -> runs/train/<run>/ (top-K checkpoints, manifest.json, MLflow run)."""

from _common import run_stage

from chexops.stages.train import run

run_stage(run, __doc__, per_configuration=True)
