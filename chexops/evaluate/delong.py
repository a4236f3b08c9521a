"""DeLong's test for correlated AUROCs, in the O(n log n) midrank form of Sun & Xu (2014).

DeLong, DeLong & Clarke-Pearson (1988) write each AUROC as the mean of per-case "structural components":
V10_i (positive i: share of negatives scored below it, ties one half) and V01_j (negative j: share of
positives scored above it). Their sample covariances give the covariance matrix of the AUROCs:
S = S10 / m + S01 / n, with m positives and n negatives. Sun & Xu obtain the components from midranks,
V10_i = (Tz_i - Tx_i) / n and V01_j = 1 - (Tz_j - Ty_j) / m, where Tz ranks within all samples and Tx / Ty
within the positives / negatives, replacing the O(mn) pairwise comparison by sorting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata

from chexops.errors import ConfigError, DataError
from chexops.evaluate.metrics import check_binary


def structural_components(
    y_true: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUROCs (k,), V10 (k, m) over positives and V01 (k, n) over negatives, for k score rows of shape (k, N).

    Positives and negatives keep their order in the input, so column i of V10 is the i-th positive sample.
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y = check_binary(y_true, s[0], "DeLong")[0]
    for row in s[1:]:
        check_binary(y, row, "DeLong")
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    if m < 2 or n < 2:
        raise DataError(
            f"DeLong's variance needs at least 2 positives and 2 negatives, got {m} and {n}; "
            "this task cannot be tested on this set."
        )
    tz = rankdata(s, axis=1)  # midranks: ties share the mean rank, the one-half rule of the AUROC
    tx = rankdata(s[:, pos], axis=1)
    ty = rankdata(s[:, neg], axis=1)
    v10 = (tz[:, pos] - tx) / n
    v01 = 1.0 - (tz[:, neg] - ty) / m
    return v10.mean(axis=1), v10, v01


def delong_covariance(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs (k,) and their DeLong covariance matrix (k, k) for k score rows on the same samples."""
    aucs, v10, v01 = structural_components(y_true, scores)
    s10 = np.atleast_2d(np.cov(v10))  # ddof=1, as in DeLong et al.
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / v10.shape[1] + s01 / v01.shape[1]


def _z_level(ci: float) -> float:
    if not 0.0 < float(ci) < 1.0:
        raise ConfigError(f"ci must lie strictly between 0 and 1, got {ci}; the usual value is 0.95.")
    return float(norm.ppf(0.5 + float(ci) / 2.0))


@dataclass(frozen=True)
class DelongCI:
    """One AUROC with its DeLong variance and normal-approximation interval (clipped to [0, 1])."""

    auc: float
    variance: float
    se: float
    ci_low: float
    ci_high: float


def delong_ci(y_true: np.ndarray, score: np.ndarray, ci: float = 0.95) -> DelongCI:
    """AUROC of `score`, its DeLong variance, and auc -/+ z_(1+ci)/2 * se clipped to [0, 1] (as pROC does)."""
    z = _z_level(ci)
    aucs, cov = delong_covariance(y_true, np.asarray(score, dtype=np.float64)[None, :])
    auc, var = float(aucs[0]), float(cov[0, 0])
    se = float(np.sqrt(var))
    return DelongCI(auc, var, se, max(0.0, auc - z * se), min(1.0, auc + z * se))


@dataclass(frozen=True)
class DelongTest:
    """DeLong's paired test of AUROC(a) = AUROC(b); delta = auc_a - auc_b, CI is for delta."""

    auc_a: float
    auc_b: float
    delta: float
    se: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float


def delong_test(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, ci: float = 0.95) -> DelongTest:
    """Two-sided DeLong test for two models scored on the same samples.

    z = (auc_a - auc_b) / sqrt(var_a + var_b - 2 cov_ab), p = 2 (1 - Phi(|z|)),
    CI = delta -/+ z_(1+ci)/2 * se.
    When the difference has zero variance (e.g. identical scores) z is 0 and p is 1 if delta is 0, else
    z is +/-inf and p is 0: the data then admit no sampling variation in the difference at all.
    """
    zq = _z_level(ci)
    a = np.asarray(score_a, dtype=np.float64)
    b = np.asarray(score_b, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"the two models' scores differ in shape: {a.shape} vs {b.shape}.")
    aucs, cov = delong_covariance(y_true, np.vstack([a, b]))
    delta = float(aucs[0] - aucs[1])
    # Rounding can leave a tiny negative variance when a and b are identical; it is zero then.
    var = max(0.0, float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]))
    se = float(np.sqrt(var))
    if se > 0.0:
        z = delta / se
    else:
        z = 0.0 if delta == 0.0 else float(np.copysign(np.inf, delta))
    p = float(2.0 * norm.sf(abs(z)))
    return DelongTest(
        float(aucs[0]), float(aucs[1]), delta, se, z, min(1.0, p), delta - zq * se, delta + zq * se
    )
