"""AUROC, study-level aggregation and the per-task / mean-AUROC summary the study reports.

One AUROC kernel (`weighted_auroc`) serves both the point estimate and every bootstrap replicate, so the two
can never disagree about ties or degenerate cases. Pure numpy/pandas: importable without torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from chexops.data.labels import COMPETITION_TASKS, NUM_CLASSES, OBSERVATIONS, STUDY_TASKS
from chexops.errors import ConfigError, DataError, did_you_mean
from chexops.naming import COMPETITION_MEAN, HEADLINE_MEAN

# The two summary means the study reports, by flat-dict key.
MEAN_TASKS: dict[str, tuple[str, ...]] = {HEADLINE_MEAN: STUDY_TASKS, COMPETITION_MEAN: COMPETITION_TASKS}


def check_binary(
    y_true: np.ndarray, y_score: np.ndarray, what: str = "labels"
) -> tuple[np.ndarray, np.ndarray]:
    """1-D 0/1 labels and finite scores of one length, as (int8, float64) arrays; DataError otherwise."""
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise DataError(
            f"{what}: labels and scores must be 1-D and of one length, got shapes {y.shape} and {s.shape}; "
            "pass one column per call."
        )
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise DataError(
            f"{what}: labels must be 0 or 1, got {y[bad][:5].tolist()}; "
            "map uncertain (-1) and blank labels with a label policy before evaluating."
        )
    if not np.isfinite(s).all():
        raise DataError(
            f"{what}: scores contain NaN or inf at rows {np.flatnonzero(~np.isfinite(s))[:5].tolist()}."
        )
    return y.astype(np.int8), s


def _cumsum_dtype(w: np.ndarray) -> type[np.generic]:
    """int32 when integer weights cannot overflow it (half the memory traffic), else int64 or float64."""
    if not np.issubdtype(w.dtype, np.integer):
        return np.float64
    if w.size and w.dtype.itemsize <= 4 and 2 * int(w.max()) * w.shape[1] < 2**31:
        return np.int32
    return np.int64


def weighted_auroc(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of one labelled score vector under each row of `weights` (B, n), as a (B,) array.

    Row b counts sample i `weights[b, i]` times, so a bootstrap resample is its bincount and the plain
    AUROC is a row of ones. AUROC = sum over positives i and negatives j of
    w_i w_j ([s_i > s_j] + 0.5 [s_i == s_j]), divided by (sum of positive weights)(sum of negative weights):
    the Mann-Whitney statistic, which sklearn's trapezoidal ROC area equals when ties are present.
    Rows with no positive or no negative weight give NaN. O(B n) after one O(n log n) sort; no row loop.
    """
    y, s = check_binary(y_true, y_score)
    w = np.atleast_2d(np.asarray(weights))
    if w.shape[1] != y.shape[0]:
        raise DataError(f"weights have {w.shape[1]} columns for {y.shape[0]} samples; pass one per sample.")
    neg = np.flatnonzero(y == 0)
    pos = np.flatnonzero(y == 1)
    neg = neg[np.argsort(s[neg], kind="stable")]
    neg_sorted = s[neg]
    # Cumulative negative weight at each sorted negative; with a leading zero column, F[:, k] is the
    # weight of the first k negatives, so [lo, hi) brackets the negatives tied with a positive.
    cum = np.zeros((w.shape[0], neg.size + 1), dtype=_cumsum_dtype(w))
    np.cumsum(w[:, neg], axis=1, out=cum[:, 1:])
    lo = np.searchsorted(neg_sorted, s[pos], side="left")
    hi = np.searchsorted(neg_sorted, s[pos], side="right")
    wp = w[:, pos]
    # 2 * (below + 0.5 * tied) = F[lo] + F[hi]; keeping the factor 2 outside leaves integer weights exact.
    twice_num = np.einsum("bi,bi->b", wp, cum[:, lo] + cum[:, hi], dtype=np.float64)
    n_pos = wp.sum(axis=1, dtype=np.float64)
    n_neg = cum[:, -1].astype(np.float64)
    denom = 2.0 * n_pos * n_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, twice_num / denom, np.nan)


def auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Binary AUROC, equal to sklearn's roc_auc_score (ties count one half); NaN when one class is absent."""
    y = np.asarray(y_true)
    return float(weighted_auroc(y, y_score, np.ones((1, y.shape[0]), dtype=np.int64))[0])


def exam_level(probs: np.ndarray, exam_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Per-study probabilities: the maximum over each study's views.

    Returns the unique study ids in order of first appearance and an (N_studies, K) array whose row i
    belongs to ids[i]. Vectorised (hash factorisation, stable sort, np.maximum.reduceat): 200k rows take
    a fraction of a second.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2 or p.shape[0] != len(exam_ids):
        raise DataError(
            f"exam_level needs probs of shape (N, K) and N study ids, "
            f"got {p.shape} and {len(exam_ids)} ids."
        )
    if p.shape[0] == 0:
        return [], np.empty((0, p.shape[1]))
    codes, uniques = pd.factorize(np.asarray(exam_ids, dtype=object), use_na_sentinel=True)
    if (codes < 0).any():
        raise DataError(f"study ids contain missing values at rows {np.flatnonzero(codes < 0)[:5].tolist()}.")
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    # factorize numbers studies 0.. in first-appearance order, so the sorted runs come out in that order too.
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    return [str(u) for u in uniques], np.maximum.reduceat(p[order], starts, axis=0)


def resolve_columns(n_columns: int, tasks: Sequence[str]) -> dict[str, int]:
    """Column of each task the array holds: all 14 OBSERVATIONS if it has 14 columns, else `tasks` in order"""
    for t in tasks:
        if t not in OBSERVATIONS:
            raise ConfigError(
                f"unknown task {t!r}; tasks must be CheXpert observation names."
                + did_you_mean(t, OBSERVATIONS)
            )
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"tasks must not repeat, got {list(tasks)}.")
    if n_columns == NUM_CLASSES:
        return {t: i for i, t in enumerate(OBSERVATIONS)}
    if n_columns == len(tasks):
        return {t: i for i, t in enumerate(tasks)}
    raise DataError(
        f"arrays have {n_columns} columns; expected {NUM_CLASSES} (all observations in CSV order) "
        f"or {len(tasks)} (one per task in {list(tasks)})."
    )


