"""chexops.analysis.tables on hand-made studies whose answers are known by construction.

Every run's probabilities are sigmoid(sep * (2y - 1) + noise) with one noise matrix shared by all runs, so a
run's AUROC on each task is non-decreasing in `sep`; the fixture checks that the designed order really holds
before any test relies on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.analysis import (
    FAMILIES,
    N_STUDIES,
    RHO_IMAGENET,
    SEP,
    B,
    truth_and_noise,
    write_full_grid,
    write_run,
    write_truncations,
)
from scipy import stats

from chexops.analysis.tables import (
    MEASURED,
    load_runs,
    main_table,
    pretraining_boost,
    spearman,
    truncation_table,
)
from chexops.errors import DataError


@pytest.fixture
def study_dirs(tmp_path: Path) -> list[Path]:
    return write_full_grid(tmp_path) + write_truncations(tmp_path)


@pytest.fixture
def study(study_dirs: list[Path]):
    s = load_runs(study_dirs, name="toy")
    full = s.full.set_index("family")
    for init, order in (("random", ["alpha", "beta", "gamma", "delta"]), ("imagenet", ["beta", "alpha", "delta",
                                                                                         "gamma"])):
        auc = full[full["initializer"] == init].loc[order, "auroc_6"].to_numpy()
        assert np.all(np.diff(auc) > 0), f"fixture design broken: {init} AUROCs {auc} are not in the designed order"
    return s


def test_load_runs_reads_every_field_and_aligns_shuffled_predictions(tmp_path: Path) -> None:
    a = write_run(tmp_path, "alpha", "random", 0.2)
    b = write_run(tmp_path, "beta", "random", 0.3, order=np.random.default_rng(1).permutation(N_STUDIES))
    s = load_runs([a, b])
    y, noise = truth_and_noise()
    np.testing.assert_array_equal(s.truth, y)
    np.testing.assert_allclose(s.probs["beta/random/full"], 1 / (1 + np.exp(-(0.3 * (2 * y - 1) + noise))))
    assert s.studies[:2] == ("study0000", "study0001")
    row = s.runs.loc["beta/random/full"]
    assert (row["family"], row["group"], row["parameters"], row["imagenet_top1"]) == ("beta", "G1", 2_000_000, 72.0)
    assert s.notes == ()


def test_different_test_studies_is_an_error_naming_both_runs(tmp_path: Path) -> None:
    a = write_run(tmp_path, "alpha", "random", 0.2)
    other = [f"study{i:04d}" for i in range(N_STUDIES - 1)] + ["elsewhere"]
    b = write_run(tmp_path, "beta", "random", 0.3, studies=other)
    with pytest.raises(DataError, match=r"alpha/random/full.*beta/random/full.*different studies.*elsewhere"):
        load_runs([a, b])


def test_different_truth_is_an_error(tmp_path: Path) -> None:
    a = write_run(tmp_path, "alpha", "random", 0.2)
    b = write_run(tmp_path, "beta", "random", 0.3, seed=1)
    with pytest.raises(DataError, match="disagree on the test labels"):
        load_runs([a, b])


def test_missing_prediction_column_and_empty_input_are_errors(tmp_path: Path) -> None:
    a = write_run(tmp_path, "alpha", "random", 0.2)
    pd.read_csv(a / "predictions.csv").drop(columns=["p_Edema"]).to_csv(a / "predictions.csv", index=False)
    with pytest.raises(DataError, match="p_Edema"):
        load_runs([a])
    with pytest.raises(DataError, match="no run folders"):
        load_runs([])


def test_eval_json_disagreeing_with_predictions_is_noted(tmp_path: Path) -> None:
    a = write_run(tmp_path, "alpha", "random", 0.2)
    doc = json.loads((a / "eval.json").read_text())
    doc["metrics"]["test_mean_auroc_6"] += 0.05
    (a / "eval.json").write_text(json.dumps(doc))
    (note,) = load_runs([a]).notes
    assert "alpha/random/full" in note and "predictions.csv" in note


def test_main_table_has_every_run_with_formatted_cis(study) -> None:
    table = main_table(study)
    assert len(table) == 10 and list(table["depth"].iloc[-2:]) == [1, 2]  # full models first
    row = table[table["run"] == "gamma/imagenet/full"].iloc[0]
    ev = study.runs.loc["gamma/imagenet/full"]
    assert row["auroc_6_ci"] == f"{ev['auroc_6']:.3f} [{ev['auroc_6_ci_low']:.3f}, {ev['auroc_6_ci_high']:.3f}]"
    assert row["auroc_5"] == ev["auroc_5"] and row["auroc_5_ci"].startswith(f"{ev['auroc_5']:.3f} [")
    assert (row["imagenet_top1"], row["parameters"]) == (74.0, 4_000_000)


def test_spearman_matches_construction_and_scipy_exactly(study) -> None:
    sp = spearman(study).set_index(["analysis", "initializer"])
    for analysis in ("top1_vs_auroc", "params_vs_auroc"):
        assert sp.loc[(analysis, "random"), "rho"] == 1.0
        assert sp.loc[(analysis, "imagenet"), "rho"] == pytest.approx(RHO_IMAGENET, abs=1e-12)
        assert sp.loc[(analysis, "imagenet"), "n"] == 4
    full = study.full.sort_values("family")
    im = full[full["initializer"] == "imagenet"]
    expected = stats.spearmanr(im["imagenet_top1"], im["auroc_6"])
    assert sp.loc[("top1_vs_auroc", "imagenet"), "rho"] == expected.statistic
    assert sp.loc[("top1_vs_auroc", "imagenet"), "p"] == expected.pvalue
    boost = pretraining_boost(study, B).per_family
    expected = stats.spearmanr(boost["parameters"], boost["boost"])
    assert sp.loc[("boost_vs_params", "imagenet - random"), "rho"] == expected.statistic
    assert (sp["status"] == MEASURED).all()


def test_spearman_needs_three_points_and_variation(tmp_path: Path) -> None:
    dirs = [write_run(tmp_path, f, "random", SEP["random"][f]) for f in ("alpha", "beta")]
    sp = spearman(load_runs(dirs)).set_index(["analysis", "initializer"])
    assert sp.loc[("top1_vs_auroc", "random"), "status"].startswith("not measured: 2 point(s)")
    assert sp.loc[("top1_vs_auroc", "imagenet"), "status"] == "not measured: no full imagenet runs"
    assert np.isnan(sp.loc[("top1_vs_auroc", "random"), "rho"])
    same = [write_run(tmp_path / "c", f, "random", 0.5, top1=75.0) for f in ("alpha", "beta", "gamma")]
    sp = spearman(load_runs(same)).set_index(["analysis", "initializer"])
    assert "constant" in sp.loc[("top1_vs_auroc", "random"), "status"]
    assert sp.loc[("params_vs_auroc", "random"), "status"].startswith("not measured: AUROC is constant")


def test_missing_top1_is_left_out_and_said(tmp_path: Path) -> None:
    dirs = [write_run(tmp_path, f, "random", SEP["random"][f]) for f in FAMILIES]
    doc = json.loads((dirs[0] / "eval.json").read_text())
    doc["imagenet_top1"] = None
    (dirs[0] / "eval.json").write_text(json.dumps(doc))
    row = spearman(load_runs(dirs)).iloc[0]
    assert (row["n"], row["rho"], row["note"]) == (3, 1.0, "left out (no value): alpha")


def test_pretraining_boost_positive_with_ci_excluding_zero(study) -> None:
    res = pretraining_boost(study, B, seed=0)
    fam = res.per_family.set_index("family")
    assert list(fam.index) == ["alpha", "beta", "gamma", "delta"]  # by parameters
    full = study.full.set_index("run")
    for f in FAMILIES:
        diff = full.loc[f"{f}/imagenet/full", "auroc_6"] - full.loc[f"{f}/random/full", "auroc_6"]
        assert fam.loc[f, "boost"] == pytest.approx(diff, abs=1e-12)
        assert fam.loc[f, "ci_low"] > 0 and fam.loc[f, "p"] == pytest.approx(1 / (B + 1))
    assert res.mean["boost"] == pytest.approx(fam["boost"].mean(), abs=1e-12)
    assert 0 < res.mean["ci_low"] < res.mean["boost"] < res.mean["ci_high"]
    assert res.mean["n_families"] == 4


def test_boost_is_negative_when_random_is_better(tmp_path: Path) -> None:
    dirs = [write_run(tmp_path, "alpha", "random", 1.5), write_run(tmp_path, "alpha", "imagenet", 0.2)]
    res = pretraining_boost(load_runs(dirs), B)
    assert res.per_family.iloc[0]["ci_high"] < 0 and res.mean["boost"] < 0


def test_size_differences_largest_minus_smallest_per_group(study) -> None:
    sizes = pretraining_boost(study, B).size_differences.set_index(["group", "initializer"])
    full = study.full.set_index("run")
    row = sizes.loc[("G2", "imagenet")]
    assert (row["larger"], row["smaller"]) == ("delta", "gamma")
    expected = full.loc["delta/imagenet/full", "auroc_6"] - full.loc["gamma/imagenet/full", "auroc_6"]
    assert row["difference"] == pytest.approx(expected, abs=1e-12) and row["difference"] < 0
    assert sizes.loc[("G1", "random"), "difference"] > 0
    assert len(sizes) == 4 and (sizes["status"] == MEASURED).all()


def test_truncation_summary_counts_only_runs_without_a_significant_drop(tmp_path: Path, study_dirs) -> None:
    # drop-1: identical predictions at 1/2 the parameters; drop-2: clearly worse at 1/4; drop-3: identical at 1/8.
    # Over the runs without a significant drop the ratios are 2 and 8: mean 5, median 5; the worse run (4x) is out,
    # and the deepest truncation without a significant drop is 3 blocks (deeper than the one that lost AUROC).
    three = write_run(tmp_path / "more", "alpha", "imagenet", SEP["imagenet"]["alpha"], depth=3, params=125_000)
    res = truncation_table(load_runs([*study_dirs, three]), B)
    t = res.table.set_index("blocks_dropped")
    assert (t.loc[1, "delta"], t.loc[1, "ci_low"], t.loc[1, "ci_high"], t.loc[1, "p"]) == (0.0, 0.0, 0.0, 1.0)
    assert list(t["parameter_ratio"]) == [2.0, 4.0, 8.0]
    assert list(t["significant_drop"]) == [False, True, False] and t.loc[2, "delta"] < 0
    s = res.summary
    assert (s["mean_parameter_ratio"], s["median_parameter_ratio"]) == (5.0, 5.0)
    assert (s["n_measured"], s["n_significant_drops"], s["n_without_significant_drop"]) == (3, 1, 2)
    deepest = res.deepest.set_index(["family", "initializer"]).loc[("alpha", "imagenet")]
    assert (deepest["deepest_without_significant_drop"], deepest["parameter_ratio"]) == (3, 8.0)


def test_truncation_summary_is_not_measured_when_every_truncation_lost(tmp_path: Path) -> None:
    dirs = [write_run(tmp_path, "alpha", "imagenet", 1.6), write_run(tmp_path, "alpha", "imagenet", 0.2, depth=1,
                                                                      params=500_000)]
    res = truncation_table(load_runs(dirs), B)
    assert res.summary["status"].startswith("not measured: all 1 truncated runs lost AUROC significantly")
    assert res.deepest.iloc[0]["deepest_without_significant_drop"] == 0


def test_chance_difference_is_not_a_significant_drop(tmp_path: Path) -> None:
    # the jitter costs about as much AUROC as the slightly larger separation gains
    dirs = [write_run(tmp_path, "alpha", "imagenet", 1.6), write_run(tmp_path, "alpha", "imagenet", 1.63, depth=1,
                                                                      params=500_000, jitter=0.3)]
    row = truncation_table(load_runs(dirs), B).table.iloc[0]
    assert row["delta"] < 0 and row["ci_low"] < 0 < row["ci_high"] and row["p"] > 0.05, "fixture: CI must straddle 0"
    assert not row["significant_drop"]


def test_truncated_run_without_its_full_model_is_not_measured(tmp_path: Path) -> None:
    dirs = [write_run(tmp_path, "alpha", "imagenet", 1.6), write_run(tmp_path, "gamma", "random", 0.3, depth=1)]
    res = truncation_table(load_runs(dirs), B)
    assert res.table.iloc[0]["status"] == "not measured: no full gamma/random run"
    assert res.summary["status"] == "not measured: no truncated run has its full model"


def test_missing_inputs_give_not_measured_entries_without_crashing(tmp_path: Path) -> None:
    s = load_runs(write_full_grid(tmp_path, inits=("random",)))
    boost = pretraining_boost(s, B)
    assert (boost.per_family["status"] == "not measured: no full alpha/imagenet run").iloc[0]
    assert boost.mean["status"].startswith("not measured: no family has both")
    sp = spearman(s).set_index(["analysis", "initializer"])
    assert sp.loc[("boost_vs_params", "imagenet - random"), "status"].startswith("not measured")
    assert truncation_table(s, B).table.iloc[0]["status"] == "not measured: no truncated runs"
    assert (boost.size_differences["status"] == MEASURED).all()


def test_one_run_only(tmp_path: Path) -> None:
    s = load_runs([write_run(tmp_path, "alpha", "random", 0.2)])
    assert len(main_table(s)) == 1
    assert not (spearman(s)["status"] == MEASURED).any()
    boost = pretraining_boost(s, B)
    # a group with one family has nothing to compare: no row for it, and the table says why it is empty
    assert boost.size_differences.iloc[0]["status"] == (
        "not measured: no group has two full families of one initializer")
    assert truncation_table(s, B).summary["status"] == "not measured: no truncated runs"


def test_every_pretrained_initializer_is_compared_with_random_and_with_imagenet(tmp_path: Path) -> None:
    """ssl (or any pretrained initializer) gets the paper's analyses against random, and against imagenet when
    both are present; label-fraction runs stay out of them."""
    from chexops.analysis.tables import Comparison, comparisons, label_fraction_table, pretraining_boosts

    dirs = write_full_grid(tmp_path) + [write_run(tmp_path / "ssl", f, "ssl", SEP["random"][f] + 0.3)
                                        for f in FAMILIES]
    s = load_runs(dirs)
    assert comparisons(s) == [Comparison("imagenet"), Comparison("ssl"), Comparison("ssl", "imagenet")]
    boosts = {b.comparison.name: b for b in pretraining_boosts(s, B)}
    full = s.full.set_index("run")
    fam = boosts["ssl - random"].per_family.set_index("family")
    for f in FAMILIES:
        diff = full.loc[f"{f}/ssl/full", "auroc_6"] - full.loc[f"{f}/random/full", "auroc_6"]
        assert fam.loc[f, "boost"] == pytest.approx(diff, abs=1e-12) and fam.loc[f, "ci_low"] > 0
    assert boosts["ssl - random"].mean["n_families"] == 4
    vs_imagenet = boosts["ssl - imagenet"].per_family.set_index("family")
    assert vs_imagenet.loc["alpha", "boost"] == pytest.approx(
        full.loc["alpha/ssl/full", "auroc_6"] - full.loc["alpha/imagenet/full", "auroc_6"], abs=1e-12)
    sp = spearman(s).set_index(["analysis", "initializer"])
    assert sp.loc[("boost_vs_params", "ssl - random"), "status"] == MEASURED
    assert sp.loc[("boost_vs_params", "ssl - imagenet"), "n"] == 4
    assert label_fraction_table(s, B)["label_fraction"].unique().tolist() == [1.0]


def test_label_fraction_runs_make_the_label_fraction_table_only(tmp_path: Path) -> None:
    from chexops.analysis.tables import label_fraction_table

    dirs = write_full_grid(tmp_path, inits=("random",))
    for f in FAMILIES:  # the same families at half the labels, worse
        folder = write_run(tmp_path / "half", f, "random", SEP["random"][f] - 0.3)
        doc = json.loads((folder / "eval.json").read_text())
        doc |= {"run": doc["run"] + "/labels-0.5", "label_fraction": 0.5}
        (folder / "eval.json").write_text(json.dumps(doc))
    s = load_runs(dirs + sorted((tmp_path / "half").iterdir()))
    assert len(s.full) == len(FAMILIES)  # the paper's analyses see all-label runs only
    table = label_fraction_table(s, B)
    means = table[table["family"] == "mean"].set_index("label_fraction")
    assert means.loc[0.5, "auroc"] < means.loc[1.0, "auroc"]
    assert means.loc[1.0, "auroc"] == pytest.approx(s.full["auroc_6"].mean(), abs=1e-9)
    assert (means["ci_low"] < means["auroc"]).all() and (means["auroc"] < means["ci_high"]).all()
