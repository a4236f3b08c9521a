"""DVC stage train: one configuration -> runs/train/<run>/ (top-K checkpoints, manifest.json, MLflow run)."""

from _common import run_stage

from chexops.stages.train import run

if __name__ == "__main__":  # not when a worker process imports this script (chexops.data.processes)
    run_stage(run, __doc__, per_configuration=True)