def check_matrix(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) labels and scores of one shape; 1-D inputs become one column."""
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    s = s[:, None] if s.ndim == 1 else s
    if y.ndim != 2 or y.shape != s.shape:
        raise DataError(f"labels and scores must share an (N, K) shape, got {y.shape} and {s.shape}.")
    return y, s


def nan_aware_mean(values: Mapping[str, float], tasks: Sequence[str]) -> tuple[float, tuple[str, ...]]:
    """Mean of `values` over the tasks where it is defined, and the tasks where it is not (NaN if none)."""
    vals = np.array([values[t] for t in tasks], dtype=np.float64)
    undefined = tuple(t for t, v in zip(tasks, vals, strict=True) if np.isnan(v))
    defined = vals[~np.isnan(vals)]
    return (float(defined.mean()) if defined.size else float("nan")), undefined


def mean_name(name: str, undefined: Sequence[str]) -> str:
    """A mean's key as it may be read: 'mean_auroc_6' over all six tasks, 'mean_auroc_5of6' when one task was
    undefined (one class in the labels). A mean over fewer tasks never carries the full mean's name."""
    total = len(MEAN_TASKS[name])
    return name if not undefined else f"{name.rsplit('_', 1)[0]}_{total - len(undefined)}of{total}"


HEADLINE = HEADLINE_MEAN


def headline_key(metrics: Mapping[str, Any], prefix: str = "test", mean: str = HEADLINE) -> str:
    """The key of the study's headline mean in a flat metrics dict: `<prefix>_mean_auroc_6`, or its honest
    partial name (`<prefix>_mean_auroc_5of6`) when a study task was undefined. `mean` picks another mean."""
    full = f"{prefix}_{mean}"
    if full in metrics:
        return full
    partial = [k for k in metrics if re.fullmatch(rf"{prefix}_mean_auroc_\d+of{len(MEAN_TASKS[mean])}", k)]
    if not partial:
        raise DataError(f"no {full} (or partial mean over fewer study tasks) among the metrics "
                        f"{sorted(metrics)[:6]}...; rerun the evaluate stage.")
    return partial[0]


def headline_text(metrics: Mapping[str, Any], prefix: str = "test") -> str:
    """'0.812 [0.790, 0.833]' for the 6-task mean, or '0.801 [...] over 5 of 6 tasks' for a partial one."""
    key = headline_key(metrics, prefix)
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    ci = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    partial = re.fullmatch(r".*_(\d+)of6", key)
    return f"{metrics[key]:.3f}{ci}" + (f" over {partial.group(1)} of 6 tasks" if partial else "")


def metric_key(task: str) -> str:
    """MLflow-friendly key for one task's AUROC: spaces become underscores."""
    return "auroc_" + task.replace(" ", "_")


@dataclass(frozen=True)
class EvalResult:
    """Per-task AUROC and the study's summary means.

    `auroc` holds NaN for a task whose labels have one class; such tasks are listed in `undefined` and left
    out of the means. A mean is None when the arrays did not hold all of its tasks, NaN when none was defined.
    """

    auroc: Mapping[str, float]
    undefined: tuple[str, ...]
    mean_auroc_6: float | None
    mean_auroc_5: float | None
    mean_undefined: Mapping[str, tuple[str, ...]]

    def to_flat_dict(self, prefix: str = "") -> dict[str, float]:
        """Metric key -> value, e.g. {'auroc_Edema': 0.91, 'mean_auroc_6': 0.87}; NaN = undefined."""
        head = f"{prefix}_" if prefix else ""
        out = {head + metric_key(t): float(v) for t, v in self.auroc.items()}
        for name in MEAN_TASKS:
            value = getattr(self, name)
            if value is not None:
                out[head + mean_name(name, self.mean_undefined[name])] = float(value)
        return out


def auroc_metrics(y_true: np.ndarray, probs: np.ndarray, tasks: Sequence[str] = OBSERVATIONS) -> EvalResult:
    """Per-task AUROC for `tasks`, and mean AUROC over the 6 study and 5 competition tasks.

    `y_true` and `probs` are (N, 14) in OBSERVATIONS order, or (N, len(tasks)) in `tasks` order; labels 0/1.
    """
    y, p = check_matrix(y_true, probs)
    cols = resolve_columns(y.shape[1], tasks)
    cache: dict[str, float] = {}

    def score(task: str) -> float:
        if task not in cache:
            c = cols[task]
            cache[task] = auroc(y[:, c], p[:, c])
        return cache[task]

    per_task = {t: score(t) for t in tasks}
    means: dict[str, float | None] = {}
    mean_undefined: dict[str, tuple[str, ...]] = {}
    for name, group in MEAN_TASKS.items():
        if all(t in cols for t in group):
            means[name], mean_undefined[name] = nan_aware_mean({t: score(t) for t in group}, group)
        else:
            means[name] = None
    return EvalResult(
        auroc=per_task,
        undefined=tuple(t for t, v in per_task.items() if np.isnan(v)),
        mean_auroc_6=means[HEADLINE_MEAN],
        mean_auroc_5=means[COMPETITION_MEAN],
        mean_undefined=mean_undefined,
    )
