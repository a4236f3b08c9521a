"""A small exception hierarchy.

Every error a user can cause is a ChexopsError whose message says what was wrong, the offending value and
what to do. The CLI turns these into one line and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ChexopsError(Exception):
    """Base class: a problem the user can fix."""


class ConfigError(ChexopsError):
    """params.yaml or a command-line option is invalid."""


class PluginError(ChexopsError):
    """A plugin could not be loaded, or registered something invalid."""


class UnknownComponentError(ChexopsError):
    """A family, initializer, truncation or label policy that no plugin registered."""


class DuplicateComponentError(PluginError):
    """Two plugins registered the same name."""


class BuildError(ChexopsError):
    """A model could not be built as asked (e.g. truncation too deep)."""


class WeightsError(ChexopsError):
    """Weights could not be found, read, or do not fit the architecture."""


class DataError(ChexopsError):
    """A dataset folder, CSV or image is invalid."""


class TrackingError(ChexopsError):
    """MLflow could not be reached or refused an operation."""


class LockBusyError(TrackingError):
    """Another process is changing the model's aliases (the registry lock is held)."""


class WorkerError(ChexopsError):
    """The shared study (Optuna storage, grid) cannot be used as asked."""


class BadImage(Exception):
    """An image that cannot be used; the message is the reason. Not a ChexopsError: the caller decides whether
    it is the user's (a request's image) or a dataset's (data.on_bad_image)."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """A ' Did you mean: a, b?' suffix for error messages, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


class TrainingStopped(KeyboardInterrupt):
    """Training stopped at a safe step because a stop was requested (SIGUSR1 from a scheduler: time limit or
    preemption); its resumable state was written first. A KeyboardInterrupt, so every `except Exception` lets it
    through and the MLflow run is marked KILLED (resumable), not FAILED."""


class SlurmError(ChexopsError):
    """A SLURM job could not be written, submitted or requeued as asked."""
