"""SIGTERM as Ctrl-C: the one place chexops turns a polite stop into KeyboardInterrupt.

Python's default SIGTERM handler ends the process without unwinding it, so `Tracker.run_guard` never marks the
MLflow run: a `dvc repro` stopped with SIGTERM (what `kill`, SLURM's time limit and CI cancellation send) left its
run RUNNING. Raised as KeyboardInterrupt instead, the run ends KILLED and a later resume reopens it.

Two scopes, one handler: the CLI and the stage scripts take SIGTERM for the whole process
(`sigterm_as_interrupt`); a library caller of `run_guard` only for the run (`sigterm_interrupts`). A handler
someone else set (a SLURM worker's, an application's) owns SIGTERM and is kept.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _interrupt(signum: int, _frame: Any) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _unclaimed() -> bool:
    """Only the main thread can set a handler, and only an unset one is ours to take."""
    return threading.current_thread() is threading.main_thread() and \
        signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)


def sigterm_as_interrupt() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread for the rest of the process."""
    if _unclaimed():
        signal.signal(signal.SIGTERM, _interrupt)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block only; the default comes back after it."""
    if not _unclaimed():
        yield
        return
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
