"""DVC stage tune: the learning rate of one configuration -> runs/tune/<run>.json (train.lr when tuning is off)."""

from _common import run_stage

from chexops.stages.tune import run

run_stage(run, __doc__, per_configuration=True)
