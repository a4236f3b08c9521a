"""DVC stage prepare: decode every image once into data/cache/<split>.npy (uint8, memory-mapped when read)."""

import json

from _common import config_and_key, main, parser

from chexops.data.stages import prepare


def run() -> None:
    args = parser(__doc__).parse_args()
    config, _ = config_and_key(args)
    print(json.dumps(prepare(config, progress=not args.quiet), indent=2))


main(run)
