"""DVC stage evaluate: one run's ensemble on the test split -> runs/eval/<run>/ (eval.json, predictions, ROC)."""

from _common import run_stage

run_stage("evaluate", __doc__)
