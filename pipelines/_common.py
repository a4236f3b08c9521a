"""What every stage script shares: params.yaml, the run key, clean errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from chexops.config import Config, load_config, validate
from chexops.errors import ChexopsError
from chexops.runs import RunKey


def parser(description: str, run: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if run:
        p.add_argument("--family", required=True)
        p.add_argument("--init", required=True)
        p.add_argument("--truncate", type=int, default=0)
    return p


def config_and_key(args: argparse.Namespace) -> tuple[Config, RunKey | None]:
    config = validate(load_config(args.params))
    key = RunKey(args.family, args.init, args.truncate) if hasattr(args, "family") else None
    return config, key


def main(body: Callable[[], None]) -> None:
    """Run a stage; a user mistake is one line on stderr and exit code 2, as in the CLI."""
    try:
        body()
    except ChexopsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)
