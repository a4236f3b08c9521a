"""Non-parametric bootstrap of AUROC: percentile CIs and a paired model comparison, all resamples at once.

A resample is represented by its count vector (how often each sample was drawn), so every replicate's
AUROC is one weighted Mann-Whitney sum (`metrics.weighted_auroc`) evaluated for all resamples together.
The same indices serve every task, so per-replicate means over tasks keep the tasks' correlation, and in
`paired_bootstrap` the same indices serve both models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from chexops.data.labels import OBSERVATIONS, STUDY_TASKS
from chexops.errors import ConfigError, DataError
from chexops.evaluate.metrics import (
    MEAN_TASKS,
    check_matrix,
    metric_key,
    resolve_columns,
    weighted_auroc,
)

# Bound on resamples x samples handled per block, so count matrices stay near 128 MB whatever B and n are.
_BLOCK_ENTRIES = 1 << 24


def bootstrap_indices(n: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_resamples, n) indices drawn with replacement from `np.random.default_rng(seed)`."""
    if int(n) < 1:
        raise DataError(f"cannot bootstrap {n} samples; the evaluation set is empty.")
    if int(n_resamples) < 1:
        raise ConfigError(f"n_resamples must be a positive integer, got {n_resamples}; the study uses 1000.")
    return np.random.default_rng(seed).integers(0, int(n), size=(int(n_resamples), int(n)))


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, n) count matrix: row b is the bincount of resample b, computed for all rows in one bincount."""
    b = idx.shape[0]
    flat = (idx + (np.arange(b, dtype=np.int64) * n)[:, None]).ravel()
    # int32 halves the memory traffic of the AUROC kernel; a count never exceeds n.
    return np.bincount(flat, minlength=b * n).astype(np.int32 if n < 2**30 else np.int64).reshape(b, n)


def _check_idx(idx: np.ndarray, n: int) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        raise DataError(f"resample indices must be an integer (B, n) array, got {idx.dtype} {idx.shape}.")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise DataError(f"resample indices must lie in [0, {n}), got [{idx.min()}, {idx.max()}].")
    return idx


def auroc_replicates(y_true: np.ndarray, y_score: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(B, K) AUROC of each column of (n, K) labels/scores on each resample in `idx` (B, n); NaN = 1 class."""
    y, s = check_matrix(y_true, y_score)
    idx = _check_idx(idx, y.shape[0])
    out = np.empty((idx.shape[0], y.shape[1]))
    step = max(1, _BLOCK_ENTRIES // max(1, y.shape[0]))
    # Blocks of resamples bound memory; within a block, all resamples and tasks share one count matrix.
    for start in range(0, idx.shape[0], step):
        counts = _counts(idx[start : start + step], y.shape[0])
        for k in range(y.shape[1]):
            out[start : start + step, k] = weighted_auroc(y[:, k], s[:, k], counts)
    return out


def auroc_resamples(y_true: np.ndarray, y_score: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(B,) AUROC of one label/score vector on each resample; equals roc_auc_score(y[idx[b]], s[idx[b]])."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise DataError(
            f"auroc_resamples takes one task's 1-D labels, got shape {y.shape}; use auroc_replicates."
        )
    return auroc_replicates(y, y_score, idx)[:, 0]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its percentile interval; n_valid counts the replicates that were defined."""

    point: float
    ci_low: float
    ci_high: float
    n_valid: int


@dataclass(frozen=True)
class BootstrapResult:
    """Per-task and mean-AUROC estimates with percentile CIs.

    A task whose full-set labels have one class has NaN everywhere and is left out of the means; `undefined`
    lists such requested tasks, `mean_undefined` those left out of each mean. A mean is None when the arrays
    did not hold all of its tasks.
    """

    per_task: Mapping[str, Estimate]
    mean_auroc_6: Estimate | None
    mean_auroc_5: Estimate | None
    undefined: tuple[str, ...]
    mean_undefined: Mapping[str, tuple[str, ...]]
    n_resamples: int
    ci: float
    seed: int

    def to_flat_dict(self, prefix: str = "test") -> dict[str, float]:
        """e.g. test_auroc_Edema, test_auroc_Edema_ci_low, test_auroc_Edema_ci_high, test_mean_auroc_6, ..."""
        items = [(metric_key(t), e) for t, e in self.per_task.items()]
        items += [(name, getattr(self, name)) for name in MEAN_TASKS if getattr(self, name) is not None]
        head = f"{prefix}_" if prefix else ""
        out: dict[str, float] = {}
        for key, e in items:
            out[head + key] = e.point
            out[f"{head}{key}_ci_low"] = e.ci_low
            out[f"{head}{key}_ci_high"] = e.ci_high
        return out


def _check_ci(ci: float) -> float:
    if not 0.0 < float(ci) < 1.0:
        raise ConfigError(f"ci must lie strictly between 0 and 1, got {ci}; the study uses 0.95.")
    return float(ci)


def _percentiles(reps: np.ndarray, ci: float) -> tuple[float, float, int]:
    """Percentile interval of the defined replicates (NaN when none is)."""
    ok = reps[~np.isnan(reps)]
    if ok.size == 0:
        return float("nan"), float("nan"), 0
    alpha = 100.0 * (1.0 - ci) / 2.0
    low, high = np.percentile(ok, [alpha, 100.0 - alpha])
    return float(low), float(high), int(ok.size)


def _replicate_mean(reps: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per-replicate mean over the `keep` columns; NaN for a replicate where any of them is undefined.

    Tasks undefined on the full set are excluded beforehand (`keep`), so every defined replicate averages the
    same tasks as the point estimate; a replicate that lost one of them is dropped rather than re-weighted.
    """
    if not keep.any():
        return np.full(reps.shape[0], np.nan)
    return reps[:, keep].mean(axis=1)


def _prepare(
    y_true: np.ndarray, y_score: np.ndarray, tasks: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The tasks to score (requested ones plus any mean's tasks the arrays hold) and their columns."""
    y, s = check_matrix(y_true, y_score)
    cols = resolve_columns(y.shape[1], tasks)
    wanted = set(tasks)
    for group in MEAN_TASKS.values():
        if all(t in cols for t in group):
            wanted.update(group)
    names = [t for t in OBSERVATIONS if t in wanted]
    sel = [cols[t] for t in names]
    return names, y[:, sel], s[:, sel]


def bootstrap_ci(
    y_true: np.ndarray,
    y_score: np.ndarray,
    n_resamples: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    tasks: Sequence[str] = STUDY_TASKS,
) -> BootstrapResult:
    """Percentile bootstrap CIs for each task's AUROC and for mean_auroc_6 / mean_auroc_5.

    Arrays are (n, 14) in OBSERVATIONS order or (n, len(tasks)) in `tasks` order. All tasks use the same
    resamples, so a mean's replicate is the mean of that resample's task AUROCs. Interval: the (1-ci)/2 and
    (1+ci)/2 percentiles (linear interpolation) of the defined replicates; NaN replicates are ignored.
    """
    ci = _check_ci(ci)
    names, y, s = _prepare(y_true, y_score, tasks)
    point = auroc_replicates(y, s, np.arange(y.shape[0])[None, :])[0]
    reps = auroc_replicates(y, s, bootstrap_indices(y.shape[0], n_resamples, seed))
    defined = ~np.isnan(point)
    per_task = {t: Estimate(float(point[j]), *_percentiles(reps[:, j], ci)) for j, t in enumerate(names)}
    means: dict[str, Estimate | None] = {}
    mean_undefined: dict[str, tuple[str, ...]] = {}
    for name, group in MEAN_TASKS.items():
        if not all(t in names for t in group):
            means[name] = None
            continue
        mean_undefined[name] = tuple(t for t in names if t in group and np.isnan(per_task[t].point))
        keep = np.array([t in group for t in names]) & defined
        mean_point = float(point[keep].mean()) if keep.any() else float("nan")
        means[name] = Estimate(mean_point, *_percentiles(_replicate_mean(reps, keep), ci))
    return BootstrapResult(
        per_task={t: per_task[t] for t in tasks},
        mean_auroc_6=means["mean_auroc_6"],
        mean_auroc_5=means["mean_auroc_5"],
        undefined=tuple(t for t in tasks if np.isnan(per_task[t].point)),
        mean_undefined=mean_undefined,
        n_resamples=int(n_resamples),
        ci=ci,
        seed=int(seed),
    )


@dataclass(frozen=True)
class Delta:
    """AUROC(a) - AUROC(b) with its percentile interval and two-sided bootstrap p-value."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n_valid: int


@dataclass(frozen=True)
class PairedBootstrapResult:
    """Difference of model a over model b in mean AUROC over `tasks`, and per task."""

    mean: Delta
    per_task: Mapping[str, Delta]
    tasks: tuple[str, ...]
    n_resamples: int
    ci: float
    seed: int

    def to_flat_dict(self, prefix: str = "delta") -> dict[str, float]:
        """e.g. delta_mean_auroc, delta_mean_auroc_ci_low, ..._ci_high, ..._p, delta_auroc_Edema, ..."""
        head = f"{prefix}_" if prefix else ""
        out: dict[str, float] = {}
        for key, d in [("mean_auroc", self.mean)] + [(metric_key(t), d) for t, d in self.per_task.items()]:
            out[head + key] = d.delta
            out[f"{head}{key}_ci_low"] = d.ci_low
            out[f"{head}{key}_ci_high"] = d.ci_high
            out[f"{head}{key}_p"] = d.p_value
        return out


def bootstrap_p_value(reps: np.ndarray) -> float:
    """Two-sided p = 2 min(P*(d <= 0), P*(d >= 0)) over defined replicates, clipped to [1/(B+1), 1].

    P* is the fraction of bootstrap replicates; this is (about) the smallest 1 - ci at which the percentile
    interval excludes zero. The floor 1/(B+1) stops a finite bootstrap from claiming p = 0.
    """
    ok = reps[~np.isnan(reps)]
    if ok.size == 0:
        return float("nan")
    p = 2.0 * min(float(np.mean(ok <= 0.0)), float(np.mean(ok >= 0.0)))
    return float(np.clip(p, 1.0 / (ok.size + 1), 1.0))


def _delta(point: float, reps: np.ndarray, ci: float) -> Delta:
    low, high, n_valid = _percentiles(reps, ci)
    return Delta(point, low, high, bootstrap_p_value(reps), n_valid)


def paired_bootstrap(
    y_true: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    tasks: Sequence[str] = STUDY_TASKS,
    ci: float = 0.95,
) -> PairedBootstrapResult:
    """Paired bootstrap of AUROC(a) - AUROC(b), per task and for the mean over `tasks`, on shared resamples.

    Each replicate draws one set of studies and scores both models on it, so the difference keeps the models'
    correlation. The CI is the percentile interval of the replicate differences; the p-value is
    `bootstrap_p_value` (two-sided, H0: no difference). Tasks whose full-set labels have one class are left
    out of the mean; replicates where a remaining task lost a class are ignored.
    """
    ci = _check_ci(ci)
    y, a = check_matrix(y_true, score_a)
    _, b = check_matrix(y_true, score_b)
    if a.shape != b.shape:
        raise DataError(f"the two models' scores differ in shape: {a.shape} vs {b.shape}.")
    cols = resolve_columns(y.shape[1], tasks)
    sel = [cols[t] for t in tasks]
    y, a, b = y[:, sel], a[:, sel], b[:, sel]
    idx = bootstrap_indices(y.shape[0], n_resamples, seed)
    full = np.arange(y.shape[0])[None, :]
    point = auroc_replicates(y, a, full)[0] - auroc_replicates(y, b, full)[0]
    reps = auroc_replicates(y, a, idx) - auroc_replicates(y, b, idx)
    keep = ~np.isnan(point)
    mean_point = float(point[keep].mean()) if keep.any() else float("nan")
    return PairedBootstrapResult(
        mean=_delta(mean_point, _replicate_mean(reps, keep), ci),
        per_task={t: _delta(float(point[j]), reps[:, j], ci) for j, t in enumerate(tasks)},
        tasks=tuple(tasks),
        n_resamples=int(n_resamples),
        ci=ci,
        seed=int(seed),
    )
