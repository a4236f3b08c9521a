"""The study's protocol to the letter, each point on a case whose answer is known by hand: the lab's ensemble order
at study level, partial means never named the 6-task mean, the patient-level (cluster) bootstrap, the test split's
composition, checkpoint ranking by the competition-5 validation mean, and the p-value rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from chexops.config import Config, DataConfig, TrainConfig, validate
from chexops.data.labels import OBSERVATIONS, STUDY_TASKS
from chexops.data.splits import composition
from chexops.errors import ConfigError
from chexops.evaluate import scoring
from chexops.evaluate.bootstrap import Resampling, bootstrap_ci, bootstrap_indices, paired_bootstrap
from chexops.evaluate.ensemble import Ensemble, predict_frame
from chexops.evaluate.metrics import auroc_metrics, headline_key, headline_text

SIZE = 16
CARDIO = OBSERVATIONS.index("Cardiomegaly")


class Probe(torch.nn.Module):
    """Logit = sign * 10 * (mean normalised pixel): sure of every finding on a bright image (sign +1) or on a dark
    one (sign -1), so two probes disagree on every two-view study of one bright and one dark image."""

    def __init__(self, sign: float) -> None:
        super().__init__()
        self.sign = sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.sign * 10 * x.mean(dim=(1, 2, 3)))[:, None].expand(-1, len(OBSERVATIONS))


def probe_ensemble() -> Ensemble:
    return Ensemble([Probe(1.0), Probe(-1.0)], SIZE, [0.5] * 3, [0.5] * 3, torch.device("cpu"))


BRIGHT, DARK = np.full((SIZE, SIZE), 255, np.uint8), np.zeros((SIZE, SIZE), np.uint8)


def test_two_views_combine_in_the_labs_order() -> None:
    # member 1: 0.9 on view 1, 0.1 on view 2; member 2 the reverse. Lab: max per member (0.9, 0.9), then mean 0.9.
    # The other order (mean per view 0.5, 0.5, then max) would give 0.5.
    members = np.array([[[0.9], [0.1]], [[0.1], [0.9]]], dtype=np.float32)
    ids, probs = Ensemble.combine_exams(members, ["p1/s1", "p1/s1"])
    assert ids == ["p1/s1"] and probs[0, 0] == pytest.approx(0.9)
    _, mean_first = Ensemble.combine_exams(members.mean(axis=0, keepdims=True), ["p1/s1", "p1/s1"])
    assert mean_first[0, 0] == pytest.approx(0.5)  # what the lab's order avoids


def test_served_model_and_evaluation_use_the_labs_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ensemble = probe_ensemble()
    # studies 1-2: a bright and a dark view (each probe sure on one of them); 3-4: two dark views
    views = [BRIGHT, DARK, BRIGHT, DARK, DARK, DARK, DARK, DARK]
    exam_ids = ["p1/s1", "p1/s1", "p2/s1", "p2/s1", "p3/s1", "p3/s1", "p4/s1", "p4/s1"]
    paths = []
    for i, img in enumerate(views):
        paths.append(tmp_path / f"view{i}.png")
        Image.fromarray(img).save(paths[-1])
    served = predict_frame(ensemble, pd.DataFrame({"path": [str(p) for p in paths], "study": exam_ids}))
    assert list(served["study"]) == ["p1/s1", "p2/s1", "p3/s1", "p4/s1"]
    # two-view studies: both members' maxima are ~1, so ~1 (the mean-first order gives 0.5); dark-only: (0 + 1) / 2
    np.testing.assert_allclose(served["Edema"], [1.0, 1.0, 0.5, 0.5], atol=1e-4)

    labels = np.zeros((8, len(OBSERVATIONS)))
    labels[:4] = 1.0  # studies 1 and 2 positive for every finding
    index = pd.DataFrame({"study": exam_ids, "patient": [s.split("/")[0] for s in exam_ids]})
    index[list(OBSERVATIONS)] = labels
    (tmp_path / "run").mkdir()
    manifest = {"run": "probe/random/full", "family": "resnet18", "depth": 0, "num_classes": 14, "image_size": SIZE,
                "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
                "checkpoints": [{"file": "a.pt", "val_score": 0.9}, {"file": "b.pt", "val_score": 0.8}]}
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(scoring, "load_ensemble", lambda *_a, **_k: ensemble)
    payload = scoring.score_ensemble(tmp_path / "run", tmp_path / "eval", np.stack(views), index, 20, 0.95, 0)
    written = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    np.testing.assert_allclose(written["p_Edema"], served["Edema"], atol=1e-6)
    assert list(written["patient"]) == ["p1", "p2", "p3", "p4"]
    assert payload.metrics["test_mean_auroc_6"] == 1.0  # positives ~1 against negatives 0.5


def single_class_cardiomegaly(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=(n, len(OBSERVATIONS)))
    y[0], y[1] = 0, 1
    y[:, CARDIO] = 0  # no test study has cardiomegaly: its AUROC is undefined
    return y, np.clip(0.5 * y + rng.uniform(0, 0.5, size=y.shape), 0, 1)


def test_a_mean_over_fewer_tasks_is_not_called_the_6_task_mean() -> None:
    y, p = single_class_cardiomegaly()
    res = bootstrap_ci(y, p, n_resamples=100, seed=0, tasks=OBSERVATIONS)
    flat = res.to_flat_dict("test")
    assert "test_mean_auroc_6" not in flat and "test_mean_auroc_5" not in flat
    five = [t for t in STUDY_TASKS if t != "Cardiomegaly"]
    by_hand = np.mean([auroc_metrics(y[:, [OBSERVATIONS.index(t)]], p[:, [OBSERVATIONS.index(t)]], (t,)).auroc[t]
                       for t in five])
    assert flat["test_mean_auroc_5of6"] == pytest.approx(by_hand, abs=1e-12)
    assert "test_mean_auroc_4of5" in flat and headline_key(flat) == "test_mean_auroc_5of6"
    assert headline_text(flat).endswith("over 5 of 6 tasks")
    assert res.undefined == ("Cardiomegaly",)
    usable = res.usable_replicates()
    assert usable["auroc_Cardiomegaly"] == 0 and 0 < usable["mean_auroc_5of6"] <= 100
    # the same names at validation, where checkpoints are ranked
    assert "val_mean_auroc_5of6" in auroc_metrics(y, p).to_flat_dict("val")


def test_evaluation_records_undefined_tasks_and_usable_replicates(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    y, _ = single_class_cardiomegaly(40)
    views = np.where(y[:, :1, None] == 1, BRIGHT[None], DARK[None]).astype(np.uint8)  # bright = No Finding
    index = pd.DataFrame({"study": [f"p{i}/s1" for i in range(40)], "patient": [f"p{i}" for i in range(40)]})
    index[list(OBSERVATIONS)] = y.astype(float)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(
        {"run": "probe", "family": "resnet18", "depth": 0, "num_classes": 14, "image_size": SIZE,
         "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "checkpoints": [{"file": "a.pt", "val_score": 1}]}))
    monkeypatch.setattr(scoring, "load_ensemble", lambda *_a, **_k: probe_ensemble())
    payload = scoring.score_ensemble(tmp_path / "run", tmp_path / "eval", views, index, 50, 0.95, 0)
    assert payload.headline == {"metric": "test_mean_auroc_5of6", "undefined": ["Cardiomegaly"],
                                   "tasks": [t for t in STUDY_TASKS if t != "Cardiomegaly"]}
    assert payload.undefined_tasks == ["Cardiomegaly"]
    assert payload.bootstrap["unit"] == "study"  # one study per patient
    assert payload.bootstrap["usable_replicates"]["mean_auroc_5of6"] <= 50


def test_a_patient_with_three_studies_is_resampled_as_one_cluster() -> None:
    groups = ["a", "a", "a", "b", "c", "d"]  # patient a has three test studies
    r = Resampling.of(6, 500, seed=0, groups=groups)
    assert r.unit == "patient" and r.n_clusters == 4
    counts = np.concatenate([c for _, c in r.count_blocks()])
    assert counts.shape == (500, 6)
    # a's studies are drawn together: always the same count, and each resample draws 4 patients
    assert (counts[:, 0] == counts[:, 1]).all() and (counts[:, 1] == counts[:, 2]).all()
    draws = counts[:, 0] + counts[:, 3] + counts[:, 4] + counts[:, 5]
    assert (draws == 4).all()
    # by hand: resample b draws patients rng.integers(0, 4, 4) (codes in first-appearance order a, b, c, d)
    first = np.random.default_rng(0).integers(0, 4, size=(500, 4))[0]
    assert counts[0, 0] == np.sum(first == 0) and counts[0, 3] == np.sum(first == 1)


def test_without_repeated_patients_the_bootstrap_is_the_plain_study_bootstrap() -> None:
    r = Resampling.of(5, 30, seed=3, groups=["a", "b", "c", "d", "e"])
    assert r.unit == "study"
    counts = np.concatenate([c for _, c in r.count_blocks()])
    idx = bootstrap_indices(5, 30, seed=3)
    np.testing.assert_array_equal(counts, np.stack([np.bincount(row, minlength=5) for row in idx]))


def test_clustered_intervals_are_wider_when_a_patients_studies_move_together() -> None:
    # 40 patients of 5 near-identical studies each: 200 studies carry the information of about 40
    rng = np.random.default_rng(0)
    y_pat, s_pat = rng.integers(0, 2, 40), rng.normal(size=40)
    y = np.repeat(y_pat, 5)[:, None]
    s = (np.repeat(s_pat, 5) + 0.8 * np.repeat(y_pat, 5) + 0.01 * rng.normal(size=200))[:, None]
    groups = np.repeat(np.arange(40), 5).astype(str)
    plain = bootstrap_ci(y, s, 400, seed=1, tasks=("Edema",)).per_task["Edema"]
    clustered = bootstrap_ci(y, s, 400, seed=1, tasks=("Edema",), groups=groups)
    e = clustered.per_task["Edema"]
    assert clustered.unit == "patient" and e.point == plain.point
    assert (e.ci_high - e.ci_low) > 1.6 * (plain.ci_high - plain.ci_low)
    paired = paired_bootstrap(np.c_[y, y], np.c_[s, s], np.c_[s, s] * 0.5, 50, groups=groups,
                              tasks=("Edema", "Atelectasis"))
    assert paired.unit == "patient"


def test_test_split_composition_by_hand() -> None:
    index = pd.DataFrame({"patient": ["a", "a", "a", "b", "c"], "study": ["a/1", "a/1", "a/2", "b/1", "c/1"],
                          "view": ["frontal", "lateral", "frontal", "frontal", "frontal"]})
    assert composition(index) == {"images": 5, "studies": 4, "patients": 3,
                                  "views": {"frontal": 4, "lateral": 1}, "patients_with_several_studies": 1,
                                  "max_studies_per_patient": 2}


def test_the_evaluated_split_reports_every_dropped_study(tmp_path: Path) -> None:
    from chexops.stages.evaluate import test_split_composition
    from chexops.tracking.presentation import composition_text

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cache.json").write_text(json.dumps({"test_source": "holdout:0.1:seed0", "splits": {"test": {
        "images": 3, "skipped": 1, "studies_unreadable": 1, "studies_no_frontal": 2, "frontal_only": True}}}))
    config = Config(data=DataConfig(cache_dir=str(cache)))
    index = pd.DataFrame({"patient": ["a", "b", "b"], "study": ["a/1", "b/1", "b/2"], "view": ["frontal"] * 3})
    split = test_split_composition(config, index)
    assert split["source"] == "synthetic patient hold-out (0.1 of train patients, seed0)"
    assert (split["studies"], split["patients"], split["images_unreadable"]) == (3, 2, 1)
    assert [d["studies"] for d in split["dropped"]] == [2, 1]
    assert "no frontal image" in split["dropped"][0]["why"] and "no readable image" in split["dropped"][1]["why"]
    assert composition_text(split).startswith("3 studies of 2 patients, 3 frontal + 0 lateral images; dropped 2")


def test_checkpoints_are_ranked_by_the_competition_5_mean_unless_told_otherwise() -> None:
    assert TrainConfig().select_metric == "mean_auroc_5"
    validate(Config(train=TrainConfig(select_metric="mean_auroc_6")))
    with pytest.raises(ConfigError, match="train.select_metric must be one of mean_auroc_5, mean_auroc_6"):
        validate(Config(train=TrainConfig(select_metric="val_loss")))
