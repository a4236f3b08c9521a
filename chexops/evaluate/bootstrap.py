"""Non-parametric bootstrap of AUROC: percentile CIs and a paired model comparison, all resamples at once.

A resample is represented by its count vector (how often each sample was drawn), so every replicate's
AUROC is one weighted Mann-Whitney sum (`metrics.weighted_auroc`) evaluated for all resamples together.
The same indices serve every task, so per-replicate means over tasks keep the tasks' correlation, and in
`paired_bootstrap` the same indices serve both models.

When a patient has more than one test study, the studies are not independent: resampling them one by one gives
intervals that are too narrow. `Resampling` then draws whole patients (a cluster bootstrap): each replicate draws
as many patients as the test set holds, with replacement, and counts every study of a drawn patient.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from chexops.data.labels import OBSERVATIONS, STUDY_TASKS
from chexops.errors import ConfigError, DataError
from chexops.evaluate.metrics import (
    MEAN_TASKS,
    check_matrix,
    mean_name,
    metric_key,
    resolve_columns,
    weighted_auroc,
)
from chexops.naming import COMPETITION_MEAN, HEADLINE_MEAN

# Bound on resamples x samples handled per block, so count matrices stay near 128 MB whatever B and n are.
_BLOCK_ENTRIES = 1 << 24


def bootstrap_indices(n: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_resamples, n) indices drawn with replacement from `np.random.default_rng(seed)`."""
    if int(n) < 1:
        raise DataError(f"cannot bootstrap {n} samples; the evaluation set is empty.")
    if int(n_resamples) < 1:
        raise ConfigError(f"n_resamples must be a positive integer, got {n_resamples}; the study uses 1000.")
    return np.random.default_rng(seed).integers(0, int(n), size=(int(n_resamples), int(n)))


