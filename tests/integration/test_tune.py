"""Optuna learning-rate search: pass-through when off, nested MLflow trials, resumable SQLite study."""

from __future__ import annotations

import json
from dataclasses import replace

import optuna
import pytest
from fixtures.training import KEY, make_config
from mlflow import MlflowClient

from chexops.config import TuneConfig
from chexops.stages.context import StageContext
from chexops.stages.tune import chosen_lr
from chexops.stages.tune import run as tune
from chexops.tracking.runs import Tracker


def test_disabled_tuning_passes_train_lr_through(prepared, tmp_path):  # noqa: F811
    config = make_config(prepared, runs_dir=str(tmp_path / "runs"))
    record = tune(StageContext(config, KEY))
    assert record == {"run": KEY.name, "lr": config.train.lr, "tuned": False}
    assert chosen_lr(config, KEY) == config.train.lr


def test_search_logs_nested_trials_and_resumes(prepared, tmp_path):  # noqa: F811
    base = make_config(prepared, runs_dir=str(tmp_path / "runs"))
    search = TuneConfig(enabled=True, trials=2, lr_min=1e-4, lr_max=1e-2, examples=128,
                      storage=str(tmp_path / "optuna.db"))
    config = replace(base, tune=search)
    tracker = Tracker.open(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "art"), "tune-test")
    first = tune(StageContext(config, KEY, progress=False, tracker=tracker))
    assert first["tuned"] and len(first["trials"]) == 2
    assert 1e-4 <= first["lr"] <= 1e-2 and chosen_lr(config, KEY) == first["lr"]
    # an interrupted search continues: raising the budget to 3 runs exactly one more trial
    second = tune(StageContext(replace(config, tune=replace(search, trials=3)), KEY, progress=False, tracker=tracker))
    assert len(second["trials"]) == 3
    study = optuna.load_study(study_name=f"{config.experiment}/{KEY.name}", storage=f"sqlite:///{search.storage}")
    assert len(study.trials) == 3
    runs = MlflowClient(tracker.uri).search_runs([tracker.experiment_id])
    parents = [r for r in runs if r.info.run_name == f"tune:{KEY.name}"]
    trials = [r for r in runs if r.info.run_name.startswith(f"{KEY.name}/trial-")]
    assert len(parents) == 2 and len(trials) == 3
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} <= {p.info.run_id for p in parents}
    assert all("lr" in t.data.params and "val_mean_auroc_6" in t.data.metrics for t in trials)
    assert json.loads(KEY.tune_file(config.train.runs_dir).read_text())["lr"] == second["lr"]
    assert not list((tmp_path / "runs" / "tune" / KEY.slug).glob("trial-*"))  # trial folders cleaned up


def test_lr_search_range_is_checked(prepared):  # noqa: F811
    from chexops.config import validate
    from chexops.errors import ConfigError

    config = make_config(prepared)
    with pytest.raises(ConfigError, match="tune.lr_min"):
        validate(replace(config, tune=TuneConfig(lr_min=1e-2, lr_max=1e-3)))
