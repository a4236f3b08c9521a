"""Tracker against a real SQLite MLflow store: runs, params, batched metrics, failures, registry, aliases."""

from __future__ import annotations

import shutil
import socket
import subprocess
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pytest
from fixtures.ensembles import make_manifest
from PIL import Image

from chexops import naming
from chexops.data.labels import OBSERVATIONS
from chexops.errors import TrackingError
from chexops.evaluate import ensemble as serving
from chexops.tracking import provenance
from chexops.tracking import runs as tracking
from chexops.tracking.runs import Tracker
from chexops.tracking.tags import PARENT

REPORT = {"family": "densenet121", "group": "DenseNet", "timm_tag": "densenet121.tv_in1k", "imagenet_top1": 74.4,
          "plugin": "chexops", "plugin_version": "0.1.0", "initializer": "random", "weights_loaded": False,
          "weights_source": None, "truncation": "full", "parameters": 7_000_000}


@pytest.fixture
def store(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def tracker(store: str, tmp_path: Path) -> Tracker:
    return Tracker.open(store, str(tmp_path / "mlartifacts"), "study")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_open_anchors_relative_sqlite_and_puts_artifacts_beside_it(
        tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    tracker = Tracker.open("sqlite:///mlflow.db", "mlartifacts", "study")
    assert tracker.uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.name == "study"
    assert experiment.artifact_location == (tmp_path / "mlartifacts" / "study").as_uri()
    assert Tracker.open("sqlite:///mlflow.db", "mlartifacts", "study").experiment_id == tracker.experiment_id
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(empty_store, other / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other / 'mlflow.db'}")
    assert Tracker.open("sqlite:///mlflow.db", "mlartifacts", "study").uri == f"sqlite:///{other / 'mlflow.db'}"


def test_params_tags_and_metrics_arrive_in_few_batches(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, int]] = []
    real = tracker.client.log_batch

    def counting(run_id: str, metrics: list = (), params: list = (), tags: list = ()) -> None:
        calls.append((len(metrics), len(params), len(tags)))
        return real(run_id, metrics=metrics, params=params, tags=tags)

    monkeypatch.setattr(tracker.client, "log_batch", counting)
    params = {"train": {"lr": 0.001, "epochs": 3}, "grid": {f"k{i}": i for i in range(148)}, "seed": None}
    run_id = tracker.start_run("densenet121/random/full", {"chexops.family": "densenet121"}, params)
    assert [c[1] for c in calls] == [100, 51]  # 151 params: MLflow takes 100 per call
    for step in range(30):
        tracker.log_metrics(run_id, {f"val_auroc_{k}": step / 100 + k for k in range(40)}, step=step * 16)
    assert tracker.client.get_metric_history(run_id, "val_auroc_0") == []  # buffered, not sent yet
    tracker.flush(run_id)
    assert [c[0] for c in calls[2:]] == [1000, 200]
    assert tracker.pending(run_id) == 0
    with pytest.raises(TrackingError, match="metrics must be numbers"):
        tracker.log_metrics(run_id, {"auroc": "high"}, step=1)
    assert tracker.pending(run_id) == 0  # nothing half-buffered
    run = tracker.client.get_run(run_id)
    assert run.info.run_name == "densenet121/random/full"
    assert run.data.params["train.lr"] == "0.001" and run.data.params["seed"] == "None"
    assert run.data.tags["chexops.family"] == "densenet121"
    history = tracker.client.get_metric_history(run_id, "val_auroc_7")
    assert [(m.step, m.value) for m in history] == [(s * 16, pytest.approx(s / 100 + 7)) for s in range(30)]


def test_a_run_reopens_with_its_params_and_refuses_new_ones(tracker: Tracker) -> None:
    run_id = tracker.start_run("a/b/c", {}, {"train": {"lr": 0.1}})
    tracker.end_run(run_id)
    assert tracker.client.get_run(run_id).info.status == "FINISHED"
    assert tracker.start_run("a/b/c", {"chexops.resumed": "1"}, {"train": {"lr": 0.1}}, run_id=run_id) == run_id
    run = tracker.client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags["chexops.resumed"] == "1"
    with pytest.raises(TrackingError, match=r"different params \{'train.lr': \('0.1', '0.2'\)\}"):
        tracker.start_run("a/b/c", {}, {"train": {"lr": 0.2}}, run_id=run_id)


def test_guard_marks_a_failing_run_failed_with_its_error(tracker: Tracker) -> None:
    run_id = tracker.start_run("a/b/c", {}, {})
    tracker.log_metrics(run_id, {"loss": 0.5}, step=1)
    with pytest.raises(ValueError, match="boom"):
        with tracker.run_guard(run_id):
            raise ValueError("boom " * 3000)
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("ValueError: boom boom")
    assert len(run.data.tags["error"]) <= tracking.MAX_TAG_LENGTH and run.data.tags["error"].endswith("[truncated]")
    assert run.data.metrics == {"loss": 0.5}  # what was buffered before the failure is kept
    ok = tracker.start_run("a/b/d", {}, {})
    with tracker.run_guard(ok):
        pass
    assert tracker.client.get_run(ok).info.status == "RUNNING"
    with pytest.raises(TrackingError, match="status must be one of"):
        tracker.end_run(ok, "DONE")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unopenable_stores_raise_tracking_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(TrackingError, match=f"sqlite:///{missing}/mlflow.db.*{missing} does not exist"):
        Tracker.open(f"sqlite:///{missing}/mlflow.db", str(tmp_path), "study")
    assert not missing.exists()  # no store was started somewhere unintended
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(TrackingError, match="does not exist"):
        Tracker.open(f"sqlite:///{tmp_path / 'file'}/mlflow.db", str(tmp_path), "study")
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(TrackingError, match=f"cannot open tracking store {uri}.*Start the tracking server"):
        Tracker.open(uri, str(tmp_path), "study")


def test_run_tags_record_code_data_and_environment(tmp_path: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    assert provenance.run_tags(REPORT, "cpu", "fp32", "d" * 32, cwd=tmp_path)["chexops.git_commit"] == "unknown"
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "a.txt").write_text("1")
    subprocess.run([*git, "add", "a.txt"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], cwd=tmp_path, check=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    tags = provenance.run_tags({**REPORT, "weights_source": "/w/d.pth"}, "cuda:0", "bf16", "abc123",
                             extra={"group_key": "g", "chexops.stage": "train"}, cwd=tmp_path)
    assert tags["chexops.git_commit"] == tags["mlflow.source.git.commit"] == sha
    assert {k: tags[k] for k in ("chexops.data_hash", "chexops.timm_tag", "chexops.device", "chexops.precision",
                                 "chexops.family", "chexops.initializer", "chexops.truncation", "chexops.group",
                                 "chexops.plugin", "chexops.weights_source", "chexops.group_key",
                                 "chexops.stage")} == {
        "chexops.data_hash": "abc123", "chexops.timm_tag": "densenet121.tv_in1k", "chexops.device": "cuda:0",
        "chexops.precision": "bf16", "chexops.family": "densenet121", "chexops.initializer": "random",
        "chexops.truncation": "full", "chexops.group": "DenseNet", "chexops.plugin": "chexops",
        "chexops.weights_source": "/w/d.pth", "chexops.group_key": "g", "chexops.stage": "train"}
    assert tags["chexops.version"] == provenance.chexops_version() != "unknown"
    assert all(k.startswith(("chexops.", "mlflow.")) for k in tags)
    assert "densenet121 (DenseNet), random init, full; cuda:0 bf16" in tags["mlflow.note.content"]
    assert "\n" not in tags["mlflow.note.content"]
    (tmp_path / "a.txt").write_text("2")
    dirty = provenance.run_tags(REPORT, "cpu", "fp32", "abc", cwd=tmp_path)
    assert dirty["chexops.git_commit"] == f"{sha}-dirty" and "mlflow.source.git.commit" not in dirty


def test_registered_model_names_are_valid_for_mlflow() -> None:
    assert naming.registered_model_name("chextransfer", "densenet121/random/full") == \
        "chextransfer.densenet121.random.full"
    name = naming.registered_model_name("my study", "resnet18/checkpoint:/x/y.pt/drop-2")
    assert name == "my-study.resnet18.checkpoint.x.y.pt.drop-2"
    with pytest.raises(TrackingError, match="empty"):
        naming.registered_model_name("study", "a//b")


def test_log_ensemble_registers_a_candidate_that_predicts_like_the_manifest(
        tracker: Tracker, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    manifest = make_manifest(tmp_path)
    name = naming.registered_model_name("study", "resnet18/random/drop-3")
    uri_before = mlflow.get_tracking_uri()
    run_id = tracker.start_run("resnet18/random/drop-3", {}, {"train": {"lr": 0.1}})
    example = np.full((1, 20, 24), 7, dtype=np.uint8)
    model_name = naming.logged_model_name("resnet18/random/drop-3")
    capfd.readouterr()
    version = tracker.log_ensemble(run_id, manifest, name, {"test_mean_auroc_6": 0.71, "test_ci_low": 0.6},
                                   example, model_name=model_name, description="resnet18, random init, drop-3")
    assert version == 1
    # models-from-code: the registry holds code and checkpoints, no CloudPickle of the model object (MLflow warns
    # on stderr when it pickles one); and no artifact progress bars when stderr is not a terminal
    printed = capfd.readouterr().err
    assert "CloudPickle" not in printed and "Downloading artifacts" not in printed, printed
    assert tracker.client.get_model_version(name, "1").description == "resnet18, random init, drop-3"
    assert tracker.client.get_registered_model(name).description == "resnet18, random init, drop-3"
    assert mlflow.get_tracking_uri() == uri_before  # the store was only borrowed for the call
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = tracker.log_ensemble(run_id, manifest, name, {"test_mean_auroc_6": 0.72}, None,
                                     model_name=model_name)
    # without an example (as the register stage logs): MLflow's advice to add one is declined on purpose
    assert not [w for w in caught if "input example" in str(w.message)]
    assert again == 2
    candidate = tracker.client.get_model_version_by_alias(name, "candidate")
    assert str(candidate.version) == "2" and candidate.run_id == run_id
    assert tracker.client.get_model_version(name, "1").tags == {"test_mean_auroc_6": "0.71", "test_ci_low": "0.6"}
    assert candidate.source.startswith("models:/")
    logged = tracker.client.get_logged_model(candidate.source.removeprefix("models:/"))
    assert logged.model_id in {o.model_id for o in tracker.client.get_run(run_id).outputs.model_outputs}
    assert logged.experiment_id == tracker.experiment_id and logged.name == "resnet18-random-drop-3"
    assert logged.artifact_location.startswith((tmp_path / "mlartifacts" / "study").as_uri())

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    model = mlflow.pyfunc.load_model(f"models:/{name}@candidate")
    x = np.random.default_rng(0).integers(0, 256, size=(6, 32, 32), dtype=np.uint8)
    want = serving.predict_manifest(manifest, x)
    got = model.predict(x)
    assert list(got.columns) == list(OBSERVATIONS)
    np.testing.assert_allclose(got.to_numpy(), want, atol=1e-6)
    paths = []
    for i, img in enumerate(x):
        paths.append(str(tmp_path / f"x{i}.png"))
        Image.fromarray(img).save(paths[-1])
    np.testing.assert_allclose(model.predict(np.array(paths, dtype=object)).to_numpy(), want, atol=1e-6)
    # the other documented forms go to the model itself, past MLflow's uint8 (N, H, W) schema check
    np.testing.assert_allclose(model.unwrap_python_model().predict(None, paths).to_numpy(), want, atol=1e-6)



def test_a_copied_project_is_refused_until_its_store_is_relocated(
        tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chexops.tracking.relocate import relocate

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first, copy = tmp_path / "first", tmp_path / "copy"
    first.mkdir()
    shutil.copy(empty_store, first / "mlflow.db")
    tracker = Tracker.open(f"sqlite:///{first / 'mlflow.db'}", str(first / "mlartifacts"), "study")
    run_id = tracker.start_run("resnet18/random/full", {}, {})
    (tmp_path / "a.txt").write_text("1")
    tracker.log_artifact(run_id, tmp_path / "a.txt")
    shutil.copytree(first, copy)
    old, new = ((d / "mlartifacts" / "study").as_uri() for d in (first, copy))
    with pytest.raises(TrackingError, match=r"copied or moved.*chexops registry relocate"):
        Tracker.open(f"sqlite:///{copy / 'mlflow.db'}", str(copy / "mlartifacts"), "study")
    assert relocate(copy / "mlflow.db", old, new) >= 2  # the experiment and its run
    moved = Tracker.open(f"sqlite:///{copy / 'mlflow.db'}", str(copy / "mlartifacts"), "study")
    assert moved.client.get_run(run_id).info.artifact_uri.startswith(new)
    assert [a.path for a in moved.client.list_artifacts(run_id)] == ["a.txt"]
    # the original project still reads its own folder
    assert Tracker.open(f"sqlite:///{first / 'mlflow.db'}", str(first / "mlartifacts"), "study").client.get_run(
        run_id).info.artifact_uri.startswith(old)


def test_study_run_is_found_again_and_children_name_it(tracker: Tracker) -> None:
    parent = tracker.study_run("demo/summary", "demo", {"chexops.stage": "study"})
    assert tracker.study_run("demo/summary", "demo", {}) == parent  # a second stage finds the same one
    assert tracker.client.get_run(parent).info.status == "FINISHED"
    child = tracker.start_run("resnet18/random/full", {PARENT: parent}, {})
    found = tracker.client.search_runs([tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert [r.info.run_id for r in found] == [child]
    assert tracker.study_run("other/summary", "other", {}) != parent  # another study, another parent


def test_dataset_inputs_carry_name_digest_source_and_sizes(tracker: Tracker) -> None:
    import json

    run_id = tracker.start_run("resnet18/random/full", {}, {})
    tracker.log_datasets(run_id, [{"name": "synthetic-chexpert-64px-train", "digest": "a" * 32 + ".dir",
                                   "source": "data/cache/train.npy", "context": "train",
                                   "profile": {"images": 540, "patients": 540}}])
    (logged,) = tracker.client.get_run(run_id).inputs.dataset_inputs
    assert logged.dataset.name == "synthetic-chexpert-64px-train" and logged.dataset.digest == "a" * 32 + ".dir"
    assert json.loads(logged.dataset.profile) == {"images": 540, "patients": 540}
    assert json.loads(logged.dataset.source) == {"uri": "data/cache/train.npy"}
    assert {t.key: t.value for t in logged.tags} == {"mlflow.data.context": "train"}


def test_a_dataset_input_that_lost_an_insert_race_is_written_again(store: str, tmp_path: Path) -> None:
    """Two workers starting together log the same dataset: PostgreSQL refuses the second insert of its row with a
    unique-key violation, which MLflow answers as BAD_REQUEST (not retried by its client). Writing again reuses
    the row the other worker inserted."""
    from mlflow.exceptions import MlflowException

    ours, other = (Tracker.open(store, str(tmp_path / "mlartifacts"), "study") for _ in range(2))
    data = [{"name": "synthetic-chexpert-64px-train", "digest": "b" * 32, "source": "data/cache/train.npy",
             "context": "train", "profile": {"images": 540}}]
    run_id = ours.start_run("resnet18/random/full", {}, {})
    other_run = other.start_run("resnet18/random/drop-1", {}, {})
    real, calls = ours.client.log_inputs, []

    def racing(rid, datasets=None, **kwargs):
        calls.append(rid)
        if len(calls) == 1:  # the other worker's insert lands between our read and our insert
            other.log_datasets(other_run, data)
            raise MlflowException('(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint '
                                  '"dataset_pk"', error_code="BAD_REQUEST")
        return real(rid, datasets=datasets, **kwargs)

    ours.client.log_inputs = racing
    ours.log_datasets(run_id, data)
    assert calls == [run_id, run_id]
    for rid in (run_id, other_run):
        (logged,) = ours.client.get_run(rid).inputs.dataset_inputs
        assert logged.dataset.digest == "b" * 32

    def refused(rid, datasets=None, **kwargs):  # any other refusal is not retried
        calls.append(rid)
        raise MlflowException("INVALID_PARAMETER_VALUE: bad digest", error_code="INVALID_PARAMETER_VALUE")

    ours.client.log_inputs, calls[:] = refused, []
    with pytest.raises(TrackingError, match="bad digest"):
        ours.log_datasets(run_id, data)
    assert calls == [run_id]
