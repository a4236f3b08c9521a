"""AUROC, study-level aggregation and the auroc_metrics() summary."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from chexops.data.labels import COMPETITION_TASKS, OBSERVATIONS, STUDY_TASKS, task_index
from chexops.errors import ConfigError, DataError
from chexops.evaluate.metrics import auroc, auroc_metrics, exam_level, weighted_auroc


def _tied_case(rng: np.random.Generator, n: int, prevalence: float, decimals: int):
    y = (rng.random(n) < prevalence).astype(int)
    s = np.round(rng.random(n) + 0.5 * y, decimals)  # few decimals -> many ties, across classes too
    return y, s


@pytest.mark.parametrize("decimals", [0, 1, 2, 6])
def test_auroc_equals_sklearn_with_ties(decimals):
    rng = np.random.default_rng(decimals)
    checked = 0
    for _ in range(60):
        n = int(rng.integers(2, 400))
        y, s = _tied_case(rng, n, float(rng.uniform(0.05, 0.95)), decimals)
        if 0 < y.sum() < n:
            assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
            checked += 1
    assert checked > 40


def test_auroc_accepts_float_and_bool_labels():
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.8])
    expected = roc_auc_score(y, s)
    assert auroc(y, s) == pytest.approx(expected, abs=1e-15)
    assert auroc(y.astype(bool), s) == pytest.approx(expected, abs=1e-15)


def test_hand_computed_auroc_with_a_tie():
    # positives 0.9, 0.5; negatives 0.5, 0.1.
    # Pairs: (0.9>0.5)=1, (0.9>0.1)=1, (0.5=0.5)=0.5, (0.5>0.1)=1 -> 3.5/4.
    assert auroc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == 0.875


@pytest.mark.parametrize("y", [[0, 0, 0], [1, 1, 1, 1]])
def test_single_class_auroc_is_nan_without_warning(y, recwarn):
    assert math.isnan(auroc(y, np.linspace(0, 1, len(y))))
    assert len(recwarn) == 0


@pytest.mark.parametrize(
    "y, s, match",
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], "0 or 1"),
        ([0, 1, -1], [0.1, 0.2, 0.3], "label policy"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "NaN"),
        ([0, 1], [0.1, 0.2, 0.3], "one length"),
    ],
)
def test_auroc_rejects_invalid_input(y, s, match):
    with pytest.raises(DataError, match=match):
        auroc(np.array(y), np.array(s))


def test_integer_weights_equal_repeating_samples():
    rng = np.random.default_rng(3)
    y, s = _tied_case(rng, 80, 0.3, 1)
    w = rng.integers(0, 4, size=(5, 80))
    got = weighted_auroc(y, s, w)
    for b in range(5):
        expected = roc_auc_score(np.repeat(y, w[b]), np.repeat(s, w[b]))
        assert got[b] == pytest.approx(expected, abs=1e-12)


def test_float_weights_equal_sklearn_sample_weight():
    rng = np.random.default_rng(4)
    y, s = _tied_case(rng, 120, 0.4, 1)
    w = rng.random(120)
    got = weighted_auroc(y, s, w[None, :])[0]
    assert got == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)


def test_study_level_takes_the_max_over_views_in_first_appearance_order():
    ids = ["p2/s1", "p1/s1", "p2/s1", "p3/s1", "p1/s1"]
    probs = np.array([[0.1, 0.9], [0.5, 0.2], [0.7, 0.3], [0.4, 0.4], [0.2, 0.6]])
    got_ids, got = exam_level(probs, ids)
    assert got_ids == ["p2/s1", "p1/s1", "p3/s1"]
    np.testing.assert_array_equal(got, [[0.7, 0.9], [0.5, 0.6], [0.4, 0.4]])


def test_study_level_matches_pandas_groupby_on_a_large_case():
    rng = np.random.default_rng(5)
    ids = [f"patient{k:05d}/study1" for k in rng.integers(0, 20_000, 60_000)]
    probs = rng.random((60_000, 14))
    got_ids, got = exam_level(probs, ids)
    ref = pd.DataFrame(probs).groupby(pd.Series(ids), sort=False).max()
    assert got_ids == list(ref.index)
    np.testing.assert_array_equal(got, ref.to_numpy())


def test_study_level_rejects_mismatched_ids():
    with pytest.raises(DataError, match="study ids"):
        exam_level(np.zeros((3, 2)), ["a", "b"])


def _full_case(n: int = 300, seed: int = 6):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 14)) < 0.3).astype(int)
    p = np.clip(rng.random((n, 14)) * 0.8 + 0.3 * y, 0, 1)
    return y, p


def test_evaluate_per_task_and_means_match_sklearn():
    y, p = _full_case()
    res = auroc_metrics(y, p)
    for t, j in zip(OBSERVATIONS, task_index(OBSERVATIONS), strict=True):
        assert res.auroc[t] == pytest.approx(roc_auc_score(y[:, j], p[:, j]), abs=1e-12)
    six = np.mean([roc_auc_score(y[:, j], p[:, j]) for j in task_index(STUDY_TASKS)])
    five = np.mean([roc_auc_score(y[:, j], p[:, j]) for j in task_index(COMPETITION_TASKS)])
    assert res.mean_auroc_6 == pytest.approx(six, abs=1e-12)
    assert res.mean_auroc_5 == pytest.approx(five, abs=1e-12)
    assert res.undefined == ()


def test_evaluate_reports_single_class_tasks_as_undefined_and_leaves_them_out_of_the_means():
    y, p = _full_case()
    edema = OBSERVATIONS.index("Edema")
    y[:, edema] = 0
    res = auroc_metrics(y, p)
    assert math.isnan(res.auroc["Edema"])
    assert res.undefined == ("Edema",)
    assert res.mean_undefined == {"mean_auroc_6": ("Edema",), "mean_auroc_5": ("Edema",)}
    defined = [t for t in STUDY_TASKS if t != "Edema"]
    expected = np.mean(
        [roc_auc_score(y[:, OBSERVATIONS.index(t)], p[:, OBSERVATIONS.index(t)]) for t in defined]
    )
    assert res.mean_auroc_6 == pytest.approx(expected, abs=1e-12)


def test_evaluate_mean_is_nan_when_every_task_is_undefined():
    y, p = _full_case()
    y[:, task_index(COMPETITION_TASKS)] = 1
    res = auroc_metrics(y, p)
    assert math.isnan(res.mean_auroc_5)
    assert not math.isnan(res.mean_auroc_6)  # No Finding is still defined
    assert set(res.undefined) == set(COMPETITION_TASKS)


def test_evaluate_flat_dict_keys_are_mlflow_friendly():
    y, p = _full_case()
    flat = auroc_metrics(y, p).to_flat_dict()
    assert flat["auroc_Pleural_Effusion"] == auroc_metrics(y, p).auroc["Pleural Effusion"]
    assert {"auroc_No_Finding", "mean_auroc_6", "mean_auroc_5"} <= set(flat)
    assert len(flat) == 16 and not any(" " in k for k in flat)
    assert set(auroc_metrics(y, p).to_flat_dict("valid")) == {f"valid_{k}" for k in flat}


def test_evaluate_accepts_one_column_per_task():
    y, p = _full_case()
    cols = task_index(STUDY_TASKS)
    narrow = auroc_metrics(y[:, cols], p[:, cols], tasks=STUDY_TASKS)
    wide = auroc_metrics(y, p, tasks=STUDY_TASKS)
    assert narrow.auroc == wide.auroc
    assert narrow.mean_auroc_6 == wide.mean_auroc_6
    # Two columns cannot hold the six study tasks, so that mean is absent rather than wrong.
    two = auroc_metrics(y[:, [2, 5]], p[:, [2, 5]], tasks=("Cardiomegaly", "Edema"))
    assert two.mean_auroc_6 is None and "mean_auroc_6" not in two.to_flat_dict()


def test_evaluate_rejects_unknown_task_and_wrong_width():
    y, p = _full_case()
    with pytest.raises(ConfigError, match="Did you mean: Edema"):
        auroc_metrics(y, p, tasks=("Edemma",))
    with pytest.raises(DataError, match="columns"):
        auroc_metrics(y[:, :3], p[:, :3], tasks=STUDY_TASKS)
