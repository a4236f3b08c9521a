"""DVC stage tune: the learning rate of one configuration -> runs/tune/<run>.json (train.lr when tuning is off)."""

from _common import run_stage

from chexops.stages.tune import run

if __name__ == "__main__":  # not when a worker process imports this script (chexops.data.processes)
    run_stage(run, __doc__, per_configuration=True)
