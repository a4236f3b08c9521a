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
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars, no MLflow INFO lines; one summary line instead of the result's JSON")
    if per_configuration:
        p.add_argument("--family", required=True)
        p.add_argument("--init", required=True)
        # dvc.yaml passes a grid.truncated entry as it is written (`--family F --depth K --init I [--strategy S]`)
        p.add_argument("--truncate", "--depth", dest="truncate", type=int, default=0)
        p.add_argument("--strategy", default=None)
        p.add_argument("--fraction", type=float, default=1.0, help="of the labelled training split")
        p.add_argument("--seed", type=int, default=None, help="a grid.seeds repeat with this train seed")
    args = p.parse_args()
    from chexops.cli import quiet_mlflow
    from chexops.interrupts import sigterm_as_interrupt

    sigterm_as_interrupt()  # a SIGTERM'd stage marks its MLflow run KILLED instead of leaving it RUNNING
    if args.quiet:
        quiet_mlflow()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # chexops' own progress (a line per validation, so a long stage shows life); other libraries' warnings only
    logging.getLogger("chexops").setLevel(logging.INFO)
    try:
        result = _run(stage, args)
        print(summary_line(result) if args.quiet else json.dumps(result, indent=2, default=str))
    except ChexopsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM inside a run (its MLflow run is marked KILLED)
        print(f"Interrupted{f' ({exc})' if str(exc) else ''}.", file=sys.stderr)
        sys.exit(130)


def _run(stage: Stage, args: argparse.Namespace) -> dict:
    from chexops.components.lineage import check_recorded
    from chexops.config import load_config, validate
    from chexops.naming import DEFAULT_STRATEGY, RunKey
    from chexops.stages.context import components_of, verify_components

    config = validate(load_config(args.params))
    key = None
    if hasattr(args, "family"):
        key = RunKey(args.family, args.init, args.truncate, args.fraction, args.strategy or DEFAULT_STRATEGY,
                     args.seed)
        check_recorded(components_of(config, key))  # the components the lock records
        verify_components(config, [key])  # and their deep checks, once per version of their code
    return stage(StageContext(config, key, progress=not args.quiet))


def summary_line(result: dict) -> str:
    """One line for a stage's result: its own `summary` when it states one, else its scalar fields."""
    if isinstance(result.get("summary"), str):
        return result["summary"]
    scalars = [f"{k}={v}" for k, v in result.items()
               if isinstance(v, str | int | float | bool) and not k.endswith(("_id", "sha256", "hash"))]
    line = ", ".join(scalars)
    return line if len(line) <= 160 else line[:157] + "..."
