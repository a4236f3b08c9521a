"""Stage pretrain: the initializer's pretraining step for one family (e.g. ssl: MoCo v2 on the training images),
once per (family, initializer) and shared by all its fine-tunes; a pass-through record for initializers without
one."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from chexops import naming, records
from chexops.config import Config
from chexops.naming import RunKey
from chexops.records import PretrainRecord
from chexops.stages.context import StageContext, data_hash, describe_data, require_prepared
from chexops.stages.experiment import child_tags, dataset_inputs, run_name, tracker_of


def run(ctx: StageContext) -> dict[str, Any]:
    """Pretrain the configuration's family for its initializer -> runs/pretrain/<family>__<initializer>/."""
    from chexops.components.registry import get_registry
    from chexops.tracking.presentation import pretrain_run_tags

    config, key = ctx.config, ctx.run
    registry = get_registry()
    spec, _ = registry.initializer(key.initializer)
    out = key.pretrain_dir(ctx.runs_dir)
    out.mkdir(parents=True, exist_ok=True)
    if spec.pretrain is None:
        passed = PretrainRecord(key.family, key.initializer,
                                pretraining=f"none: the {key.initializer} initializer has no pretraining step")
        passed.write(out)
        return passed.to_dict()
    require_prepared(config)
    tracker = tracker_of(ctx)
    name = naming.pretrain_run_name(key.family, key.initializer)
    data = describe_data(config)
    tags = pretrain_run_tags(key.family, key.initializer, spec.label or key.initializer, data, data_hash(config))
    params = {"pretrain": asdict(config.pretrain), "run": {"family": key.family, "initializer": key.initializer},
              "data": {"source": config.data.source, "image_size": config.data.image_size}}
    run_id = tracker.start_run(run_name(name), tags | child_tags(config, tracker), params,
                               run_id=records.read_run_record(out).get("run_id"))
    records.save_run_record(out, run_id=run_id, run=name)
    tracker.log_datasets(run_id, dataset_inputs(config, ("train",)))  # its images, labels unused

    def log(metrics: dict[str, float], step: int) -> None:
        tracker.log_metrics(run_id, metrics, step)
        tracker.flush(run_id)

    with tracker.run_guard(run_id):
        summary = spec.pretrain(registry.family(key.family), out, {"config": config, "progress": ctx.progress,
                                                                   "log": log})
        tracker.log_metrics(run_id, {"pretrain_seconds": summary["seconds"]}, summary["examples"])
        record = PretrainRecord(key.family, key.initializer, method=summary.get("method"), label=spec.label,
                                mlflow_run_id=run_id, data=data, data_hash=data_hash(config),
                                settings=asdict(config.pretrain),
                                details={k: v for k, v in summary.items() if k not in ("seconds", "method")})
        path = record.write(out)
        tracker.log_artifact(run_id, out / naming.BACKBONE_FILE, "backbone")
        tracker.log_artifact(run_id, path, "backbone")
    tracker.end_run(run_id)
    # the resumable state (both encoders, the queue, the optimiser) is several backbones' size: done, not kept
    (out / naming.STATE_FILE).unlink(missing_ok=True)
    return record.to_dict() | {"seconds": summary["seconds"]}


def pretrained_current(config: Config, key: RunKey) -> bool:
    """Whether the configuration's pretrain folder holds what the pretrain stage would make now (or nothing
    is needed): same initializer, family, settings and data."""
    from chexops.components.registry import get_registry

    spec, _ = get_registry().initializer(key.initializer)
    if spec.pretrain is None:
        return True
    folder = key.pretrain_dir(config.train.runs_dir)
    record = PretrainRecord.read_if_present(folder)
    return (record is not None and record.settings == asdict(config.pretrain)
            and record.data_hash == data_hash(config) and (folder / naming.BACKBONE_FILE).is_file())


def ensure_pretrained(ctx: StageContext) -> dict[str, Any] | None:
    """Run the pretrain stage for `chexops train` / `chexops worker` when its output is missing or stale; one
    process at a time per folder (workers of one family's configurations may reach it together)."""
    import fcntl

    if pretrained_current(ctx.config, ctx.run):
        return None
    folder = ctx.run.pretrain_dir(ctx.runs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # the second process waits, then finds the work done
        if pretrained_current(ctx.config, ctx.run):
            return None
        PretrainRecord.path(folder).unlink(missing_ok=True)
        state = folder / naming.STATE_FILE
        if state.is_file() and not (folder / naming.RUN_RECORD_FILE).is_file():
            state.unlink()
        return run(ctx)
