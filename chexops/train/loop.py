"""One training run under the CheXtransfer protocol: Adam, masked BCE, validation every `eval_every`
examples and at each epoch's end, the top-K checkpoints kept, resumable from any kill.

mlflow is not imported here: metrics go to a `log(metrics, step)` callback, so the core runs anywhere torch does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from chexops.components.registry import get_registry
from chexops.config import Config, train_seed
from chexops.data.cache import CachedSplit, load_split
from chexops.data.loader import BatchLoader, on_device_ahead
from chexops.data.splits import label_fraction_rows
from chexops.errors import ConfigError, TrainingStopped
from chexops.evaluate.inference import binary_truth, predict_probs
from chexops.evaluate.metrics import auroc_metrics, exam_level
from chexops.models.build import build_model
from chexops.naming import (
    BEST_RANKING_METRIC,
    COMPETITION_MEAN,
    KEEP_STATE_ENV,
    STATE_FILE,
    RunKey,
    select_metric_key,
)
from chexops.records import PretrainRecord, TrainSummary
from chexops.train import compile as step_compile
from chexops.train import distributed, interrupt
from chexops.train.checkpoints import (
    TopKKeeper,
    atomic_save,
    read_state,
    remove_stale_temporaries,
    verify_checkpoints,
)
from chexops.train.distributed import ShardBatch, ShardedLoader
from chexops.train.runtime import Runtime, select_runtime
from chexops.train.step import train_step

log = logging.getLogger(__name__)

LogFn = Callable[[dict[str, float], int], None]


@dataclass
class TrainResult:
    run_dir: Path
    best_val: float
    examples: int
    steps: int
    seconds: float
    report: dict[str, Any]
    runtime: Runtime


@dataclass
class Progress:
    """Where a run is; saved with the model so a killed run resumes exactly here."""

    epoch: int = 0
    batch: int = 0  # next batch index within the epoch
    step: int = 0
    examples: int = 0
    next_eval: int = 0
    loss_sum: float = 0.0  # summed step losses since the last evaluation
    last_eval_step: int = 0
    # every validation as [examples, score]: the manifest's validation_history (was it still rising at the end?)
    history: list = field(default_factory=list)
    done: bool = False


def load_cached(config: Config, split: str) -> CachedSplit:
    return load_split(Path(config.data.cache_dir), split)


def normalization(config: Config, report: dict[str, Any], train: CachedSplit, pretrained: bool) -> tuple[list, list]:
    """What the initial weights were trained with: the initializer's own statement (e.g. an in-domain backbone's
    cache statistics), else ImageNet mean/std of the family's tag for pretrained weights, else the training
    cache's own statistics (random init)."""
    if report.get("init_normalization"):
        return report["init_normalization"]["mean"], report["init_normalization"]["std"]
    if pretrained:
        return report["normalization"]["mean"], report["normalization"]["std"]
    return [float(train.info["mean"])] * 3, [float(train.info["std"])] * 3


def _fingerprint(config: Config, key: RunKey, lr: float, max_examples: int | None, train: CachedSplit) -> str:
    """What must match for a saved state to be resumed rather than restarted."""
    parts = [key.name, config.train, config.data.label_policy, config.model, lr, max_examples,
             train.info.get("sha256"), _initial_weights(config, key)]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _initial_weights(config: Config, key: RunKey) -> str | None:
    """The hash of the pretrain stage's backbone the run starts from (None without one): new weights, new run."""
    record = PretrainRecord.read_if_present(key.pretrain_dir(config.train.runs_dir))
    return record.sha256 if record else None


class Validator:
    """Study-level validation AUROC (max over a study's views); the checkpoints are ranked by `select_metric`."""

    def __init__(self, valid: CachedSplit, runtime: Runtime, mean: list, std: list, batch_size: int,
                 select_metric: str = COMPETITION_MEAN) -> None:
        self.valid, self.runtime, self.mean, self.std, self.batch_size = valid, runtime, mean, std, batch_size
        self.select_metric = select_metric
        self.studies = valid.index["study"].astype(str).tolist()
        _, self.truth = exam_level(binary_truth(valid.labels).astype(np.float32), self.studies)

    def __call__(self, model: torch.nn.Module) -> tuple[float, dict[str, float]]:
        rt = self.runtime
        probs = predict_probs(model, self.valid.images, rt.device, self.mean, self.std, self.batch_size,
                              autocast=rt.precision == "bf16", channels_last=rt.channels_last)
        _, exam_probs = exam_level(probs, self.studies)
        result = auroc_metrics(self.truth.astype(np.int8), exam_probs)
        metrics = {f"val_{k}": v for k, v in result.to_flat_dict().items() if v == v}
        return getattr(result, self.select_metric), metrics


