"""Promotion with evidence: a candidate takes an alias only when it beats the holder on the same test studies.

The evidence is each version's source run's `predictions.csv` (logged by the evaluate stage: one row per test
study, `study`, `y_<Observation>`, `p_<Observation>`). The decision is the paired bootstrap's over the mean AUROC
of the 6 study tasks (1000 resamples, seed 0): promote when the 95% CI of the difference lies entirely above 0.
DeLong's test per task is recorded beside it as a second opinion. Every decision is recorded on the version.
"""

from __future__ import annotations

import getpass
import json
import math
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from chexops import naming
from chexops.data.labels import STUDY_TASKS
from chexops.errors import ConfigError, DataError
from chexops.evaluate.bootstrap import paired_bootstrap
from chexops.evaluate.delong import delong_test
from chexops.tracking.registry import (
    get_model,
    get_version,
    promotions,
    read_history,
    write_history,
)
from chexops.tracking.registry_lock import Lease, model_lock
from chexops.tracking.store import mlflow_errors, temporary_env
from chexops.tracking.tags import PROMOTION_PREFIX

PREDICTIONS = naming.PREDICTIONS_FILE
N_RESAMPLES = 1000
SEED = 0
DEFAULT_ALIAS = "champion"
_QUIET = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # a one-file download needs no progress bar


@dataclass(frozen=True)
class TaskComparison:
    """One task: bootstrap difference (candidate - holder) with its CI, the bootstrap p kept for the record only, and
    DeLong's p, which is the one the study reads for a single task (NaN: not testable)."""

    delta: float
    ci_low: float
    ci_high: float
    p: float
    delong_delta: float
    delong_p: float


@dataclass(frozen=True)
class VersionComparison:
    """Candidate vs holder on `n_studies` shared test studies; the mean is over the 6 study tasks."""

    n_studies: int
    delta: float
    ci_low: float
    ci_high: float
    p: float
    tasks: dict[str, TaskComparison]

    @property
    def significant(self) -> bool:
        """The candidate is better: the whole CI of the mean AUROC difference lies above zero."""
        return bool(self.ci_low > 0.0)

    def delong_p(self) -> dict[str, float]:
        return {t: c.delong_p for t, c in self.tasks.items()}


@dataclass(frozen=True)
class Decision:
    """What was decided for `version` of `model` about `alias`, and the evidence (None when none was needed)."""

    model: str
    version: int
    alias: str
    decision: str  # promoted | refused | forced | rollback
    against: int | None
    comparison: VersionComparison | None
    record: int  # n of the chexops.promotion.<n>.* tags written
    history: list[int] = field(default_factory=list)

    @property
    def moved(self) -> bool:
        return self.decision != "refused"


def load_predictions(client: Any, name: str, version: Any) -> pd.DataFrame:
    """The study-level test predictions of a version's source run, indexed by study, checked for use."""
    label = f"version {version.version} of {name!r}"
    if not version.run_id:
        raise DataError(f"{label} has no source run, so there are no test predictions to compare; register it "
                        "with the register stage, which links the run that evaluated it.")
    with mlflow_errors(f"read the artifacts of run {version.run_id}", client.tracking_uri):
        listed = {f.path for f in client.list_artifacts(version.run_id)}
        if PREDICTIONS not in listed:
            raise DataError(f"run {version.run_id} of {label} has no {PREDICTIONS} artifact (it has "
                            f"{sorted(listed)}); run the evaluate stage for that configuration before promoting.")
        with tempfile.TemporaryDirectory() as tmp, temporary_env(_QUIET):
            local = client.download_artifacts(version.run_id, PREDICTIONS, tmp)
            where = f"{PREDICTIONS} of {label} (run {version.run_id})"
            try:
                frame = pd.read_csv(local, dtype={"study": str})
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
                raise DataError(f"{where} is not a readable CSV ({exc}); re-run the evaluate stage.") from None
    return _check_predictions(frame, where)


