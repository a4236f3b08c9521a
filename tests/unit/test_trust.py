"""chexops.analysis.trust and probes: the evidence checks on small hand-made inputs whose answers are worked out
by hand (no training)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.analysis import FAMILIES, SEP, write_full_grid, write_run
from scipy import stats

from chexops.analysis import trust
from chexops.analysis.probes import Reference, References, fit_probe, pixel_features, pretraining_budget
from chexops.analysis.report import write_report
from chexops.analysis.results import load_runs
from chexops.analysis.tables import architecture_line, fraction_boosts, size_differences, truncation_table
from chexops.data.labels import OBSERVATIONS
from chexops.evaluate.scoring import training_record

B = 200


def test_exact_spearman_p_by_hand() -> None:
    # n = 4, ranks (1,2,3,4) vs (2,1,4,3): sum d^2 = 4, rho = 0.6; |rho| >= 0.6 for 10 of the 24 orderings
    assert trust.exact_spearman_p([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(10 / 24)
    # n = 3, a perfect order: only the identity and the reversal reach |rho| = 1: p = 2 / 6
    assert trust.exact_spearman_p([1, 2, 3], [10, 20, 30]) == pytest.approx(1 / 3)
    # n = 6 in order: p = 2 / 720, where scipy's t approximation says 0
    rho, p, how = trust.spearman_test(range(6), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert (rho, how) == (1.0, "exact permutation") and p == pytest.approx(2 / 720)


def test_spearman_above_ten_points_uses_scipys_approximation() -> None:
    x, y = np.arange(11.0), np.array([3, 1, 2, 5, 4, 7, 6, 9, 8, 11, 10.0])
    rho, p, how = trust.spearman_test(x, y)
    expected = stats.spearmanr(x, y)
    assert how == "t approximation" and rho == pytest.approx(expected.statistic) and p == expected.pvalue


def test_minimum_detectable_effect_is_2_8_standard_errors() -> None:
    assert trust.minimum_detectable_effect(0.01) == pytest.approx(0.01 * (1.959964 + 0.841621), abs=1e-6)
    assert math.isnan(trust.minimum_detectable_effect(float("nan")))


def test_still_rising_compares_the_last_evaluation_with_every_earlier_one() -> None:
    assert trust.still_rising([(512, 0.60), (1024, 0.70), (1536, 0.71)]) is True  # +0.010 > 0.005
    assert trust.still_rising([(512, 0.60), (1024, 0.70), (1536, 0.703)]) is False  # +0.003: plateau
    assert trust.still_rising([(512, 0.60), (1024, 0.70), (1536, 0.65)]) is False  # past its best
    assert trust.still_rising([(512, 0.60), (1024, None), (1536, 0.61)]) is True  # undefined scores skipped
    assert trust.still_rising([(512, 0.6)]) is None and trust.still_rising([]) is None


def test_spread_is_max_minus_min() -> None:
    assert trust.spread([0.6, 0.8, 0.7, float("nan")]) == pytest.approx(0.2)
    assert math.isnan(trust.spread([0.7]))


def test_pixel_features_are_area_averages() -> None:
    img = np.zeros((2, 32, 32), dtype=np.uint8)
    img[:, :, 16:] = 255  # right half white
    img[1, :16, :] = 0
    f = pixel_features(img, size=4).reshape(2, 4, 4)
    assert f[0].tolist() == [[0, 0, 1, 1]] * 4
    assert f[1].tolist() == [[0, 0, 0, 0]] * 2 + [[0, 0, 1, 1]] * 2


def test_fit_probe_scores_each_study_by_its_views_maximum() -> None:
    # one feature equal to the Edema label (+-1): the probe's Edema probability rises with the feature
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    targets = np.zeros((200, len(OBSERVATIONS)), dtype=np.float32)
    targets[:, OBSERVATIONS.index("Edema")] = y
    mask = np.ones_like(targets)
    train_x = (2 * y - 1)[:, None].astype(float)
    # test: s1 has views -1 and +1 (its maximum is the +1 view), s2 only -1, s3 only +1
    test_x = np.array([[-1.0], [1.0], [-1.0], [1.0]])
    probs = fit_probe(train_x, targets, mask, test_x, ["s1", "s1", "s2", "s3"], ["s3", "s2", "s1"])
    e = OBSERVATIONS.index("Edema")
    assert probs[0, e] == probs[2, e] > 0.9 > 0.1 > probs[1, e]  # s3 and s1 (max over views) high, s2 low
    # tasks with one class in training, and non-study observations, are 0.5
    assert (probs[:, OBSERVATIONS.index("Cardiomegaly")] == 0.5).all()
    assert (probs[:, OBSERVATIONS.index("Fracture")] == 0.5).all()


def test_pretraining_budget_states_chance_loss() -> None:
    b = pretraining_budget({"examples": 1024, "steps": 32, "final_loss": 4.8, "settings": {"queue": 255}})
    assert b["chance_loss"] == pytest.approx(math.log(256)) and b["examples"] == 1024


def test_training_record_from_a_manifest() -> None:
    manifest = {"examples": 1536, "steps": 96, "labelled_examples": 512, "evaluations": 4,
                "validation_history": [[512, 0.6], [1024, 0.7], [1536, 0.72], [1536, 0.72]],
                "checkpoints": [{"examples": 1536}, {"examples": 1024}, {"examples": 512}]}
    t = training_record(manifest)
    assert t["epochs"] == 3.0 and t["ensemble_size"] == 3 and t["kept_examples"] == [1536, 1024, 512]
    old = training_record({"examples": 1536, "checkpoints": [{"examples": 1536}]})  # before budgets were recorded
    assert old["epochs"] is None and old["validation_history"] is None


def _history(rising: bool) -> dict:
    last = 0.80 if rising else 0.70
    return {"training": {"examples": 1536, "epochs": 3.0, "labelled_examples": 512, "evaluations": 3,
                         "ensemble_size": 3, "validation_history": [[512, 0.6], [1024, 0.7], [1536, last]]},
            "checkpoint_test_mean_auroc": [0.70, 0.75, 0.72]}


def test_run_checks_flag_chance_baseline_and_rising(tmp_path: Path) -> None:
    dirs = [write_run(tmp_path, "ant18", "random", 0.0, eval_fields=_history(False)),  # chance
            write_run(tmp_path, "ant34", "random", 1.0, eval_fields=_history(True)),  # still rising
            write_run(tmp_path, "bee121", "random", 1.0, eval_fields=_history(False), jitter=0.3)]
    study = load_runs(dirs)
    # a baseline with exactly ant34's predictions: ant34 is not above it (equal), bee121 (more noise) is below
    baseline = Reference("pixel baseline", study.probs["ant34/random/full"], study.runs.loc["ant34/random/full",
                                                                                           "auroc_6"])
    c = trust.run_checks(study, References(baseline), B)
    assert c.loc["ant18/random/full", "ci_low"] <= 0.5
    assert any("includes chance" in p for p in c.loc["ant18/random/full", "problems"])
    assert bool(c.loc["ant34/random/full", "still_rising"]) is True
    assert any("still rising" in p for p in c.loc["ant34/random/full", "problems"])
    assert any("not above the pixel baseline" in p for p in c.loc["ant34/random/full", "problems"])
    assert c.loc["ant34/random/full", "vs_baseline"] == 0.0
    assert c.loc["bee121/random/full", "checkpoint_spread"] == pytest.approx(0.05)
    assert c.loc["bee121/random/full", "epochs"] == 3.0 and c.loc["bee121/random/full", "ensemble_size"] == 3


def test_verdict_names_failing_runs_unlearned_probes_and_training_variance(tmp_path: Path) -> None:
    dirs = [write_run(tmp_path, f, "random", 1.0, eval_fields=_history(False)) for f in ("ant18", "ant34")]
    study = load_runs(dirs)
    e = trust.gather(study, None, B)
    runs = ["ant18/random/full", "ant34/random/full"]
    assert trust.verdict(e, runs) == ""
    # spread 0.05 (0.70..0.75): a difference of 0.04 is within it, 0.06 is not
    assert "within the runs' training variance" in trust.verdict(e, runs, effect=0.04)
    assert trust.verdict(e, runs, effect=0.06) == ""
    probes = pd.DataFrame([{"initializer": "ssl", "family": "ant18", "probe_auroc": 0.62, "random_auroc": 0.63,
                            "delta": -0.01, "ci_low": -0.03, "ci_high": 0.01, "p": 0.4, "learned": False}])
    e2 = trust.Evidence(e.checks, probes)
    assert "ssl features do no better than random ones" in trust.verdict(e2, runs, pretrained=("ssl", ["ant18"]))


def test_architecture_lines_separate_versions_from_sizes() -> None:
    assert architecture_line("resnet18") == architecture_line("resnet101") == "resnet"
    assert architecture_line("densenet121") == architecture_line("densenet201") == "densenet"
    assert architecture_line("efficientnet_b0") == architecture_line("efficientnet_b3") == "efficientnet"
    assert architecture_line("mobilenetv2") != architecture_line("mobilenetv3")
    assert architecture_line("inception_v3") != architecture_line("inception_v4")
    assert architecture_line("mnasnet") == "mnasnet"


def test_size_differences_never_compare_two_architectures(tmp_path: Path) -> None:
    dirs = [write_run(tmp_path, "mobilenetv2", "random", 0.5, params=3_000_000, group="MobileNet"),
            write_run(tmp_path, "mobilenetv3", "random", 0.8, params=5_000_000, group="MobileNet")]
    sizes = size_differences(load_runs(dirs), B)
    assert sizes.iloc[0]["status"].startswith("not measured: no architecture line has two sizes")


def test_truncation_summary_counts_one_truncation_once(tmp_path: Path) -> None:
    # ant18 drop-1 (ratio 2) under two initializers and ant34 drop-1 (ratio 4): mean over distinct (2 + 4) / 2
    dirs = write_full_grid(tmp_path)
    for init in ("random", "imagenet"):
        dirs.append(write_run(tmp_path, "ant18", init, SEP[init]["ant18"], depth=1, params=500_000))
    dirs.append(write_run(tmp_path, "ant34", "imagenet", SEP["imagenet"]["ant34"], depth=1, params=500_000))
    t = truncation_table(load_runs(dirs), B)
    assert not t.table["significant_drop"].any()
    assert t.summary["mean_parameter_ratio"] == 3.0 and t.summary["n_distinct_truncations"] == 2


def _ssl_over_random(tmp_path: Path, boost: float):
    """Every family trained from random and from ssl, ssl's separation `boost` higher; no run still rising."""
    dirs = [write_run(tmp_path / "r", f, "random", SEP["random"][f], eval_fields=_history(False)) for f in FAMILIES]
    dirs += [write_run(tmp_path / "s", f, "ssl", SEP["random"][f] + boost, eval_fields=_history(False))
             for f in FAMILIES]
    return load_runs(dirs)


