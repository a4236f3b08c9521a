"""DVC stage evaluate: one configuration's ensemble on the test split -> runs/eval/<run>/ (eval.json, predictions,
ROC), then registered -> runs/registry/<run>.json; one process, so the import cost is paid once."""

from _common import run_stage

from chexops.stages.register import evaluate_and_register

if __name__ == "__main__":  # not when a worker process imports this script (chexops.data.processes)
    run_stage(evaluate_and_register, __doc__, per_configuration=True)