def _check_predictions(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    wanted = ["study", *(f"y_{t}" for t in STUDY_TASKS), *(f"p_{t}" for t in STUDY_TASKS)]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(f"{where} lacks columns {missing}; it was not written by the chexops evaluate stage.")
    if frame.empty:
        raise DataError(f"{where} has no rows; re-run the evaluate stage.")
    if frame["study"].duplicated().any():
        raise DataError(f"{where} lists study {frame['study'][frame['study'].duplicated()].iat[0]!r} twice.")
    numbers = frame[wanted[1:]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    labels, probs = numbers[:, :len(STUDY_TASKS)], numbers[:, len(STUDY_TASKS):]
    if not np.isin(labels, (0.0, 1.0)).all() or not np.isfinite(probs).all():
        raise DataError(f"{where} holds labels other than 0/1 or non-finite probabilities; re-run evaluate.")
    return frame.set_index("study")


def compare(candidate: pd.DataFrame, holder: pd.DataFrame, names: tuple[str, str] = ("candidate", "holder")
            ) -> VersionComparison:
    """Paired bootstrap and per-task DeLong of candidate - holder; both must cover the same studies and labels."""
    if set(candidate.index) != set(holder.index):
        only_c = sorted(set(candidate.index) - set(holder.index))
        only_h = sorted(set(holder.index) - set(candidate.index))
        raise DataError(
            f"{names[0]} was evaluated on {len(candidate)} test studies and {names[1]} on {len(holder)}, "
            f"not the same ones ({len(only_c)} only in {names[0]}, e.g. {only_c[:3]}; {len(only_h)} only in "
            f"{names[1]}, e.g. {only_h[:3]}); a comparison needs both scored on one test set. Re-evaluate both "
            "on the same test split.")
    # one canonical row order: the bootstrap's resamples are drawn by row, so the stored order must not matter
    candidate = candidate.sort_index()
    holder = holder.loc[candidate.index]
    y_cols, p_cols = [f"y_{t}" for t in STUDY_TASKS], [f"p_{t}" for t in STUDY_TASKS]
    y = candidate[y_cols].to_numpy(dtype=np.int8)
    differ = np.flatnonzero((y != holder[y_cols].to_numpy(dtype=np.int8)).any(axis=1))
    if differ.size:
        raise DataError(f"{names[0]} and {names[1]} were evaluated on the same studies with different labels "
                        f"({differ.size} studies, e.g. {candidate.index[differ[0]]!r}); they used different "
                        "test labels or label policies and cannot be compared. Re-evaluate both on one test set.")
    a, b = candidate[p_cols].to_numpy(dtype=float), holder[p_cols].to_numpy(dtype=float)
    groups = candidate["patient"].astype(str).tolist() if "patient" in candidate.columns else None
    result = paired_bootstrap(y, a, b, n_resamples=N_RESAMPLES, seed=SEED, tasks=STUDY_TASKS, groups=groups)
    tasks = {}
    for j, task in enumerate(STUDY_TASKS):
        d = result.per_task[task]
        try:
            dl = delong_test(y[:, j], a[:, j], b[:, j])
            dl_delta, dl_p = dl.delta, dl.p_value
        except DataError:  # fewer than 2 positives or negatives: DeLong's variance is undefined for this task
            dl_delta = dl_p = math.nan
        tasks[task] = TaskComparison(d.delta, d.ci_low, d.ci_high, d.p_value, dl_delta, dl_p)
    m = result.mean
    return VersionComparison(len(y), m.delta, m.ci_low, m.ci_high, m.p_value, tasks)


def promote(client: Any, name: str, version: int | str, alias: str = DEFAULT_ALIAS, force: bool = False,
            user: str | None = None) -> Decision:
    """Give `alias` to `version` when it is significantly better than the holder (or nothing holds it, or
    `force`); otherwise leave the alias. The decision is recorded on the version either way.

    The holder is read, compared against and replaced under the model's lock (chexops.tracking.registry_lock), so
    of two promotions started together one decides and the other is refused with LockBusyError.
    """
    _check_alias(alias)
    candidate = get_version(client, name, version)
    with model_lock(client, name) as lease:
        return _promote(client, name, candidate, alias, force, user, lease)


def _promote(client: Any, name: str, candidate: Any, alias: str, force: bool, user: str | None, lease: Lease
             ) -> Decision:
    number = int(candidate.version)
    model = get_model(client, name)
    holder = model.aliases.get(alias)
    if holder is not None and int(holder) == number:
        raise ConfigError(f"version {number} of {name!r} already holds alias {alias!r}; nothing to promote.")
    comparison = None
    if holder is not None:
        mine = load_predictions(client, name, candidate)
        theirs = load_predictions(client, name, get_version(client, name, holder))
        comparison = compare(mine, theirs, (f"version {number}", f"version {holder} ({alias})"))
    if holder is None or comparison.significant:
        decision = "promoted"
    else:
        decision = "forced" if force else "refused"
    history = read_history(model, alias)
    if holder is not None and history[-1:] != [int(holder)]:  # moved outside chexops: the holder still held it
        history.append(int(holder))
    lease.check(f"record the {decision} decision")
    if decision != "refused":
        with mlflow_errors(f"set alias {alias!r} of {name!r} to version {number}", client.tracking_uri):
            client.set_registered_model_alias(name, alias, str(number))
        history = [*history, number]
        write_history(client, name, alias, history)
    against = int(holder) if holder is not None else None
    record = _record(client, name, candidate, alias, decision, against, comparison, user)
    return Decision(name, number, alias, decision, against, comparison, record, history)


def rollback(client: Any, name: str, alias: str = DEFAULT_ALIAS, user: str | None = None) -> Decision:
    """Give `alias` back to the version that held it before the current holder, and record it on that version."""
    _check_alias(alias)
    get_model(client, name)
    with model_lock(client, name) as lease:
        return _rollback(client, name, alias, user, lease)


def _rollback(client: Any, name: str, alias: str, user: str | None, lease: Lease) -> Decision:
    model = get_model(client, name)
    holder = model.aliases.get(alias)
    if holder is None:
        raise ConfigError(f"no version of {name!r} holds alias {alias!r}, so there is nothing to roll back.")
    history = read_history(model, alias)
    if history[-1] != int(holder):
        raise ConfigError(f"alias {alias!r} of {name!r} is on version {holder}, but its recorded history "
                          f"{history} ends with version {history[-1]}: the alias was moved outside chexops. "
                          f"Promote the version you want with `chexops promote {name} VERSION --alias {alias}`.")
    if len(history) < 2:
        raise ConfigError(f"version {holder} is the first version of {name!r} to hold alias {alias!r}; there is "
                          "no earlier version to roll back to.")
    previous = get_version(client, name, history[-2])
    lease.check("roll the alias back")
    with mlflow_errors(f"set alias {alias!r} of {name!r} to version {previous.version}", client.tracking_uri):
        client.set_registered_model_alias(name, alias, str(previous.version))
    history = history[:-1]
    write_history(client, name, alias, history)
    record = _record(client, name, previous, alias, "rollback", int(holder), None, user)
    return Decision(name, int(previous.version), alias, "rollback", int(holder), None, record, history)


def _check_alias(alias: str) -> None:
    if not alias or not alias.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"alias {alias!r} must be letters, digits, '-' or '_', e.g. champion.")


def _record(client: Any, name: str, version: Any, alias: str, decision: str, against: int | None,
            comparison: VersionComparison | None, user: str | None) -> int:
    """Write the decision as `chexops.promotion.<n>.*` tags on the version; returns n."""
    n = max((r["n"] for r in promotions(version.tags)), default=0) + 1
    tags = {"decision": decision, "alias": alias, "by": user or _user(),
            "at": datetime.now(UTC).isoformat(timespec="seconds"), "against": "" if against is None else str(against)}
    if comparison is not None:
        tags |= {"delta": _fmt(comparison.delta), "ci_low": _fmt(comparison.ci_low),
                 "ci_high": _fmt(comparison.ci_high), "p": _fmt(comparison.p),
                 "delong_p": json.dumps({t: float(_fmt(p)) for t, p in comparison.delong_p().items()})}
    with mlflow_errors(f"record the {decision} decision on version {version.version} of {name!r}",
                        client.tracking_uri):
        for key, value in tags.items():
            client.set_model_version_tag(name, str(version.version), f"{PROMOTION_PREFIX}{n}.{key}", value)
    return n


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.6g}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (e.g. a container user without a passwd entry)
        return "unknown"


