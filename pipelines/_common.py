"""What every stage script shares: params.yaml, the configuration, the plugins check, clean errors.

Each script is `run_stage("<name>")`; the stage itself is `chexops.stages.<name>`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from chexops.errors import ChexopsError


def run_stage(name: str, description: str) -> None:
    """Parse the stage's arguments, run it, print its summary; a user mistake is one line and exit code 2."""
    from chexops.stages import PER_CONFIGURATION

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if name in PER_CONFIGURATION:
        p.add_argument("--family", required=True)
        p.add_argument("--init", required=True)
        # dvc.yaml passes a grid.truncated entry as it is written (`--family F --depth K --init I [--strategy S]`)
        p.add_argument("--truncate", "--depth", dest="truncate", type=int, default=0)
        p.add_argument("--strategy", default=None)
        p.add_argument("--fraction", type=float, default=1.0, help="of the labelled training split")
    args = p.parse_args()
    from chexops.cli.signals import sigterm_as_interrupt

    sigterm_as_interrupt()  # a SIGTERM'd stage marks its MLflow run KILLED instead of leaving it RUNNING
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("chexops").setLevel(logging.INFO)  # chexops' own progress; other libraries' warnings only
    try:
        print(json.dumps(_run(name, args), indent=2, default=str))
    except ChexopsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)


def _run(name: str, args: argparse.Namespace) -> dict:
    from chexops.components.lock import check_lock
    from chexops.config import load_config, validate
    from chexops.naming import DEFAULT_STRATEGY, RunKey
    from chexops.stages import StageContext, stage

    config = validate(load_config(args.params))
    check_lock()
    key = None
    if hasattr(args, "family"):
        key = RunKey(args.family, args.init, args.truncate, args.fraction, args.strategy or DEFAULT_STRATEGY)
    return stage(name)(StageContext(config, key, progress=not args.quiet))
