"""Runs made inside `dvc exp run` (DVC_EXP_NAME set) are kept apart in MLflow: their own names, their own study
run (an experiment's analyze never overwrites the baseline's summary run), the experiment's name as a tag."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fixtures.ensembles import tiny_manifest

from chexops import naming
from chexops.config import config_from_dict
from chexops.stages import experiment
from chexops.tracking.runs import Tracker
from chexops.tracking.tags import DVC_EXPERIMENT, PARENT, STUDY_RUN


def test_a_dvc_experiment_has_its_own_study_run_and_run_names(tmp_path: Path, empty_store: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(naming.DVC_EXP_ENV, raising=False)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    tracker = Tracker.open(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "mlartifacts"), "study")
    config = config_from_dict({"study": {"name": "demo"}})
    baseline = experiment.study_run(config, tracker)
    assert experiment.run_name("resnet18/random/full") == "resnet18/random/full"
    assert DVC_EXPERIMENT not in experiment.child_tags(config, tracker)

    monkeypatch.setenv(naming.DVC_EXP_ENV, "bushy-lair")
    assert experiment.run_name("resnet18/random/full") == "resnet18/random/full [bushy-lair]"
    exp_parent = experiment.study_run(config, tracker)
    assert exp_parent != baseline and experiment.study_run(config, tracker) == exp_parent
    tags = experiment.child_tags(config, tracker)
    assert tags == {PARENT: exp_parent, DVC_EXPERIMENT: "bushy-lair"}
    run = tracker.client.get_run(exp_parent)
    assert run.info.run_name == f"{naming.summary_run_name('demo')} [bushy-lair]"
    assert run.data.tags[STUDY_RUN] == "demo@bushy-lair" and run.data.tags[DVC_EXPERIMENT] == "bushy-lair"
    monkeypatch.delenv(naming.DVC_EXP_ENV)
    assert experiment.study_run(config, tracker) == baseline  # the baseline's summary run is untouched


def test_a_dvc_experiments_version_takes_its_own_alias_not_the_baselines_candidate(
        tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(naming.DVC_EXP_ENV, raising=False)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    tracker = Tracker.open(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "mlartifacts"), "study")
    name = naming.registered_model_name("study", "resnet18/random/drop-3")
    versions = {}
    for exp in (None, "bushy lair/2"):  # the baseline, then an experiment whose name MLflow would refuse as is
        if exp:
            monkeypatch.setenv(naming.DVC_EXP_ENV, exp)
        run_id = tracker.start_run(experiment.run_name("resnet18/random/drop-3"), {}, {})
        alias = experiment.candidate_alias()
        versions[alias] = tracker.log_ensemble(
            run_id, tiny_manifest(tmp_path / (exp or "baseline").replace("/", "-"), "resnet18/random/drop-3"), name,
            {}, alias=alias)
    assert versions == {"candidate": 1, "candidate-bushy-lair-2": 2}
    for alias, version in versions.items():
        assert int(tracker.client.get_model_version_by_alias(name, alias).version) == version