def test_study_md_prints_unsupported_comparisons_without_bold(tmp_path: Path) -> None:
    """ssl 'beats' random in every family, but ssl's probe learned nothing: the boost is not a finding."""
    study = _ssl_over_random(tmp_path, boost=0.3)
    same = Reference("probe", study.probs["ant18/random/full"], 0.6)
    refs = References(probes={("ssl", f): (same, same) for f in FAMILIES})
    md = write_report(study, tmp_path / "reports", B, references=refs)["study_md"].read_text()
    trust_section = md.split("## Can these numbers be trusted?", 1)[1].split("\n## ", 1)[0]
    assert md.index("## Can these numbers be trusted?") < md.index("## Main table")
    assert "- ssl: its features beat random ones (paired CI above 0) for 0 of 4 families." in trust_section
    mean = [line for line in md.splitlines() if line.startswith("Mean boost:")][-1]  # ssl - random
    assert mean.startswith("Mean boost: not supported by these runs: ssl features do no better than random ones")
    assert "**" not in mean and "Measured: +" in mean
    assert "MoCo-CXR" in mean and "Pleural Effusion only" in mean and "0.1% of the labels" in mean


def test_study_md_bolds_a_supported_mean_boost(tmp_path: Path) -> None:
    study = _ssl_over_random(tmp_path, boost=1.0)
    lo = Reference("random", study.probs["ant18/random/full"], 0.602)
    hi = Reference("ssl", study.probs["ant18/ssl/full"], 0.8)
    refs = References(probes={("ssl", f): (hi, lo) for f in FAMILIES})
    paths = write_report(study, tmp_path / "reports", B, references=refs)
    md = paths["study_md"].read_text()
    assert "- ssl: its features beat random ones (paired CI above 0) for 4 of 4 families." in md
    mean = [line for line in md.splitlines() if line.startswith("Mean boost:")][-1]  # ssl - random
    assert mean.startswith("Mean boost: **+")
    m = json.loads(paths["metrics"].read_text())["trust"]
    assert m["runs_passing"] == 8 and m["probes_learned"] == {"ssl": 4}
    assert trust.mlflow_tags(m)["chexops.trust.probe.ssl"] == "beats random features for 4 of 4 families"



