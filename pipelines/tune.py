"""DVC stage tune: the learning rate of one configuration -> runs/tune/<run>.json (train.lr when tuning is off)."""

import json

from _common import config_and_key, main, parser

from chexops.train.tune import tune_stage


def run() -> None:
    args = parser(__doc__, run=True).parse_args()
    config, key = config_and_key(args)
    tracker = None
    if config.tune.enabled:
        from chexops.study import open_tracker

        tracker = open_tracker(config)
    print(json.dumps(tune_stage(config, key, tracker, progress=not args.quiet), indent=2))


main(run)
