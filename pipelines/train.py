"""DVC stage train: one configuration -> runs/train/<run>/ (top-K checkpoints, manifest.json, MLflow run)."""

from _common import run_stage

run_stage("train", __doc__)