def _check_budget(config: Config, n_train: int) -> None:
    if config.train.batch_size > n_train:
        raise ConfigError(
            f"train.batch_size is {config.train.batch_size} but the training split has only {n_train} images; "
            "lower train.batch_size or use more data."
        )


def _check_state(state: dict[str, Any], run_dir: Path, key: RunKey, fingerprint: str, model: torch.nn.Module
                 ) -> None:
    """A saved state is resumable: same settings, and every checkpoint it keeps is there and fits the model."""
    if state["fingerprint"] != fingerprint:
        raise ConfigError(
            f"{run_dir} holds a run with other settings (params.yaml, lr, data or budget changed); train anew with "
            f"`{key.train_command('--restart')}`, "
            "or delete the folder."
        )
    verify_checkpoints(run_dir, key, state["keeper"], model.state_dict())


def _resume(run_dir: Path, key: RunKey, fingerprint: str, model, optimizer, keeper: TopKKeeper) -> Progress | None:
    state = read_state(run_dir, key)
    if state is None:
        return None
    _check_state(state, run_dir, key, fingerprint, model)
    if state["model"] is not None:  # a finished run's state keeps neither (see _save_state)
        model.load_state_dict(state["model"])
    if state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if distributed.is_main():  # restoring prunes checkpoint files: one process does it
        keeper.restore(state["keeper"])
    torch.set_rng_state(state["torch_rng"])
    return Progress(**state["progress"])


def saved_state_complete(config: Config, key: RunKey, run_dir: Path, lr: float) -> bool:
    """Whether `run_dir` holds a run of exactly these settings that has trained its whole budget."""
    state = read_state(run_dir, key)
    if state is None:
        return False
    train = load_cached(config, "train")
    fingerprint = _fingerprint(config, key, lr, config.train.max_examples, train)
    return state["fingerprint"] == fingerprint and bool(state["progress"]["done"])


def saved_state_matches(config: Config, key: RunKey, run_dir: Path, lr: float) -> bool | None:
    """Whether `run_dir`'s saved state was trained under these settings at learning rate `lr` (None: no state)."""
    state = read_state(run_dir, key)
    if state is None:
        return None
    train = load_cached(config, "train")
    return state["fingerprint"] == _fingerprint(config, key, lr, config.train.max_examples, train)


def _save_state(run_dir: Path, fingerprint: str, model, optimizer, keeper: TopKKeeper, progress: Progress) -> None:
    """The resumable state. A finished run's keeps no model or optimizer (several times a checkpoint's size):
    its fingerprint holds the budget, so it never trains further; KEEP_STATE_ENV=1 keeps them anyway."""
    slim = progress.done and os.environ.get(KEEP_STATE_ENV, "") != "1"
    atomic_save(
        {"fingerprint": fingerprint, "model": None if slim else model.state_dict(),
         "optimizer": None if slim else optimizer.state_dict(),
         "keeper": keeper.state(), "torch_rng": torch.get_rng_state(), "progress": vars(progress)},
        run_dir / STATE_FILE,
    )


def _train_targets(config: Config, train: CachedSplit) -> tuple[np.ndarray, np.ndarray]:
    policy = get_registry().label_policy(config.data.label_policy)
    return policy.apply(train.labels)


