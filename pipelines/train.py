"""DVC stage train: one configuration -> runs/train/<run>/ (top-K checkpoints, manifest.json, MLflow run)."""

import json

from _common import config_and_key, main, parser

from chexops.study import open_tracker, train_stage
from chexops.train.tune import chosen_lr


def run() -> None:
    args = parser(__doc__, run=True).parse_args()
    config, key = config_and_key(args)
    summary = train_stage(config, key, open_tracker(config), lr=chosen_lr(config, key), progress=not args.quiet)
    print(json.dumps(summary, indent=2))


main(run)
