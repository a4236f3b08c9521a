"""Where each configuration of a worker grid stands, read from its Optuna study alone (no scheduler, no sacct).

A configuration is `done` when one of its trials is COMPLETE, `running` while one is RUNNING (with the worker and
SLURM job holding it), `queued` while one waits (first claim, a retry, or handed back by a stopped worker), and
`failed` when only failed trials are left (its error is the last one's). Progress is the examples its run
folder's saved state has trained, when the caller gives the run folders.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chexops.errors import ChexopsError
from chexops.scaleout.worker import GRID_ATTR, RUN_PARAM


@dataclass
class ConfigurationStatus:
    run: str
    state: str  # queued | running | done | failed
    trials: int  # trials of this configuration so far (retries after deaths)
    stops: int  # times a worker stopped on USR1 and handed it back
    worker: str = ""  # host:pid of the worker holding (or that last held) it
    slurm_job: str = ""
    examples: int | None = None  # examples trained so far (saved state), when known
    value: float | None = None  # the COMPLETE trial's value: validation score its checkpoints were ranked by
    error: str = ""


def _state_of(trials: list[Any]) -> str:
    from optuna.trial import TrialState

    states = {t.state for t in trials}
    for state, word in ((TrialState.COMPLETE, "done"), (TrialState.RUNNING, "running"),
                        (TrialState.WAITING, "queued")):
        if state in states:
            return word
    return "failed"


def grid_status(storage_url: str, study_name: str,
                examples: Callable[[str], int | None] | None = None) -> list[ConfigurationStatus]:
    """One status per configuration of the study's grid, in grid order; `examples(run)` gives progress."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage_url)
    except KeyError as exc:
        raise ChexopsError(f"no Optuna study {study_name!r} in {storage_url.split('@')[-1]}: no worker has "
                           "started this grid yet (or the name is wrong: `optuna studies --storage URL`).") from exc
    except Exception as exc:
        raise ChexopsError(f"cannot read the Optuna storage: {type(exc).__name__}: {exc}") from exc
    trials = study.get_trials(deepcopy=False)
    names = list(study.user_attrs.get(GRID_ATTR) or dict.fromkeys(t.user_attrs.get(RUN_PARAM) for t in trials))
    by_run: dict[str, list[Any]] = {name: [] for name in names}
    for t in trials:
        by_run.setdefault(t.params.get(RUN_PARAM) or t.user_attrs.get(RUN_PARAM), []).append(t)
    out = []
    for name in names:
        runs = by_run.get(name, [])
        last = runs[-1] if runs else None
        attrs = last.user_attrs if last else {}
        status = ConfigurationStatus(
            run=name, state=_state_of(runs), trials=len(runs), stops=sum(int(t.user_attrs.get("stops", 0))
                                                                          for t in runs),
            worker=attrs.get("worker", ""), slurm_job=attrs.get("slurm_job", ""),
            value=next((t.value for t in runs if t.value is not None), None),
            error=next((t.user_attrs["error"] for t in reversed(runs) if "error" in t.user_attrs), ""))
        if examples is not None:
            with contextlib.suppress(ChexopsError):
                status.examples = examples(name)
        out.append(status)
    return out


def summary(statuses: list[ConfigurationStatus]) -> dict[str, int]:
    counts = dict.fromkeys(("queued", "running", "done", "failed"), 0)
    for s in statuses:
        counts[s.state] += 1
    return counts
