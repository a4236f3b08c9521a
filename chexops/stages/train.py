"""Stage train: one configuration trained to its budget, logging to its MLflow run (reopened when a killed run
resumes) -> runs/train/<run>/ (top-K checkpoints, manifest.json, train.json, mlflow_run.json)."""

from __future__ import annotations

from typing import Any

from chexops import naming, records
from chexops.config import Config, train_seed
from chexops.naming import RunKey
from chexops.stages.context import (
    StageContext,
    data_hash,
    describe_data,
    describe_test_split,
    require_prepared,
)
from chexops.stages.experiment import child_tags, dataset_inputs, run_name, tracker_of
from chexops.stages.tune import chosen_lr


def run_params(config: Config, key: RunKey, lr: float, report: dict[str, Any]) -> dict[str, Any]:
    """The params of one configuration's run: what makes it this configuration (family, initializer,
    truncation, label fraction, size, ImageNet top-1) and its training settings; the grid and study-wide
    settings are on the study run. `report` is the built model's BuildReport.to_dict()."""
    t, top1 = config.train, report.get("imagenet_top1")
    return {"family": key.family, "initializer": key.initializer,
            "truncation": naming.truncation_label(key.depth, key.strategy), "label_fraction": key.fraction,
            "parameters_M": round(report["parameters"] / 1e6, 2), "imagenet_top1": "n/a" if top1 is None else top1,
            "lr": lr, "batch_size": t.batch_size, "epochs": t.epochs, "max_examples": t.max_examples,
            "eval_every": t.eval_every, "top_k": t.top_k, "seed": train_seed(config, key),
            "image_size": config.data.image_size, "label_policy": config.data.label_policy}


def run(ctx: StageContext) -> dict[str, Any]:
    """Train the configuration, logging to its MLflow run (reopened when a killed run resumes)."""
    from chexops.tracking import tags as tag
    from chexops.tracking.provenance import run_tags
    from chexops.train.loop import Trainer

    config, key = ctx.config, ctx.run
    require_prepared(config)
    run_dir = key.train_dir(ctx.runs_dir)
    if ctx.restart:
        for stale in (naming.STATE_FILE, naming.MANIFEST_FILE, naming.RUN_RECORD_FILE):
            (run_dir / stale).unlink(missing_ok=True)
    lr = ctx.lr or chosen_lr(config, key)
    trainer = Trainer(config, key, lr=lr, run_dir=run_dir, progress=ctx.progress)
    rt, tracker = trainer.runtime, tracker_of(ctx)
    tags = run_tags(trainer.report, str(rt.device), rt.precision, data_hash(config),
                    {tag.TEST_SOURCE: describe_test_split(config), tag.DATA: describe_data(config),
                     tag.LABEL_FRACTION: key.fraction,
                     tag.SELECT_METRIC: naming.select_metric_key(config.train.select_metric)})
    tags |= child_tags(config, tracker)
    run_id = tracker.start_run(run_name(key.name), tags, run_params(config, key, lr, trainer.report),
                               run_id=records.read_run_record(run_dir).get("run_id"))
    records.save_run_record(run_dir, run_id=run_id, run=key.name)
    before = (tracker.metric_at(run_id, "train_seconds", trainer.resume_examples) or 0.0
              if trainer.resume_examples else 0.0)
    def log(metrics: dict[str, float], step: int) -> None:
        tracker.log_metrics(run_id, metrics, step)
        tracker.flush(run_id)

    with tracker.run_guard(run_id):
        tracker.log_datasets(run_id, dataset_inputs(config, ("train", "valid")))
        with tracker.system_metrics(run_id):
            result = trainer.fit(log=log, seconds_before=before)
    # the run's wall-clock duration also spans the later evaluate/register stages; this is training alone, over
    # every process that trained it (a resumed run adds its time to the time logged at the state it resumed from)
    speed = result.examples / result.seconds if result.seconds else None
    tracker.log_metrics(run_id, {"train_seconds": result.seconds} | ({"train_examples_per_second": speed}
                                                                     if speed else {}), result.examples)
    tracker.log_artifact(run_id, run_dir / naming.MANIFEST_FILE)
    tracker.end_run(run_id)
    summary = records.TrainSummary.read(run_dir)
    return {"run": key.name, "examples": summary.examples, "steps": summary.steps,
            naming.BEST_RANKING_METRIC: summary.best_val_score, "select_metric": summary.select_metric,
            "run_id": run_id, "seconds": round(result.seconds, 1),
            "examples_per_second": round(speed, 1) if speed else None,
            "device": str(rt.device), "precision": rt.precision}
