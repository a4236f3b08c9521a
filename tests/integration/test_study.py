"""One configuration through train -> evaluate -> register, recorded in one MLflow run."""

from __future__ import annotations

import json

import pytest
from fixtures.training import KEY, make_config
from mlflow import MlflowClient

from chexops.evaluate.metrics import headline_key
from chexops.stages import evaluate, register, train
from chexops.stages.context import StageContext
from chexops.tracking.runs import Tracker
from chexops.train import loop

TAGS = ("chexops.git_commit", "chexops.data_hash", "chexops.timm_tag", "chexops.plugin", "chexops.plugin_version",
        "chexops.device", "chexops.precision", "chexops.version", "chexops.test_source")


@pytest.fixture
def tracker(tmp_path):
    return Tracker.open(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "mlartifacts"), "test-study")


def test_run_is_trained_evaluated_registered_and_recorded(prepared, tmp_path, tracker):  # noqa: F811
    config = make_config(prepared, runs_dir=str(tmp_path / "runs"))
    ctx = StageContext(config, KEY, progress=False, tracker=tracker)
    summary, payload, record = train.run(ctx), evaluate.run(ctx), register.run(ctx)
    client = MlflowClient(tracker.uri)
    run = client.get_run(summary["run_id"])
    assert run.info.run_name == "resnet18/random/drop-3" and run.info.status == "FINISHED"
    assert all(run.data.tags.get(t) for t in TAGS), {t: run.data.tags.get(t) for t in TAGS}
    assert run.data.tags["chexops.timm_tag"] == "resnet18.tv_in1k"
    assert run.data.params["lr"] == "0.001" and run.data.params["family"] == "resnet18"
    assert run.data.params["truncation"] == "drop-3" and run.data.params["parameters_M"] == str(round(
        payload["parameters"] / 1e6, 2))
    history = client.get_metric_history(run.info.run_id, headline_key(run.data.metrics, "val"))
    assert len(history) >= 4 and [m.step for m in history] == sorted(m.step for m in history)
    assert history[-1].step == summary["examples"]  # logged against examples seen
    assert client.get_metric_history(run.info.run_id, "train_loss")
    m, key = run.data.metrics, headline_key(run.data.metrics)
    assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"roc.png", "predictions.csv", "eval.json", "manifest.json"} <= artifacts
    version = client.get_model_version_by_alias(record["registered_model"], "candidate")
    assert int(version.version) == record["version"] and version.run_id == run.info.run_id
    assert float(version.tags[key]) == pytest.approx(m[key])
    # the ensemble is not worse than its best single checkpoint beyond noise
    ensemble, single = payload["metrics"][key], payload["best_single"]["test_mean_auroc"]
    print(f"ensemble {ensemble:.3f} vs best-validation single checkpoint {single:.3f}")
    assert ensemble >= single - 0.05


def test_failed_run_is_marked_failed_and_resumes(prepared, tmp_path, tracker, monkeypatch):  # noqa: F811
    config = make_config(prepared, runs_dir=str(tmp_path / "runs"))
    real_step, calls = loop.Trainer._step, {"n": 0}

    def failing_step(self, batch):
        calls["n"] += 1
        if calls["n"] == 20:
            raise RuntimeError("CUDA error: device-side assert (simulated)")
        return real_step(self, batch)

    monkeypatch.setattr(loop.Trainer, "_step", failing_step)
    with pytest.raises(RuntimeError, match="simulated"):
        train.run(StageContext(config, KEY, progress=False, tracker=tracker))
    run_dir = KEY.train_dir(config.train.runs_dir)
    run_id = json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]
    run = MlflowClient(tracker.uri).get_run(run_id)
    assert run.info.status == "FAILED" and "simulated" in run.data.tags["error"]
    kept = json.loads((run_dir / "manifest.json").read_text())["checkpoints"]
    assert kept and all((run_dir / c["file"]).is_file() for c in kept)  # nothing already written is lost
    assert (run_dir / "state.pt").is_file()
    monkeypatch.setattr(loop.Trainer, "_step", real_step)
    summary = train.run(StageContext(config, KEY, progress=False, tracker=tracker))
    assert summary["run_id"] == run_id
    assert MlflowClient(tracker.uri).get_run(run_id).info.status == "FINISHED"