def test_boost_at_a_low_label_fraction_is_measured_and_gated(tmp_path: Path) -> None:
    """ssl - random at half the labels: +0.5 of separation per family, so a clear boost there; with no probe
    evidence and no run failing, it is printed as a finding, with MoCo-CXR's scope."""
    dirs = [write_run(tmp_path / "full", f, i, SEP["random"][f], eval_fields=_history(False))
            for f in FAMILIES for i in ("random", "ssl")]
    for f in FAMILIES:
        for init, sep in (("random", SEP["random"][f]), ("ssl", SEP["random"][f] + 0.5)):
            folder = write_run(tmp_path / f"half-{init}", f, init, sep, eval_fields=_history(False))
            doc = json.loads((folder / "eval.json").read_text())
            doc |= {"run": doc["run"] + "/labels-0.5", "label_fraction": 0.5}
            (folder / "eval.json").write_text(json.dumps(doc))
            dirs.append(folder)
    study = load_runs(dirs)
    boosts = fraction_boosts(study, B)
    assert list(boosts) == [0.5]
    ssl = next(b for b in boosts[0.5] if b.comparison.name == "ssl - random")
    assert ssl.mean["n_families"] == 4 and ssl.mean["boost"] > 0 and ssl.mean["ci_low"] > 0
    assert set(ssl.per_family["run_pretrained"]) == {f"{f}/ssl/full/labels-0.5" for f in FAMILIES}
    md = write_report(study, tmp_path / "reports", B)["study_md"].read_text()
    line = next(x for x in md.splitlines() if x.startswith("- ssl - random at 0.5 of the labels"))
    assert line.startswith("- ssl - random at 0.5 of the labels: mean boost **+")
    assert "MoCo-CXR's claim" in md and "Pleural Effusion only" in md


