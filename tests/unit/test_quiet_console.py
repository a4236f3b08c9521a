"""Under `dvc repro` (every stage runs with --quiet) a stage prints one line, not its result's JSON, and the study
run gets each measured comparison's mean boost."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def common():
    spec = importlib.util.spec_from_file_location("stage_common", ROOT / "pipelines" / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_stage_result_is_one_line() -> None:
    line = common().summary_line
    assert line({"summary": "resnet18/ssl/full: test mean AUROC 0.812 [0.790, 0.833]"}) == \
        "resnet18/ssl/full: test mean AUROC 0.812 [0.790, 0.833]"
    # no summary stated: the scalar fields, ids and hashes left out, nested values too, cut to fit a line
    text = line({"family": "resnet18", "examples": 128, "mlflow_run_id": "abc", "sha256": "f" * 64,
                 "settings": {"lr": 0.1}, "note": "x" * 300})
    assert text.startswith("family=resnet18, examples=128, note=") and "abc" not in text and "lr" not in text
    assert "\n" not in text and len(text) <= 160


def test_mlflow_registration_chatter_goes_to_the_log(caplog: pytest.LogCaptureFixture,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from chexops.tracking.runs import _stderr_to_log

    with caplog.at_level(logging.DEBUG, logger="chexops.tracking.runs"), _stderr_to_log():
        print("Successfully registered model 'study.resnet18.ssl.full'.", file=sys.stderr)
    assert capsys.readouterr().err == ""
    assert "Successfully registered model 'study.resnet18.ssl.full'." in caplog.messages


def test_the_study_run_gets_every_measured_comparisons_mean_boost() -> None:
    from chexops.stages.analyze import study_metrics

    metrics = {"boost": {"mean": None},  # the paper's imagenet-random, unmeasured without ImageNet weights
               "boosts": {"imagenet-random": {"mean": None},
                          "ssl-random": {"mean": 0.02, "mean_ci_low": -0.01, "mean_ci_high": 0.05, "mean_p": 0.2}}}
    out = study_metrics(metrics)
    assert out["boost.ssl-random.mean"] == 0.02 and out["boost.ssl-random.mean_ci_high"] == 0.05
    assert not [k for k in out if "imagenet" in k]


def test_undefined_test_aurocs_are_not_logged_whether_nan_or_read_back_as_null() -> None:
    from types import SimpleNamespace

    from chexops.stages.evaluate import test_metrics

    record = SimpleNamespace(
        headline={"metric": "test_mean_auroc_5of6"}, headline_metric="test_mean_auroc_5of6",
        metrics={"test_mean_auroc_5of6": 0.51, "test_auroc_Pneumonia": None, "test_auroc_Fracture": float("nan")},
        best_single={"test_mean_auroc": 0.6}, bootstrap={"usable_replicates": {"mean_auroc_5of6": 120}})
    assert test_metrics(record) == {"test_mean_auroc_5of6": 0.51, "test_best_single_mean_auroc_5of6": 0.6,
                                    "test_usable_replicates": 120}