class Trainer:
    """Holds one run's model, optimiser, data and progress; `fit()` trains to the end of the budget."""

    def __init__(self, config: Config, key: RunKey, *, lr: float | None = None, max_examples: int | None = None,
                 run_dir: Path | None = None, progress: bool = True) -> None:
        """The one way to set up a run: the stage, the tuner's trials and every DDP rank build it alike.
        `lr` and `max_examples` default to train.lr and train.max_examples, `run_dir` to the configuration's
        train folder."""
        t = config.train
        lr = lr or t.lr
        max_examples = max_examples or t.max_examples
        run_dir = Path(run_dir) if run_dir else key.train_dir(t.runs_dir)
        self.config, self.key, self.run_dir, self.lr = config, key, run_dir, lr
        self.log: LogFn | None = None
        self.on_eval: Callable[[float, int], None] | None = None
        self.progress_bar = progress
        self.runtime = select_runtime(t.device, t.precision)
        self.seed = train_seed(config, key)  # a grid.seeds repeat: the same run with another seed
        self.dist = distributed.context()
        self.train_split, valid = load_cached(config, "train"), load_cached(config, "valid")
        init_spec, _ = get_registry().initializer(key.initializer)
        model, report = build_model(key.family, key.initializer, key.depth, config.model.num_classes,
                                    seed=self.seed, weights_dir=config.model.weights_dir, truncation=key.strategy,
                                    pretrain_dir=key.pretrain_dir(t.runs_dir))
        self.report = report.to_dict()
        self.mean, self.std = normalization(config, self.report, self.train_split, init_spec.pretrained)
        mem = torch.channels_last if self.runtime.channels_last else torch.contiguous_format
        self.model = model.to(self.runtime.device, memory_format=mem)
        if self.dist:  # batch statistics of the global batch, as one process would compute them
            self.model = distributed.sync_batchnorm(self.model, self.runtime.device.type)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        # self.model stays unwrapped: checkpoints, state and validation use it; the step runs self.net
        self.net = distributed.wrap(self.model, self.dist) if self.dist else self.model
        self.compile_mode = step_compile.resolve(t.compile, key.family, self.runtime.device.type)
        self.net = step_compile.compile_model(self.net, self.compile_mode)
        targets, mask = _train_targets(config, self.train_split)
        # the labelled subset of a label-fraction run (pretraining saw every image; this run sees these labels)
        rows = (None if key.fraction == 1.0 else
                label_fraction_rows(self.train_split.index, key.fraction, config.study.seed))
        self.loader = BatchLoader(self.train_split.images, targets, mask, t.batch_size, shuffle=True, seed=self.seed,
                                  rows=rows)
        labelled = self.labelled = self.loader.size
        if self.dist:
            self.loader = ShardedLoader(self.loader, self.dist)
        self.validate = Validator(valid, self.runtime, self.mean, self.std, t.eval_batch_size, t.select_metric)
        _check_budget(config, labelled)
        budget = t.epochs * labelled
        self.budget = min(budget, max_examples) if max_examples else budget
        self.keeper = TopKKeeper(run_dir, t.top_k, self._metadata(lr))
        self.fingerprint = _fingerprint(config, key, lr, max_examples, self.train_split)
        # Training seconds before this process: a resumed run's caller passes them to fit() (they live in MLflow,
        # not in the run folder, whose files must not change with the wall clock), so the run's time covers all.
        self.seconds_before = 0.0
        self.resume_examples = self._check_resumable() if distributed.is_main() else 0

    def _check_resumable(self) -> int:
        """Examples the run folder's saved state has trained (0: none), checked before anything is logged."""
        state = read_state(self.run_dir, self.key)
        if state is None:
            return 0
        _check_state(state, self.run_dir, self.key, self.fingerprint, self.model)
        return int(state["progress"]["examples"])

    def seconds(self, start: float) -> float:
        """Training seconds of the whole run so far, this process having started at perf_counter() `start`."""
        return self.seconds_before + time.perf_counter() - start

    def _metadata(self, lr: float) -> dict[str, Any]:
        return {"run": self.key.name, "family": self.key.family, "initializer": self.key.initializer,
                "depth": self.key.depth, "strategy": self.key.strategy, "num_classes": self.config.model.num_classes,
                "image_size": int(self.train_split.images.shape[1]), "lr": lr,
                "normalization": {"mean": self.mean, "std": self.std}, "report": self.report,
                "select_metric": select_metric_key(self.config.train.select_metric)}

    def fit(self, log: LogFn | None = None, on_eval: Callable[[float, int], None] | None = None,
            seconds_before: float = 0.0) -> TrainResult:
        """Train to the end of the budget (resuming the folder's saved state); rank 0 writes train.json.
        `log(metrics, examples)` gets each evaluation's metrics, `on_eval(score, examples)` its score (a tuner
        prunes there); `seconds_before` is the training time a resumed run had already spent (from MLflow)."""
        self.log, self.on_eval, self.seconds_before = log, on_eval, seconds_before
        start = self.started = time.perf_counter()
        torch.manual_seed(self.seed)
        if distributed.is_main():  # writes a kill cut short (SIGKILL skips their cleanup): never read, only in the way
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.run_dir)
            remove_stale_temporaries(self.run_dir / "checkpoints")
        distributed.barrier(self.dist)  # rank 0 may have just cleared a --restart's state: all ranks read alike
        p = _resume(self.run_dir, self.key, self.fingerprint, self.model, self.optimizer, self.keeper)
        p = p or Progress(next_eval=self.config.train.eval_every)
        self.examples_at_start = p.examples
        bar = tqdm(total=self.budget, initial=p.examples, unit="img", desc=self.key.name,
                   disable=not self.progress_bar, dynamic_ncols=True)
        while not p.done:
            self._epoch(p, bar)
        bar.close()
        best = self.keeper.kept[0].score if self.keeper.kept else float("nan")
        if distributed.is_main():
            self.keeper.write_manifest(examples=p.examples, steps=p.step, labelled_examples=self.labelled,
                                       evaluations=len(p.history), validation_history=p.history,
                                       **{BEST_RANKING_METRIC: best})
            TrainSummary(self.key.name, p.examples, p.step, best,
                         select_metric_key(self.config.train.select_metric)).write(self.run_dir)
        return TrainResult(self.run_dir, best, p.examples, p.step, self.seconds(start), self.report, self.runtime)

    def _epoch(self, p: Progress, bar: tqdm) -> None:
        loss_acc = torch.zeros((), device=self.runtime.device)
        for batch in on_device_ahead(self.loader.batches(p.epoch, start=p.batch), self.runtime.device):
            loss_acc += self._step(batch)
            n = batch.examples if isinstance(batch, ShardBatch) else len(batch.rows)
            p.step, p.batch, p.examples = p.step + 1, p.batch + 1, p.examples + n
            bar.update(n)
            budget_spent = p.examples >= self.budget
            if p.examples >= p.next_eval or budget_spent or p.batch == self.loader.num_batches:
                # the loop's only host sync, once per evaluation (under DDP: the global batch's loss)
                p.loss_sum += float(distributed.mean_across(loss_acc, self.dist))
                loss_acc.zero_()
                while p.next_eval <= p.examples:
                    p.next_eval += self.config.train.eval_every
                if p.batch == self.loader.num_batches:
                    p.epoch, p.batch = p.epoch + 1, 0
                p.done = budget_spent or p.epoch >= self.config.train.epochs
                self._evaluate(p, bar)
                if p.done or p.batch == 0:
                    return
            if interrupt.stop_requested() and not self.dist:
                self._stop_here(p, loss_acc)

    def _stop_here(self, p: Progress, loss_acc: torch.Tensor) -> None:
        """A stop was requested (scheduler signal): save the resumable state at this step, then raise."""
        p.loss_sum += float(loss_acc)
        _save_state(self.run_dir, self.fingerprint, self.model, self.optimizer, self.keeper, p)
        raise TrainingStopped(f"{self.key.name}: stopped at {p.examples}/{self.budget} examples "
                              f"({interrupt.stop_reason() or 'stop requested'}); resumable state saved")

    def _progress_line(self, examples: int, score: float) -> str:
        """`resnet18/random/full: 512/1536 examples, val AUROC 0.612, 41 s left` (left: this process's pace)."""
        done_here, spent = examples - self.examples_at_start, time.perf_counter() - self.started
        # the last batch may pass the budget: nothing is left then, not a negative time
        left = max(self.budget - examples, 0) * spent / done_here if done_here > 0 else float("nan")
        return (f"{self.key.name}: {examples}/{self.budget} examples, val AUROC {score:.3f}, "
                + (f"{left:.0f} s left" if left == left else "time left unknown"))

    def _step(self, batch) -> torch.Tensor:
        norm = batch.loss_norm if isinstance(batch, ShardBatch) else None
        step_compile.step_begins(self.compile_mode)
        return train_step(self.net, self.optimizer, self.runtime, batch, self.mean, self.std, loss_norm=norm)

    def _evaluate(self, p: Progress, bar: tqdm) -> None:
        """Rank 0 validates, logs and saves; under DDP the other ranks wait for it."""
        if distributed.is_main():
            self._validate_and_save(p, bar)
        distributed.barrier(self.dist)

    def _validate_and_save(self, p: Progress, bar: tqdm) -> None:
        score, metrics = self.validate(self.model)
        self.model.train()
        p.history.append([p.examples, score if score == score else None])
        metrics["train_loss"] = p.loss_sum / max(p.step - p.last_eval_step, 1)
        p.loss_sum, p.last_eval_step = 0.0, p.step
        kept = self.keeper.consider(self.model, p.step, p.examples, p.epoch, score, metrics)
        bar.set_postfix(val_auroc=f"{score:.3f}", kept=len(self.keeper.kept), refresh=False)
        if bar.disable:  # no bar (--quiet, as under `dvc repro`): one line per evaluation, so a long stage shows life
            log.info(self._progress_line(p.examples, score))
        if self.log:
            # train_seconds at each saved state is what a resumed run adds its own time to (see seconds_before)
            self.log(metrics | {"epoch": float(p.epoch), "checkpoint_kept": float(kept),
                                "train_seconds": self.seconds(self.started)}, p.examples)
        _save_state(self.run_dir, self.fingerprint, self.model, self.optimizer, self.keeper, p)
        if self.on_eval:
            self.on_eval(score, p.examples)


def train_run(config: Config, key: RunKey, *, lr: float | None = None, max_examples: int | None = None,
              log: LogFn | None = None, on_eval: Callable[[float, int], None] | None = None,
              progress: bool = True, run_dir: Path | None = None) -> TrainResult:
    """Train one configuration (resuming a killed run in the same folder) and return where its checkpoints are."""
    trainer = Trainer(config, key, lr=lr, max_examples=max_examples, run_dir=run_dir, progress=progress)
    return trainer.fit(log=log, on_eval=on_eval)
