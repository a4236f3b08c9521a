"""Vectorised bootstrap (CIs, paired comparison) and DeLong's test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

import chexops.evaluate.bootstrap as bs
from chexops.data.labels import COMPETITION_TASKS, STUDY_TASKS
from chexops.errors import ConfigError, DataError
from chexops.evaluate.bootstrap import (
    auroc_replicates,
    auroc_resamples,
    bootstrap_ci,
    bootstrap_indices,
    bootstrap_p_value,
    paired_bootstrap,
)
from chexops.evaluate.delong import delong_ci, delong_covariance, delong_test, structural_components


def _case(n: int, k: int, seed: int, signal: float = 0.6, prevalence: float = 0.3, decimals: int = 2):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < prevalence).astype(int)
    s = np.round(rng.random((n, k)) + signal * y, decimals)  # rounded: ties within and across classes
    return y, s


def _sklearn_or_nan(y: np.ndarray, s: np.ndarray) -> float:
    return roc_auc_score(y, s) if 0 < y.sum() < y.size else float("nan")


# --------------------------------------------------------------------------- resampling


def test_bootstrap_indices_are_seeded_and_in_range():
    a = bootstrap_indices(50, 20, seed=3)
    assert a.shape == (20, 50) and a.min() >= 0 and a.max() < 50
    np.testing.assert_array_equal(a, bootstrap_indices(50, 20, seed=3))
    np.testing.assert_array_equal(a, np.random.default_rng(3).integers(0, 50, size=(20, 50)))
    assert not np.array_equal(a, bootstrap_indices(50, 20, seed=4))


def test_every_replicate_equals_sklearn_on_the_same_indices():
    # 12% prevalence on 40 rows: some resamples draw no positive, which must come back as NaN.
    y, s = _case(40, 3, seed=1, prevalence=0.12, decimals=1)
    idx = bootstrap_indices(40, 200, seed=0)
    got = auroc_replicates(y, s, idx)
    ref = np.array([[_sklearn_or_nan(y[i, k], s[i, k]) for k in range(3)] for i in idx])
    assert got.shape == (200, 3)
    assert np.isnan(ref).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(auroc_resamples(y[:, 1], s[:, 1], idx), got[:, 1])


def test_blocks_of_resamples_give_the_same_replicates(monkeypatch):
    y, s = _case(300, 2, seed=2)
    idx = bootstrap_indices(300, 50, seed=1)
    whole = auroc_replicates(y, s, idx)
    monkeypatch.setattr(bs, "_BLOCK_ENTRIES", 300 * 7)  # 7 resamples per block: 8 blocks, the last short
    np.testing.assert_array_equal(auroc_replicates(y, s, idx), whole)


def test_out_of_range_indices_are_refused():
    y, s = _case(10, 1, seed=0)
    with pytest.raises(DataError, match="lie in"):
        auroc_replicates(y, s, np.full((2, 10), 10))


# --------------------------------------------------------------------------- percentile CIs


def test_ci_is_the_percentile_of_an_sklearn_loop_on_the_same_indices():
    y, s = _case(150, 6, seed=3)
    res = bootstrap_ci(y, s, n_resamples=100, seed=7, tasks=STUDY_TASKS)
    idx = bootstrap_indices(150, 100, seed=7)
    loop = np.array([[roc_auc_score(y[i, k], s[i, k]) for k in range(6)] for i in idx])
    for k, task in enumerate(STUDY_TASKS):
        est = res.per_task[task]
        assert est.point == pytest.approx(roc_auc_score(y[:, k], s[:, k]), abs=1e-12)
        assert (est.ci_low, est.ci_high) == pytest.approx(
            tuple(np.percentile(loop[:, k], [2.5, 97.5])), abs=1e-12
        )
    # The means average each resample's task AUROCs, so their interval is narrower than a per-task one.
    six = np.percentile(loop.mean(axis=1), [2.5, 97.5])
    five = np.percentile(loop[:, 1:].mean(axis=1), [2.5, 97.5])  # columns 1..5 are the competition tasks
    assert (res.mean_auroc_6.ci_low, res.mean_auroc_6.ci_high) == pytest.approx(tuple(six), abs=1e-12)
    assert (res.mean_auroc_5.ci_low, res.mean_auroc_5.ci_high) == pytest.approx(tuple(five), abs=1e-12)
    assert res.mean_auroc_6.n_valid == 100


def _rank_auroc(y: np.ndarray, s: np.ndarray) -> float:
    # An independent Mann-Whitney AUROC (about 50x cheaper than roc_auc_score), so scipy's loop stays fast.
    n_pos = int(y.sum())
    return (stats.rankdata(s)[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (y.size - n_pos))


def test_ci_agrees_with_scipy_bootstrap_within_resampling_noise():
    y, s = _case(500, 1, seed=4, decimals=3)
    y, s = y[:, 0], s[:, 0]
    assert _rank_auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    res = bootstrap_ci(y, s, n_resamples=1000, seed=0, tasks=("Edema",)).per_task["Edema"]
    ref = stats.bootstrap(
        (y, s),
        _rank_auroc,
        paired=True,
        vectorized=False,
        method="percentile",
        n_resamples=1000,
        confidence_level=0.95,
        rng=np.random.default_rng(123),
    ).confidence_interval
    assert abs(res.ci_low - ref.low) < 0.01
    assert abs(res.ci_high - ref.high) < 0.01
    assert 0.02 < res.ci_high - res.ci_low < 0.2  # a real interval, not a degenerate one


def test_ci_level_changes_the_interval():
    y, s = _case(200, 1, seed=5)
    wide = bootstrap_ci(y, s, n_resamples=400, ci=0.95, tasks=("Edema",)).per_task["Edema"]
    narrow = bootstrap_ci(y, s, n_resamples=400, ci=0.5, tasks=("Edema",)).per_task["Edema"]
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high


def test_undefined_task_is_reported_and_left_out_of_the_mean():
    y, s = _case(200, 6, seed=6)
    y[:, 4] = 0  # Edema (column 4 in STUDY_TASKS order) has no positive
    res = bootstrap_ci(y, s, n_resamples=200, seed=0)
    assert res.undefined == ("Edema",)
    assert res.mean_undefined == {"mean_auroc_6": ("Edema",), "mean_auroc_5": ("Edema",)}
    assert math.isnan(res.per_task["Edema"].point) and res.per_task["Edema"].n_valid == 0
    defined = [k for k in range(6) if k != 4]
    expected = np.mean([roc_auc_score(y[:, k], s[:, k]) for k in defined])
    assert res.mean_auroc_6.point == pytest.approx(expected, abs=1e-12)
    assert res.mean_auroc_6.n_valid == 200 and not math.isnan(res.mean_auroc_6.ci_low)


def test_bootstrap_flat_dict_keys():
    y, s = _case(120, 14, seed=7)
    res = bootstrap_ci(y, s, n_resamples=50, tasks=("Edema", "Pleural Effusion"))
    flat = res.to_flat_dict()
    expected = {
        f"test_{k}{suffix}"
        for k in ("auroc_Edema", "auroc_Pleural_Effusion", "mean_auroc_6", "mean_auroc_5")
        for suffix in ("", "_ci_low", "_ci_high")
    }
    assert set(flat) == expected
    assert flat["test_auroc_Edema_ci_low"] == res.per_task["Edema"].ci_low
    assert flat["test_mean_auroc_5"] == res.mean_auroc_5.point


@pytest.mark.parametrize("kwargs, match", [({"ci": 1.5}, "ci must"), ({"n_resamples": 0}, "n_resamples")])
def test_bad_settings_raise_config_error(kwargs, match):
    y, s = _case(30, 6, seed=0)
    with pytest.raises(ConfigError, match=match):
        bootstrap_ci(y, s, **kwargs)


# --------------------------------------------------------------------------- paired comparison


def test_bootstrap_p_value_definition():
    assert bootstrap_p_value(np.array([-1.0, 1.0, 2.0, 3.0])) == 0.5  # 2 * min(1/4, 3/4)
    assert bootstrap_p_value(np.array([1.0, 2.0, 3.0, np.nan])) == 0.25  # floor 1/(3+1); NaN ignored
    assert bootstrap_p_value(np.zeros(10)) == 1.0


def test_identical_models_have_zero_delta_and_p_one():
    y, s = _case(200, 6, seed=8)
    res = paired_bootstrap(y, s, s.copy(), n_resamples=300)
    for d in (res.mean, *res.per_task.values()):
        assert (d.delta, d.ci_low, d.ci_high, d.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_a_clearly_better_model_is_significant():
    y, good = _case(300, 6, seed=9, signal=0.9)
    rng = np.random.default_rng(10)
    worse = good + rng.normal(0, 0.5, good.shape)  # same model plus noise: lower AUROC on every task
    res = paired_bootstrap(y, good, worse, n_resamples=1000, seed=1)
    assert res.mean.delta > 0.05
    assert 0 < res.mean.ci_low < res.mean.delta < res.mean.ci_high
    assert res.mean.p_value < 0.05
    expected = np.mean(
        [roc_auc_score(y[:, k], good[:, k]) - roc_auc_score(y[:, k], worse[:, k]) for k in range(6)]
    )
    assert res.mean.delta == pytest.approx(expected, abs=1e-12)
    flipped = paired_bootstrap(y, worse, good, n_resamples=1000, seed=1)
    assert flipped.mean.delta == pytest.approx(-res.mean.delta, abs=1e-15)
    assert flipped.mean.p_value == res.mean.p_value


def test_paired_flat_dict_keys():
    y, s = _case(100, 14, seed=11)
    res = paired_bootstrap(y, s, s[::-1].copy(), n_resamples=20, tasks=COMPETITION_TASKS)
    flat = res.to_flat_dict()
    assert {"delta_mean_auroc", "delta_mean_auroc_p", "delta_auroc_Pleural_Effusion_ci_high"} <= set(flat)
    assert len(flat) == 4 * (1 + len(COMPETITION_TASKS))


# --------------------------------------------------------------------------- DeLong


def test_delong_hand_case():
    # Positives P (y=1), negatives N (y=0).
    # Model a: P = .8 .5 .3, N = .6 .3 .2; model b: P = .9 .4 .1, N = .5 .2 .3.
    # V10 = share of negatives below each positive (tie = 1/2): a: 3/3, 2/3, (1 + 1/2)/3 = 1, 2/3, 1/2;
    #                                                          b: 1, 2/3, 0.
    # V01 = share of positives above each negative:            a: 1/3, (2 + 1/2)/3, 3/3 = 1/3, 5/6, 1;
    #                                                          b: 1/3, 2/3, 2/3.
    # AUC a = mean V10 = 13/18, AUC b = 5/9. In 18ths, deviations from the AUC:
    #   V10: a (5, -1, -4), b (8, 2, -10); V01: a (-7, 2, 5), b (-4, 2, 2). Sample covariances (ddof=1, /324):
    #   S10 aa = 42/2 = 21, bb = 168/2 = 84, ab = 78/2 = 39;
    #   S01 aa = 78/2 = 39, bb = 24/2 = 12, ab = 42/2 = 21.
    # S = S10/3 + S01/3: var a = 60/972 = 5/81, var b = 96/972 = 8/81, cov = 60/972 = 5/81.
    # var(a - b) = 5/81 + 8/81 - 10/81 = 1/27; delta = 1/6; z = (1/6) * sqrt(27) = sqrt(3)/2.
    y = np.array([1, 1, 1, 0, 0, 0])
    a = np.array([0.8, 0.5, 0.3, 0.6, 0.3, 0.2])
    b = np.array([0.9, 0.4, 0.1, 0.5, 0.2, 0.3])
    aucs, v10, v01 = structural_components(y, np.vstack([a, b]))
    np.testing.assert_allclose(v10, [[1, 2 / 3, 1 / 2], [1, 2 / 3, 0]], atol=1e-15)
    np.testing.assert_allclose(v01, [[1 / 3, 5 / 6, 1], [1 / 3, 2 / 3, 2 / 3]], atol=1e-15)
    _, cov = delong_covariance(y, np.vstack([a, b]))
    np.testing.assert_allclose(cov, [[5 / 81, 5 / 81], [5 / 81, 8 / 81]], atol=1e-15)
    res = delong_test(y, a, b)
    assert (res.auc_a, res.auc_b, res.delta) == pytest.approx((13 / 18, 5 / 9, 1 / 6), abs=1e-15)
    assert res.z == pytest.approx(math.sqrt(3) / 2, abs=1e-12)
    assert res.p_value == pytest.approx(2 * stats.norm.sf(math.sqrt(3) / 2), abs=1e-12)
    assert delong_ci(y, a).variance == pytest.approx(5 / 81, abs=1e-15)


def test_delong_identical_scores_give_p_one():
    y, s = _case(100, 1, seed=12)
    res = delong_test(y[:, 0], s[:, 0], s[:, 0].copy())
    assert (res.delta, res.z, res.p_value, res.ci_low, res.ci_high) == (0.0, 0.0, 1.0, 0.0, 0.0)


def test_delong_variance_is_close_to_the_bootstrap_variance():
    rng = np.random.default_rng(13)
    n = 600
    y = (rng.random(n) < 0.3).astype(int)
    a = rng.normal(size=n) + 1.0 * y
    b = 0.7 * a + rng.normal(size=n) * 0.7 + 0.3 * y  # correlated with a
    reps = auroc_replicates(np.c_[y, y], np.c_[a, b], bootstrap_indices(n, 4000, seed=2))
    single = delong_ci(y, a)
    paired = delong_test(y, a, b)
    assert single.variance == pytest.approx(np.var(reps[:, 0], ddof=1), rel=0.12)
    assert paired.se**2 == pytest.approx(np.var(reps[:, 0] - reps[:, 1], ddof=1), rel=0.12)


def test_delong_needs_two_of_each_class():
    with pytest.raises(DataError, match="at least 2"):
        delong_test(np.array([1, 0, 0, 0]), np.arange(4.0), np.arange(4.0))


# pROC's aSAH data set (Turck et al. 2010, Intensive Care Med 36:107-115; 113 patients), shipped with
# the R package pROC; y = outcome == "Poor". Transcribed from a public copy; the transcription reproduces,
# to 1e-15, pROC's own expected DeLong placements for s100b and wfns
# (xrobin/pROC tests/testthat/helper-deLongPlacementsCpp-expected.R).
# wfns is a 5-level ordinal score, so it exercises heavy ties.
_ASAH_Y = [
    0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 1, 1, 1,
    0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0,
]  # fmt: skip
_ASAH_S100B = [
    0.13, 0.14, 0.1, 0.04, 0.13, 0.1, 0.47, 0.16, 0.18, 0.1, 0.12, 0.1, 0.44, 0.71, 0.04, 0.08, 0.49,
    0.04, 0.07, 0.33, 0.09, 0.09, 0.07, 0.11, 0.07, 0.17, 0.07, 0.11, 0.13, 0.19, 0.05, 0.16, 0.41,
    0.14, 0.34, 0.35, 0.48, 0.09, 0.96, 0.25, 0.5, 0.46, 0.16, 0.07, 0.43, 0.45, 0.11, 0.08, 0.09, 0.86,
    0.52, 0.08, 0.06, 0.13, 2.07, 0.1, 0.14, 0.15, 0.07, 0.06, 0.77, 0.05, 0.09, 0.3, 0.03, 0.09, 0.04,
    0.23, 0.7, 0.09, 0.27, 0.71, 0.08, 0.26, 0.08, 0.16, 0.09, 0.13, 0.1, 0.08, 0.11, 0.33, 0.11, 0.28,
    0.07, 0.1, 0.32, 0.22, 0.07, 0.05, 0.24, 0.38, 0.1, 0.15, 0.08, 0.14, 0.1, 0.07, 0.04, 0.19, 0.56,
    0.14, 0.58, 0.32, 0.82, 0.74, 0.15, 0.47, 0.17, 0.44, 0.15, 0.5, 0.48,
]  # fmt: skip
_ASAH_WFNS = [
    1, 1, 1, 1, 3, 2, 5, 4, 1, 2, 5, 2, 5, 5, 1, 2, 5, 2, 2, 5, 2, 1, 1, 1, 1, 2, 1, 2, 1, 1, 3, 4, 2,
    1, 4, 5, 4, 1, 4, 2, 5, 5, 1, 1, 2, 4, 1, 1, 2, 5, 5, 2, 1, 2, 5, 1, 2, 2, 2, 1, 5, 1, 1, 2, 5, 2,
    1, 4, 5, 2, 4, 4, 1, 4, 1, 2, 1, 4, 2, 1, 2, 3, 2, 4, 2, 1, 4, 5, 1, 1, 5, 4, 2, 2, 1, 1, 1, 3, 1,
    2, 5, 2, 2, 5, 5, 5, 2, 4, 4, 5, 1, 1, 1,
]  # fmt: skip
_ASAH_NDKA = [
    3.01, 8.54, 8.09, 10.42, 17.4, 12.75, 6.0, 13.2, 15.54, 6.01, 15.96, 17.86, 5.18, 8.9, 13.41, 20.75,
    11.6, 16.11, 32.37, 54.82, 32.41, 49.94, 40.34, 9.47, 6.29, 12.53, 6.54, 6.3, 80.3, 12.8, 9.8, 9.81,
    9.85, 18.21, 5.03, 14.04, 21.93, 8.02, 7.42, 8.38, 6.59, 9.63, 13.12, 7.96, 14.34, 41.43, 7.63,
    7.06, 12.59, 13.56, 3.87, 9.44, 7.66, 12.98, 419.19, 27.19, 22.27, 9.95, 21.22, 11.73, 10.4, 58.83,
    6.39, 11.09, 12.22, 13.67, 17.21, 22.63, 12.9, 9.7, 21.57, 8.23, 72.57, 15.54, 10.51, 10.6, 14.57,
    5.19, 9.63, 4.61, 21.48, 17.3, 12.71, 9.44, 11.07, 19.46, 10.83, 5.37, 11.97, 7.75, 9.83, 10.55,
    28.49, 8.53, 12.57, 12.9, 46.83, 11.68, 12.67, 9.01, 9.57, 34.06, 11.72, 14.26, 47.61, 11.67, 24.58,
    10.33, 13.87, 15.89, 22.43, 6.79, 13.45,
]  # fmt: skip

# Expected values from pROC's own test suite (xrobin/pROC tests/testthat/test-roc.test.R, test-ci.auc.R and
# helper-deLongPlacementsCpp-expected.R): roc.test(r.wfns, r.s100b) etc. with the default DeLong method.
_PROC_ROC_TEST = [  # (a, b, Z, p, conf.int low, conf.int high)
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
    ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
    ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
]
_PROC_AUC = {"s100b": 0.731368563685637, "wfns": 0.823678861788618, "ndka": 0.611957994579946}
_PROC_CI_NDKA = (0.501244999271703, 0.722670989888189)


@pytest.mark.parametrize("a, b, z, p, low, high", _PROC_ROC_TEST)
def test_delong_reproduces_proc_roc_test_on_asah(a, b, z, p, low, high):
    y = np.array(_ASAH_Y)
    scores = {"s100b": _ASAH_S100B, "wfns": _ASAH_WFNS, "ndka": _ASAH_NDKA}
    assert (y.size, int(y.sum())) == (113, 41)
    res = delong_test(y, scores[a], scores[b])
    assert (res.auc_a, res.auc_b) == pytest.approx((_PROC_AUC[a], _PROC_AUC[b]), abs=1e-12)
    assert res.z == pytest.approx(z, abs=1e-10)
    assert res.p_value == pytest.approx(p, rel=1e-9)
    assert (res.ci_low, res.ci_high) == pytest.approx((low, high), abs=1e-10)


def test_delong_ci_reproduces_proc_ci_auc_on_asah():
    res = delong_ci(np.array(_ASAH_Y), _ASAH_NDKA)
    assert res.auc == pytest.approx(_PROC_AUC["ndka"], abs=1e-12)
    assert (res.ci_low, res.ci_high) == pytest.approx(_PROC_CI_NDKA, abs=1e-10)
