"""One configuration end to end (tune's choice -> train -> evaluate -> register), as `chexops train` and
`chexops worker` run it; `dvc repro` runs the same stage functions as separate stages."""

from __future__ import annotations

from typing import Any

from chexops import naming, records
from chexops.records import EvalRecord
from chexops.stages import evaluate, register, train
from chexops.stages.context import StageContext, require_prepared
from chexops.stages.pretrain import ensure_pretrained
from chexops.stages.tune import chosen_lr


def run_configuration(ctx: StageContext, register_model: bool = True) -> dict[str, Any]:
    """train -> evaluate -> register one configuration.

    Training resumes a run folder left by `dvc repro` or a killed run; a configuration whose run is already
    trained to its budget, evaluated and registered is left as it is (a no-op), unless `ctx.restart`.
    """
    require_prepared(ctx.config)  # a run trained on a cache made for other settings is not up to date either
    ensure_pretrained(ctx)
    repeat = ctx.run.seed is not None  # a grid.seeds repeat measures training variance: evaluated, not registered
    done = None if ctx.restart or repeat else register.registered(ctx)
    eval_dir = ctx.run.eval_dir(ctx.runs_dir)
    if (done or (repeat and not ctx.restart)) and (eval_dir / naming.EVAL_FILE).is_file() and trained_to_budget(ctx):
        trained = records.TrainSummary.read(ctx.run.train_dir(ctx.runs_dir))
        record = EvalRecord.read(eval_dir)
        return {"run": ctx.run.name, "up_to_date": True, "mlflow_run_id": done.run_id if done else record.mlflow_run_id,
                "metrics": record.metrics, naming.BEST_RANKING_METRIC: trained.best_val_score} | (
                    {"registered_version": done.version} if done else {})
    summary = train.run(ctx)
    payload = evaluate.run(ctx)
    result = {"run": ctx.run.name, "up_to_date": False, "mlflow_run_id": summary["run_id"], "train": summary,
              "metrics": payload["metrics"], "best_single": payload["best_single"],
              naming.BEST_RANKING_METRIC: summary[naming.BEST_RANKING_METRIC]}
    if register_model and not repeat:
        done = register.registered(ctx)  # a worker that died after registering already did it
        made = vars(done) | {"unchanged": False} if done else register.run(ctx)
        result |= {"registered_version": made["version"], "registered_unchanged": made["unchanged"],
                   "registered_alias": made["alias"]}
    return result


def trained_to_budget(ctx: StageContext) -> bool:
    """Whether the saved state has trained the whole budget under the current settings (no training left)."""
    from chexops.train.loop import saved_state_complete

    lr = ctx.lr or chosen_lr(ctx.config, ctx.run)  # an --lr override is another run, never "up to date"
    return saved_state_complete(ctx.config, ctx.run, ctx.run.train_dir(ctx.runs_dir), lr)
