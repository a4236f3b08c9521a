"""Stage evaluate: the configuration's checkpoint ensemble on the test split -> runs/eval/<run>/ (eval.json,
predictions.csv, roc.png), runs/metrics/<run>.json for `dvc metrics show`, and the same on its MLflow run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chexops import naming, records
from chexops.config import Config, train_seed
from chexops.records import EvalRecord
from chexops.stages.context import StageContext, describe_data, describe_test_split, test_source
from chexops.stages.experiment import dataset_inputs, tracker_of


def test_split_composition(config: Config, index: Any) -> dict[str, Any]:
    """The evaluated test split: where it came from, what it holds, and every exam it lost on the way and why."""
    from chexops.data.splits import composition

    recorded = (records.cache_record(config.data.cache_dir) or {}).get("splits", {}).get("test", {})
    dropped = []
    if recorded.get("studies_no_frontal"):
        dropped.append({"studies": recorded["studies_no_frontal"],
                        "why": "no frontal image (data.frontal_only is true: the models see frontal views only)"})
    if recorded.get("studies_unreadable"):
        dropped.append({"studies": recorded["studies_unreadable"],
                        "why": "no readable image (data.on_bad_image is skip; the cache lists the files)"})
    return {"source": describe_test_split(config), **composition(index),
            "images_unreadable": int(recorded.get("skipped", 0)), "dropped": dropped}


def run(ctx: StageContext) -> dict[str, Any]:
    """Ensemble test metrics with CIs -> eval.json, predictions.csv, roc.png, and the same run in MLflow."""
    from chexops.components.registry import get_registry
    from chexops.data.cache import load_split
    from chexops.evaluate.ensemble import read_manifest
    from chexops.evaluate.scoring import score_ensemble

    config, key = ctx.config, ctx.run
    run_dir, out_dir = key.train_dir(ctx.runs_dir), key.eval_dir(ctx.runs_dir)
    manifest, run_id = read_manifest(run_dir / naming.MANIFEST_FILE), records.require_run_id(run_dir)
    test = load_split(Path(config.data.cache_dir), "test")
    e = config.eval
    scores = score_ensemble(run_dir, out_dir, test.images, test.index, e.bootstrap, e.ci, e.seed)
    report = manifest["report"]
    init_spec, _ = get_registry().initializer(key.initializer)
    family = get_registry().family(key.family)
    record = EvalRecord(
        run=key.name, family=key.family, group=report["group"], initializer=key.initializer,
        test_split=test_split_composition(config, test.index), truncation=report["truncation"],
        truncation_strategy=key.strategy, depth=key.depth, parameters=report["parameters"],
        imagenet_top1=report["imagenet_top1"], timm_tag=report["timm_tag"], reference_top1=family.reference_top1,
        reference_top1_source=family.reference_top1_source, test_source=test_source(config),
        data=describe_data(config), label_fraction=key.fraction, initializer_pretrained=init_spec.pretrained,
        initializer_label=init_spec.label or key.initializer, mlflow_run_id=run_id,
        train_seed=train_seed(config, key), seed_repeat=key.seed is not None, **vars(scores))
    eval_file = record.write(out_dir)
    write_run_metrics(key.metrics_file(ctx.runs_dir), record)
    _log_evaluation(ctx, record, run_id, out_dir, eval_file, manifest.get("examples", 0))
    return record.to_dict()


def _log_evaluation(ctx: StageContext, record: EvalRecord, run_id: str, out_dir: Path, eval_file: Path,
                    examples: int) -> None:
    from chexops.evaluate.metrics import headline_text
    from chexops.tracking.presentation import evaluation_tags

    tracker = tracker_of(ctx)
    tracker.start_run(record.run, {}, {}, run_id=run_id, keep_duration=True)
    with tracker.run_guard(run_id):
        tracker.log_datasets(run_id, dataset_inputs(ctx.config, ("test",)))
        tracker.log_metrics(run_id, test_metrics(record), examples, timestamp_ms=logged_at(eval_file))
        tracker.set_tags(run_id, evaluation_tags(record, headline_text(record.metrics)))
        tracker.flush(run_id)
        for path in (out_dir / naming.ROC_FILE, out_dir / naming.PREDICTIONS_FILE, eval_file):
            tracker.log_artifact(run_id, path)
    tracker.end_run(run_id)


def test_metrics(record: EvalRecord) -> dict[str, float]:
    """The test metrics a run (and its logged model) carries; an undefined AUROC (one class in the test split:
    NaN, null once eval.json is read back) is reported in eval.json, not logged."""
    headline = record.headline_metric.removeprefix("test_")
    metrics = record.metrics | {
        "test_best_single_" + headline: record.best_single["test_mean_auroc"],
        "test_usable_replicates": record.bootstrap["usable_replicates"][headline]}
    return {k: v for k, v in metrics.items() if v is not None and v == v}


def logged_at(eval_file: Path) -> int:
    """The test metrics' MLflow timestamp (ms): when eval.json was written, so register's linking of the same
    values to the logged model adds no second point to the run's history."""
    return int(Path(eval_file).stat().st_mtime * 1000)


def write_run_metrics(path: Path, record: EvalRecord) -> None:
    """A few columns per run for `dvc metrics show` / `dvc exp show`: the test AUROC-6 (or, when a study task
    was undefined, the mean over the tasks that were, under its own name), its CI, the size."""
    m, key = record.metrics, record.headline_metric
    name = key.removeprefix("test_mean_").replace("auroc_", "test_auroc_")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: records.rounded(m[key]), "ci_low": records.rounded(m[f"{key}_ci_low"]),
                                "ci_high": records.rounded(m[f"{key}_ci_high"]),
                                "params_M": round(record.parameters / 1e6, 2)}, indent=2))