def explain(d: Decision) -> list[str]:
    """Human-readable lines: the decision, then the evidence per task."""
    head = {"promoted": "promoted", "forced": "FORCED (not significantly better)", "refused": "refused",
            "rollback": "rolled back"}[d.decision]
    before = {"refused": "stays with", "rollback": "taken back from"}.get(d.decision, "previously")
    lines = [f"{d.model} version {d.version} -> alias {d.alias!r}: {head}"
             + (f" ({before} version {d.against})" if d.against is not None else " (no version held it)")]
    c = d.comparison
    if c is not None:
        lines.append(f"mean AUROC over 6 tasks, version {d.version} - version {d.against}, on {c.n_studies} test "
                     f"studies: {c.delta:+.4f} [95% CI {c.ci_low:+.4f}, {c.ci_high:+.4f}], paired bootstrap "
                     f"p={c.p:.4g} (this decides)")
        lines.append(f"  {'task':<20} {'delta':>8} {'95% CI (bootstrap)':>19} {'DeLong p':>9}")
        for task, t in c.tasks.items():
            ci = f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}]"
            lines.append(f"  {task:<20} {t.delta:>+8.4f} {ci:>19} {t.delong_p:>9.4g}")
        lines.append("  p-values: a mean over tasks by the paired bootstrap, a single task by DeLong's test.")
    lines.append(f"history of {d.alias!r}: {' -> '.join(f'v{v}' for v in d.history) or '(none)'}")
    return lines


def refusal_message(d: Decision) -> str:
    """The one-line reason a promotion was refused, with the numbers and what to do."""
    c = d.comparison
    if c is None:  # only a comparison can refuse; kept total for callers that pass any decision
        return f"version {d.version} of {d.model} was not given alias {d.alias!r}."
    return (f"refused to give alias {d.alias!r} of {d.model} to version {d.version}: it is not significantly better "
            f"than version {d.against} (mean AUROC difference {c.delta:+.4f}, 95% CI [{c.ci_low:+.4f}, "
            f"{c.ci_high:+.4f}], p={c.p:.4g}, on {c.n_studies} studies). Recorded as promotion #{d.record}; "
            "pass --force to promote it anyway.")

