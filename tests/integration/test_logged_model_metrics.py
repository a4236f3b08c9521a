"""A registered ensemble's logged model carries its test metrics (linked by model_id, on the test dataset), tags
and description, so `search_logged_models` and the Models tab rank configurations by test AUROC."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fixtures.ensembles import tiny_manifest

from chexops import naming
from chexops.tracking.runs import ModelResults, Tracker
from chexops.tracking.tags import NOTE

pytestmark = pytest.mark.usefixtures("one_thread")


def test_logged_models_carry_test_metrics_and_rank_by_them(tmp_path: Path, empty_store: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    tracker = Tracker.open(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "mlartifacts"), "study")
    for run_name, auroc in (("resnet18/random/drop-3", 0.71), ("resnet18/ssl/drop-3", 0.86)):
        run_id = tracker.start_run(run_name, {}, {"train": {"lr": 0.1}})
        metrics = {naming.TEST_HEADLINE: auroc, f"{naming.TEST_HEADLINE}_ci_low": auroc - 0.05}
        # the evaluate stage logs the run's metrics first, at the timestamp register reuses
        tracker.log_metrics(run_id, metrics, 128, timestamp_ms=1_000)
        tracker.flush(run_id)
        results = ModelResults(metrics, 128, 1_000, "synthetic-chexpert-32px-test", "d" * 32)
        tracker.log_ensemble(run_id, tiny_manifest(tmp_path, run_name),
                             naming.registered_model_name("study", run_name), {"family": "resnet18"},
                             model_name=naming.logged_model_name(run_name), description=f"{run_name} ensemble",
                             results=results)
        # one point per metric in the run's history: linking the model added none
        assert len(tracker.client.get_metric_history(run_id, naming.TEST_HEADLINE)) == 1

    found = tracker.client.search_logged_models(
        [tracker.experiment_id], filter_string=f"metrics.{naming.TEST_HEADLINE} > 0.8")
    assert [m.name for m in found] == ["resnet18-ssl-drop-3"]
    ranked = tracker.client.search_logged_models(
        [tracker.experiment_id], order_by=[{"field_name": f"metrics.{naming.TEST_HEADLINE}", "ascending": False}])
    assert [m.name for m in ranked] == ["resnet18-ssl-drop-3", "resnet18-random-drop-3"]
    best = ranked[0]
    (metric,) = [m for m in best.metrics if m.key == naming.TEST_HEADLINE]
    assert metric.value == 0.86 and metric.dataset_name == "synthetic-chexpert-32px-test"
    assert metric.dataset_digest == "d" * 32 and metric.model_id == best.model_id
    assert best.tags[NOTE] == "resnet18/ssl/drop-3 ensemble" and best.tags["family"] == "resnet18"
