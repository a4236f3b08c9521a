"""DVC stage register: one run's ensemble -> a new MLflow registry version with alias `candidate`."""

from _common import run_stage

run_stage("register", __doc__)
