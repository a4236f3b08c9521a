"""A process-wide stop request: a signal handler asks, the training loop stops at its next safe step.

The handler only sets a flag (safe in a signal handler); `Trainer` checks it after each optimizer step, writes
its resumable state right there and raises TrainingStopped. The worker checks it before claiming the next
configuration. Nothing here imports torch.
"""

from __future__ import annotations

import threading

_stop = threading.Event()
_reason: list[str] = []


def request_stop(reason: str) -> None:
    """Ask the training (and the worker) to stop at the next safe step; `reason` says why (e.g. SIGUSR1)."""
    if not _stop.is_set():
        _reason[:] = [reason]
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def stop_reason() -> str:
    return _reason[0] if _reason else ""


def clear_stop() -> None:
    """Forget a request (tests; a process that handled one and goes on)."""
    _stop.clear()
    _reason.clear()