def test_grid_seeds_repeats_set_the_seed_spread_and_stay_out_of_the_comparisons(tmp_path: Path) -> None:
    base = [write_run(tmp_path, "resnet18", init, sep, eval_fields={"train_seed": 0})
            for init, sep in (("random", 1.0), ("ssl", 1.2))]
    repeat = write_run(tmp_path / "repeats", "resnet18", "random", 1.0, jitter=0.8,
                       eval_fields={"run": "resnet18/random/full/seed-1", "train_seed": 1, "seed_repeat": True})
    study = load_runs(base + [repeat])
    assert list(study.without_repeats().runs.index) == ["resnet18/random/full", "resnet18/ssl/full"]
    out = write_report(study, tmp_path / "reports", n_resamples=50)
    checks = pd.read_csv(out["trust_runs"]).set_index("run")
    aurocs = study.runs["auroc_6"]
    want = abs(aurocs["resnet18/random/full"] - aurocs["resnet18/random/full/seed-1"])
    assert want > 0.01  # the repeat differs: a spread to measure
    assert checks.loc["resnet18/random/full", "seed_spread"] == pytest.approx(want)
    assert checks.loc["resnet18/random/full/seed-1", "seed_spread"] == pytest.approx(want)
    assert math.isnan(checks.loc["resnet18/ssl/full", "seed_spread"])  # one seed: not measured
    main = pd.read_csv(out["main_table"])
    assert "resnet18/random/full/seed-1" not in set(main.astype(str).stack())  # one row per configuration
    md = (tmp_path / "reports" / "study.md").read_text()
    assert f"Across train seeds a configuration's AUROC-6 spans up to {want:.3f}." in md

