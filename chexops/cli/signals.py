"""SIGTERM as Ctrl-C for chexops processes (the CLI and the DVC stage scripts).

Python's default SIGTERM handler ends the process without unwinding it, so `Tracker.run_guard` never marks the
MLflow run: a `dvc repro` stopped with SIGTERM (what `kill`, SLURM's time limit and CI cancellation send) left its
run RUNNING. Raised as KeyboardInterrupt instead, the run ends KILLED and a later resume reopens it.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


def _interrupt(signum: int, _frame: Any) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def sigterm_as_interrupt() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread (where a handler can be set; elsewhere a no-op)."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _interrupt)
