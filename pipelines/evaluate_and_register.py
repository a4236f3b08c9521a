"""DVC stage evaluate: one configuration's ensemble on the test split -> runs/eval/<run>/ (eval.json, predictions,
ROC), then registered -> runs/registry/<run>.json; one process, so the import cost is paid once."""

from _common import run_stage

from chexops.stages.register import evaluate_and_register

run_stage(evaluate_and_register, __doc__, per_configuration=True)
