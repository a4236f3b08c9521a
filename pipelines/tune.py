"""DVC stage tune: the learning rate of one configuration -> runs/tune/<run>.json (train.lr when tuning is off)."""

from _common import run_stage

run_stage("tune", __doc__)
