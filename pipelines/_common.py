"""What every stage script shares: params.yaml, the configuration, the plugins check, clean errors.

Each script imports its own stage module (`chexops.stages.<name>`) and calls `run_stage(<its run>, __doc__)`, so
the modules a stage runs are what it imports (tests/fixtures/lineage.py reads them for dvc.yaml's deps).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from chexops.errors import ChexopsError
from chexops.stages.context import Stage, StageContext


def run_stage(stage: Stage, description: str, per_configuration: bool) -> None:
    """Parse the stage's arguments, run it, print its summary; a user mistake is one line and exit code 2."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if per_configuration:
        p.add_argument("--family", required=True)
        p.add_argument("--init", required=True)
        # dvc.yaml passes a grid.truncated entry as it is written (`--family F --depth K --init I [--strategy S]`)
        p.add_argument("--truncate", "--depth", dest="truncate", type=int, default=0)
        p.add_argument("--strategy", default=None)
        p.add_argument("--fraction", type=float, default=1.0, help="of the labelled training split")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("chexops").setLevel(logging.INFO)  # chexops' own progress; other libraries' warnings only
    try:
        print(json.dumps(_run(stage, args), indent=2, default=str))
    except ChexopsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)


def _run(stage: Stage, args: argparse.Namespace) -> dict:
    from chexops.components.lineage import check_recorded
    from chexops.config import load_config, validate
    from chexops.naming import DEFAULT_STRATEGY, RunKey
    from chexops.stages.context import components_of, verify_components

    config = validate(load_config(args.params))
    key = None
    if hasattr(args, "family"):
        key = RunKey(args.family, args.init, args.truncate, args.fraction, args.strategy or DEFAULT_STRATEGY)
        check_recorded(components_of(config, key))  # the components the lock records
        verify_components(config, [key])  # and their deep checks, once per version of their code
    return stage(StageContext(config, key, progress=not args.quiet))
