"""One configuration of the study through train -> evaluate -> register, recorded in one MLflow run.

The DVC stages and `chexops train` both call these functions. Each stage leaves files in the run's folder
(`runs/<slug>/`): what DVC tracks and what the next stage reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chexops.config import Config
from chexops.data.stages import data_hash
from chexops.evaluate.ensemble import evaluate_ensemble, write_eval
from chexops.runs import RunKey
from chexops.serving import read_manifest
from chexops.train.checkpoints import MANIFEST
from chexops.train.loop import STATE, Trainer, load_cached

RUN_FILE = "mlflow_run.json"


def open_tracker(config: Config) -> Any:
    """The study's MLflow experiment, described so the UI explains how its runs are named."""
    from chexops.config import grid_runs
    from chexops.tracking import Tracker

    tracker = Tracker.open(config.tracking.uri, config.tracking.artifacts, config.experiment)
    note = (f"CheXtransfer study `{config.study.name}`: {len(grid_runs(config))} configurations on "
            f"{config.data.source} data at {config.data.image_size} px. Runs are named family/initializer/truncation "
            "(e.g. densenet121/imagenet/drop-1); filter with tags.chexops.group, tags.chexops.initializer, "
            "tags.chexops.truncation; compare test_mean_auroc_6 (95% CI in *_ci_low/_ci_high); "
            f"`{config.study.name}/summary` holds the analysis report.")
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    if experiment.tags.get("mlflow.note.content") != note:
        try:
            tracker.client.set_experiment_tag(tracker.experiment_id, "mlflow.note.content", note)
        except Exception:  # noqa: BLE001 - a worker starting at the same moment set it first; a description only
            pass
    return tracker


def _run_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_run_record(run_dir: Path, **values: Any) -> None:
    (run_dir / RUN_FILE).write_text(json.dumps(_run_record(run_dir) | values, indent=2))


def train_stage(config: Config, key: RunKey, tracker: Any, lr: float | None = None, progress: bool = True,
                restart: bool = False) -> dict[str, Any]:
    """Train `key`, logging to its MLflow run (reopened when a killed run resumes)."""
    from chexops.tracking import run_tags

    run_dir = key.train_dir(config.train.runs_dir)
    if restart:
        for stale in (STATE, MANIFEST, RUN_FILE):
            (run_dir / stale).unlink(missing_ok=True)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    lr = lr or config.train.lr
    trainer = Trainer(config, key, run_dir, lr, config.train.max_examples, None, None, progress)
    rt = trainer.runtime
    tags = run_tags(trainer.report, str(rt.device), rt.precision, data_hash(config),
                    {"chexops.test_source": _test_source(config)})
    params = config.to_dict() | {"run": {"lr": lr, "family": key.family, "initializer": key.initializer,
                                         "depth": key.depth}}
    run_id = tracker.start_run(key.name, tags, params, run_id=_run_record(run_dir).get("run_id"))
    _save_run_record(run_dir, run_id=run_id, run=key.name)
    trainer.log = lambda metrics, step: (tracker.log_metrics(run_id, metrics, step), tracker.flush(run_id))
    with tracker.run_guard(run_id):
        result = trainer.fit()
    # the run's wall-clock duration also spans the later evaluate/register stages; this is training alone
    tracker.log_metrics(run_id, {"train_seconds": result.seconds,
                                 "train_examples_per_second": result.examples / max(result.seconds, 1e-9)},
                        result.examples)
    tracker.log_artifact(run_id, run_dir / MANIFEST)
    tracker.end_run(run_id)
    summary = {"run": key.name, "run_id": run_id, "examples": result.examples, "steps": result.steps,
               "seconds": round(result.seconds, 1), "examples_per_second": round(result.examples / result.seconds, 1)
               if result.seconds else None, "best_val_mean_auroc_6": result.best_val,
               "device": str(rt.device), "precision": rt.precision}
    (run_dir / "train.json").write_text(json.dumps(summary, indent=2))
    return summary


def _test_source(config: Config) -> str:
    path = Path(config.data.cache_dir) / "cache.json"
    return json.loads(path.read_text()).get("test_source", "unknown") if path.is_file() else "unknown"


def evaluate_stage(config: Config, key: RunKey, tracker: Any) -> dict[str, Any]:
    """Ensemble test metrics with CIs -> eval.json, predictions.csv, roc.png, and the same run in MLflow."""
    run_dir, out_dir = key.train_dir(config.train.runs_dir), key.eval_dir(config.train.runs_dir)
    manifest, run_id = read_manifest(run_dir / MANIFEST), _run_record(run_dir)["run_id"]
    test = load_cached(config, "test")
    e = config.eval
    payload = evaluate_ensemble(run_dir, out_dir, test.images, test.index, e.bootstrap, e.ci, e.seed)
    report = manifest["report"]
    payload = {"run": key.name, "family": key.family, "group": report["group"], "initializer": key.initializer,
               "truncation": report["truncation"], "depth": key.depth, "parameters": report["parameters"],
               "imagenet_top1": report["imagenet_top1"], "timm_tag": report["timm_tag"],
               "test_source": _test_source(config), "mlflow_run_id": run_id} | payload
    write_eval(out_dir, payload)
    tracker.start_run(key.name, {}, {}, run_id=run_id)
    with tracker.run_guard(run_id):
        best = payload["best_single"]
        metrics = payload["metrics"] | {"test_best_single_mean_auroc_6": best["test_mean_auroc_6"]}
        # an undefined AUROC (one class in the test split) is reported in eval.json, not logged as NaN
        tracker.log_metrics(run_id, {k: v for k, v in metrics.items() if v == v}, manifest.get("examples", 0))
        m = payload["metrics"]
        tracker.set_tags(run_id, {"chexops.test_auroc_6": f"{m['test_mean_auroc_6']:.3f} "
                                  f"[{m['test_mean_auroc_6_ci_low']:.3f}, {m['test_mean_auroc_6_ci_high']:.3f}]"})
        tracker.flush(run_id)
        for name in ("roc.png", "predictions.csv", "eval.json"):
            tracker.log_artifact(run_id, out_dir / name)
    tracker.end_run(run_id)
    return payload


def register_stage(config: Config, key: RunKey, tracker: Any) -> dict[str, Any]:
    """Log the ensemble as a pyfunc model, register a new version with alias `candidate`."""
    from chexops.tracking import registered_model_name

    run_dir = key.train_dir(config.train.runs_dir)
    run_id = _run_record(run_dir)["run_id"]
    payload = json.loads((key.eval_dir(config.train.runs_dir) / "eval.json").read_text())
    test = load_cached(config, "test")
    name = registered_model_name(config.experiment, key.name)
    tracker.start_run(key.name, {}, {}, run_id=run_id)
    with tracker.run_guard(run_id):
        defined = {k: v for k, v in payload["metrics"].items() if v is not None}
        version = tracker.log_ensemble(run_id, run_dir / MANIFEST, name, defined,
                                       input_example=test.images[:2].copy())
    tracker.end_run(run_id)
    record = {"registered_model": name, "version": int(version), "alias": "candidate", "run_id": run_id}
    path = key.registry_file(config.train.runs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    return record
