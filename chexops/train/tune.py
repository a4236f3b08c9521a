"""Optional learning-rate search with Optuna: log-uniform lr, median pruning on validation AUROC, a SQLite
study that resumes when interrupted, each trial a nested MLflow run under one parent tuning run.

The tune stage (chexops.stages.tune) calls `search_lr` when `tune.enabled`, and passes `train.lr` through
otherwise, so the pipeline's shape never changes.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from chexops.config import Config
from chexops.naming import BEST_RANKING_METRIC, RunKey
from chexops.tracking import tags as tag


def _study(config: Config, key: RunKey) -> Any:
    import optuna

    storage_path = Path(config.tune.storage)
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        study_name=key.optuna_study_name(config.experiment),
        storage=f"sqlite:///{storage_path}",
        direction="maximize",
        load_if_exists=True,  # an interrupted search continues where it stopped
        sampler=optuna.samplers.TPESampler(seed=config.study.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )


def _objective(config: Config, key: RunKey, tracker: Any, parent_id: str, progress: bool) -> Any:
    import optuna

    from chexops.train.loop import train_run

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", config.tune.lr_min, config.tune.lr_max, log=True)
        run_id = tracker.start_run(key.trial_run_name(trial.number), {tag.PARENT: parent_id,
                                   tag.TRIAL: str(trial.number)}, {"lr": lr})

        def report(score: float, examples: int) -> None:
            trial.report(score, examples)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation AUROC {score:.3f} below the median at {examples} examples")

        def log(metrics: dict[str, float], step: int) -> None:
            tracker.log_metrics(run_id, metrics, step)
            tracker.flush(run_id)

        trial_dir = key.tune_trial_dir(config.train.runs_dir, trial.number)
        shutil.rmtree(trial_dir, ignore_errors=True)  # a trial re-asked after a crash starts clean
        try:
            result = train_run(config, key, lr=lr, max_examples=config.tune.examples, log=log, on_eval=report,
                               progress=progress, run_dir=trial_dir)
        except optuna.TrialPruned:
            tracker.end_run(run_id, status="KILLED")
            raise
        except Exception as exc:
            tracker.end_run(run_id, status="FAILED", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            shutil.rmtree(trial_dir, ignore_errors=True)
        tracker.end_run(run_id)
        return result.best_val

    return objective


def search_lr(config: Config, key: RunKey, tracker: Any, progress: bool = True) -> dict[str, Any]:
    """Search the learning rate of `key` on validation; the record the tune stage writes to runs/tune/<run>.json."""
    import optuna

    study = _study(config, key)
    parent_id = tracker.start_run(key.tune_run_name, {tag.STAGE: "tune"},
                                  {"tune": vars(config.tune), "run": key.name})
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    remaining = max(config.tune.trials - len(done), 0)
    with tracker.run_guard(parent_id):
        study.optimize(_objective(config, key, tracker, parent_id, progress), n_trials=remaining,
                       catch=(), gc_after_trial=True)
        best = study.best_trial
        tracker.log_metrics(parent_id, {BEST_RANKING_METRIC: best.value, "best_lr": best.params["lr"]}, 0)
        tracker.flush(parent_id)
    tracker.end_run(parent_id)
    return {"run": key.name, "lr": best.params["lr"], "tuned": True, BEST_RANKING_METRIC: best.value,
            "trials": [{"number": t.number, "lr": t.params.get("lr"), "state": t.state.name, "value": t.value}
                       for t in study.trials]}
