"""DVC stage evaluate: the ensemble of one run on the test split -> runs/eval/<run>/ (eval.json with CIs,
predictions.csv, roc.png), logged to the run's MLflow record."""

from _common import config_and_key, main, parser

from chexops.study import evaluate_stage, open_tracker


def run() -> None:
    args = parser(__doc__, run=True).parse_args()
    config, key = config_and_key(args)
    payload = evaluate_stage(config, key, open_tracker(config))
    m = payload["metrics"]
    print(f"{key.name}: test mean AUROC {m['test_mean_auroc_6']:.3f} "
          f"[{m['test_mean_auroc_6_ci_low']:.3f}, {m['test_mean_auroc_6_ci_high']:.3f}]")


main(run)
