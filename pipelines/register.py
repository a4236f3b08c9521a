"""DVC stage register: one run's ensemble -> a new MLflow registry version with alias `candidate`."""

import json

from _common import config_and_key, main, parser

from chexops.study import open_tracker, register_stage


def run() -> None:
    args = parser(__doc__, run=True).parse_args()
    config, key = config_and_key(args)
    print(json.dumps(register_stage(config, key, open_tracker(config))))


main(run)