@dataclass(frozen=True)
class Resampling:
    """How a test set of `n` samples is resampled: whole clusters (patients) or, without them, single samples.

    `clusters` gives each sample's cluster code 0..G-1; None when every sample is its own cluster, which keeps
    the plain study bootstrap (and its numbers) exactly.
    """

    n: int
    n_resamples: int
    seed: int
    clusters: np.ndarray | None = None

    @classmethod
    def of(cls, n: int, n_resamples: int = 1000, seed: int = 0, groups: Any = None) -> Resampling:
        """Resample clusters of `groups` (one id per sample, e.g. the patient) when one holds several samples."""
        if int(n) < 1:
            raise DataError(f"cannot bootstrap {n} samples; the evaluation set is empty.")
        if int(n_resamples) < 1:
            raise ConfigError(f"n_resamples must be a positive integer, got {n_resamples}; the study uses 1000.")
        codes = None
        if groups is not None:
            ids = np.asarray(groups, dtype=object)
            if ids.shape != (int(n),):
                raise DataError(f"groups must give one id per sample ({n}), got shape {ids.shape}.")
            codes, uniques = pd.factorize(ids)
            if (codes < 0).any():
                raise DataError(f"group ids are missing at rows {np.flatnonzero(codes < 0)[:5].tolist()}.")
            codes = codes if len(uniques) < int(n) else None
        return cls(int(n), int(n_resamples), int(seed), codes)

    @property
    def unit(self) -> str:
        return "study" if self.clusters is None else "patient"

    @property
    def n_clusters(self) -> int:
        return self.n if self.clusters is None else int(self.clusters.max()) + 1

    def count_blocks(self) -> Iterator[tuple[slice, np.ndarray]]:
        """(rows, counts) blocks: counts[b, i] = how often sample i is in resample b (memory-bounded blocks)."""
        step = max(1, _BLOCK_ENTRIES // max(self.n, self.n_clusters))
        if self.clusters is None:
            idx = bootstrap_indices(self.n, self.n_resamples, self.seed)
            for start in range(0, self.n_resamples, step):
                yield slice(start, start + step), _counts(idx[start:start + step], self.n)
            return
        g = self.n_clusters
        draws = np.random.default_rng(self.seed).integers(0, g, size=(self.n_resamples, g))
        for start in range(0, self.n_resamples, step):
            yield slice(start, start + step), _counts(draws[start:start + step], g)[:, self.clusters]


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


def _index_blocks(idx: np.ndarray, n: int) -> Iterator[tuple[slice, np.ndarray]]:
    step = max(1, _BLOCK_ENTRIES // max(1, n))
    for start in range(0, idx.shape[0], step):
        yield slice(start, start + step), _counts(idx[start:start + step], n)


def auroc_replicates(y_true: np.ndarray, y_score: np.ndarray, idx: np.ndarray | Resampling) -> np.ndarray:
    """(B, K) AUROC of each column of (n, K) labels/scores on each resample; NaN = 1 class.

    `idx` is a (B, n) index array or a `Resampling` (which may draw whole patients).
    """
    y, s = check_matrix(y_true, y_score)
    if isinstance(idx, Resampling):
        if idx.n != y.shape[0]:
            raise DataError(f"the resampling is for {idx.n} samples, the arrays hold {y.shape[0]}.")
        rows, blocks = idx.n_resamples, idx.count_blocks()
    else:
        idx = _check_idx(idx, y.shape[0])
        rows, blocks = idx.shape[0], _index_blocks(idx, y.shape[0])
    out = np.empty((rows, y.shape[1]))
    # Blocks of resamples bound memory; within a block, all resamples and tasks share one count matrix.
    for block, counts in blocks:
        for k in range(y.shape[1]):
            out[block, k] = weighted_auroc(y[:, k], s[:, k], counts)
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
    unit: str = "study"  # what a resample draws: "study", or "patient" (all of a drawn patient's studies)

    def means(self) -> dict[str, Estimate]:
        """Each mean under its honest name: 'mean_auroc_6', or 'mean_auroc_5of6' when a task is undefined."""
        return {mean_name(name, self.mean_undefined[name]): getattr(self, name)
                for name in MEAN_TASKS if getattr(self, name) is not None}

    def usable_replicates(self) -> dict[str, int]:
        """How many of the resamples gave a defined value, per metric key (fewer than n_resamples: a resample
        lost every positive or negative of a task)."""
        out = {metric_key(t): e.n_valid for t, e in self.per_task.items()}
        return out | {k: e.n_valid for k, e in self.means().items()}

    def to_flat_dict(self, prefix: str = "test") -> dict[str, float]:
        """e.g. test_auroc_Edema, test_auroc_Edema_ci_low, test_auroc_Edema_ci_high, test_mean_auroc_6, ..."""
        items = [(metric_key(t), e) for t, e in self.per_task.items()]
        items += list(self.means().items())
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
    groups: Sequence[Any] | None = None,
) -> BootstrapResult:
    """Percentile bootstrap CIs for each task's AUROC and for mean_auroc_6 / mean_auroc_5.

    Arrays are (n, 14) in OBSERVATIONS order or (n, len(tasks)) in `tasks` order. All tasks use the same
    resamples, so a mean's replicate is the mean of that resample's task AUROCs. Interval: the (1-ci)/2 and
    (1+ci)/2 percentiles (linear interpolation) of the defined replicates; NaN replicates are ignored.
    `groups` (e.g. each study's patient) makes a resample draw whole groups when one holds several samples.
    """
    ci = _check_ci(ci)
    names, y, s = _prepare(y_true, y_score, tasks)
    resampling = Resampling.of(y.shape[0], n_resamples, seed, groups)
    point = auroc_replicates(y, s, np.arange(y.shape[0])[None, :])[0]
    reps = auroc_replicates(y, s, resampling)
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
        mean_auroc_6=means[HEADLINE_MEAN],
        mean_auroc_5=means[COMPETITION_MEAN],
        undefined=tuple(t for t in tasks if np.isnan(per_task[t].point)),
        mean_undefined=mean_undefined,
        n_resamples=int(n_resamples),
        ci=ci,
        seed=int(seed),
        unit=resampling.unit,
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
    unit: str = "study"

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
    groups: Sequence[Any] | None = None,
) -> PairedBootstrapResult:
    """Paired bootstrap of AUROC(a) - AUROC(b), per task and for the mean over `tasks`, on shared resamples.

    Each replicate draws one set of studies and scores both models on it, so the difference keeps the models'
    correlation. The CI is the percentile interval of the replicate differences; the p-value is
    `bootstrap_p_value` (two-sided, H0: no difference). Tasks whose full-set labels have one class are left
    out of the mean; replicates where a remaining task lost a class are ignored. `groups` as in bootstrap_ci.

    The p-values: the mean's is the study's rule for a mean of tasks; for one task the study reads DeLong's
    test (`chexops.evaluate.delong`), and per-task bootstrap p-values here are kept for the record only.
    """
    ci = _check_ci(ci)
    y, a = check_matrix(y_true, score_a)
    _, b = check_matrix(y_true, score_b)
    if a.shape != b.shape:
        raise DataError(f"the two models' scores differ in shape: {a.shape} vs {b.shape}.")
    cols = resolve_columns(y.shape[1], tasks)
    sel = [cols[t] for t in tasks]
    y, a, b = y[:, sel], a[:, sel], b[:, sel]
    idx = Resampling.of(y.shape[0], n_resamples, seed, groups)
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
        unit=idx.unit,
    )
