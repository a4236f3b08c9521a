"""DVC stage ingest: the CheXpert folder (real, or generated synthetic) -> data/index/{train,valid,test}.csv."""

import json

from _common import config_and_key, main, parser

from chexops.data.stages import ingest


def run() -> None:
    args = parser(__doc__).parse_args()
    config, _ = config_and_key(args)
    print(json.dumps(ingest(config, progress=not args.quiet), indent=2))


main(run)
