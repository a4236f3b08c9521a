"""In-domain self-supervised pretraining of one family's backbone (MoCo v2) on the training split's images.

Labels are never read. The budget is `pretrain.examples` images (each seen as two views), in seeded epochs of
the training cache; a resumable state is saved every `pretrain.save_every` examples, so a killed run continues
where it stopped and ends with the same weights as an uninterrupted one. Like the training loop, metrics go to a
`log(metrics, step)` callback: mlflow is not imported here.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from chexops.components.registry import get_registry
from chexops.config import Config
from chexops.data.cache import CachedSplit, load_split
from chexops.data.loader import BatchLoader
from chexops.errors import ConfigError
from chexops.models.build import create_network
from chexops.naming import BACKBONE_FILE, STATE_FILE
from chexops.records import file_sha256
from chexops.train.augment import normalize, radiograph_views, view_generator
from chexops.train.checkpoints import atomic_save, load_state_file, remove_stale_temporaries
from chexops.train.moco import MoCo
from chexops.train.runtime import select_runtime

LogFn = Callable[[dict[str, float], int], None]


@dataclass
class PretrainProgress:
    epoch: int = 0
    batch: int = 0
    step: int = 0
    examples: int = 0
    loss_sum: float = 0.0  # since the last log
    top1_sum: float = 0.0
    steps_since_log: int = 0
    last_loss: float = float("nan")
    seconds: float = 0.0  # spent in earlier processes of this run, so a resumed run reports all of it


_STATE_KEYS = ("fingerprint", "model", "optimizer", "progress")


@dataclass
class PretrainResult:
    backbone: Path
    sha256: str
    examples: int
    steps: int
    seconds: float
    final_loss: float
    normalization: dict[str, list[float]]
    device: str
    precision: str


class Pretrainer:
    """One family's MoCo pretraining: `fit()` runs (or resumes) to the end of the budget."""

    def __init__(self, config: Config, family: str, out_dir: Path, log: LogFn | None = None,
                 progress_bar: bool = True, on_save: Callable[[PretrainProgress], None] | None = None,
                 train: CachedSplit | None = None) -> None:
        """`train`: the images to pretrain on, instead of the prepared training split (`chexops plan` times
        pretraining on synthetic images this way)."""
        p = self.settings = config.pretrain
        self.out_dir, self.log, self.progress_bar, self.on_save = out_dir, log, progress_bar, on_save
        self.runtime = select_runtime(config.train.device, config.train.precision)
        train = train or load_split(Path(config.data.cache_dir), "train")
        n = len(train.images)
        if n < p.batch_size:
            raise ConfigError(f"pretrain.batch_size is {p.batch_size} but the training split has {n} images; "
                              "lower pretrain.batch_size.")
        self.images = train.images
        # the cache's own statistics: pretraining starts from nothing ImageNet-shaped, so neither does its input
        self.mean, self.std = float(train.info["mean"]), float(train.info["std"])
        registry = get_registry()
        spec = registry.family(family)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            net = create_network(spec)
            backbone, width = registry.truncation("none").apply(net, spec, 0)
            self.moco = MoCo(backbone, width, dim=p.projection_dim, queue=p.queue, temperature=p.temperature,
                             momentum=p.momentum, bn_splits=p.bn_splits)
        rt = self.runtime
        self.moco.to(rt.device, memory_format=torch.channels_last if rt.channels_last else torch.contiguous_format)
        params = [q for q in self.moco.parameters() if q.requires_grad]
        self.optimizer = (torch.optim.Adam(params, lr=p.lr) if p.optimizer == "adam" else
                          torch.optim.SGD(params, lr=p.lr, momentum=0.9, weight_decay=1e-4))
        # drop_last: every step has a full batch, so the BN groups and the queue stay aligned
        self.loader = BatchLoader(self.images, np.zeros((n, 1), np.float32), np.zeros((n, 1), np.float32),
                                  p.batch_size, shuffle=True, seed=p.seed, drop_last=True)
        self.fingerprint = hashlib.sha256(repr([family, asdict(p), train.info.get("sha256")]).encode()).hexdigest()[:16]

    def _lr(self, examples: int) -> float:
        """MoCo v2's cosine schedule over the example budget."""
        return self.settings.lr * 0.5 * (1 + math.cos(math.pi * min(examples / self.settings.examples, 1.0)))

    def _view(self, x: torch.Tensor, step: int, view: int) -> torch.Tensor:
        a, rt = self.settings.augment, self.runtime
        x01 = radiograph_views(x, view_generator(self.settings.seed, step, view), crop_scale=a.crop_scale,
                               rotate_degrees=a.rotate_degrees, hflip=a.hflip, brightness=a.brightness,
                               contrast=a.contrast)
        return normalize(x01, self.mean, self.std, rt.channels_last)

    def _fill_queue(self) -> None:
        """Real negatives from the first step: keys of a seeded sample of the training images."""
        p, rt = self.settings, self.runtime
        rows = np.sort(np.random.default_rng([p.seed, len(self.images)]).choice(len(self.images), p.queue,
                                                                                 replace=p.queue > len(self.images)))
        x = torch.from_numpy(np.ascontiguousarray(self.images[rows]))[:, None].to(rt.device)
        with rt.autocast():
            self.moco.fill_queue(self._view(x, -1, 0), p.batch_size)

    def _step(self, x_uint8: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rt = self.runtime
        x = x_uint8.to(rt.device, non_blocking=True)
        views = [self._view(x, step, v) for v in (0, 1)]
        shuffle = torch.randperm(x.shape[0], generator=view_generator(self.settings.seed, step, 2)).to(rt.device)
        with rt.autocast():
            loss, top1 = self.moco(views[0], views[1], shuffle)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), top1

    def _resume(self) -> PretrainProgress | None:
        path = self.out_dir / STATE_FILE
        remove_stale_temporaries(self.out_dir)  # a write a kill cut short: never read, only in the way
        if not path.is_file():
            return None
        state = load_state_file(path, _STATE_KEYS, "saved state", f"; delete {path} to pretrain anew.")
        if state["fingerprint"] != self.fingerprint:
            raise ConfigError(f"{self.out_dir} holds a pretraining run with other settings (pretrain.*, data or "
                              f"family changed); delete {path} to pretrain anew.")
        self.moco.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        return PretrainProgress(**state["progress"])

    def _save(self, progress: PretrainProgress) -> None:
        atomic_save({"fingerprint": self.fingerprint, "model": self.moco.state_dict(),
                     "optimizer": self.optimizer.state_dict(), "progress": asdict(progress)},
                    self.out_dir / STATE_FILE)
        if self.on_save:
            self.on_save(progress)

    def fit(self) -> PretrainResult:
        start = time.perf_counter()
        budget, p = self.settings.examples, self._resume()
        if p is None:
            p = PretrainProgress()
            self._fill_queue()
        earlier = p.seconds
        bar = tqdm(total=budget, initial=p.examples, unit="img", desc="pretrain", disable=not self.progress_bar,
                   dynamic_ncols=True)
        self.moco.train()
        next_save = (p.examples // self.settings.save_every + 1) * self.settings.save_every
        loss_acc = torch.zeros((), device=self.runtime.device)
        top1_acc = torch.zeros((), device=self.runtime.device)
        while p.examples < budget:
            for batch in self.loader.batches(p.epoch, start=p.batch):
                for group in self.optimizer.param_groups:
                    group["lr"] = self._lr(p.examples)
                loss, top1 = self._step(batch.x, p.step)
                loss_acc += loss
                top1_acc += top1
                n = len(batch.rows)
                p.step, p.batch, p.examples, p.steps_since_log = p.step + 1, p.batch + 1, p.examples + n, \
                    p.steps_since_log + 1
                bar.update(n)
                if p.batch == self.loader.num_batches:
                    p.epoch, p.batch = p.epoch + 1, 0
                if p.examples >= next_save or p.examples >= budget:
                    # the loop's only host sync, once per save
                    loss_mean, top1_mean = float(loss_acc) / p.steps_since_log, float(top1_acc) / p.steps_since_log
                    loss_acc.zero_(), top1_acc.zero_()
                    p.last_loss, p.steps_since_log = loss_mean, 0
                    p.seconds = earlier + time.perf_counter() - start
                    bar.set_postfix(loss=f"{loss_mean:.3f}", refresh=False)
                    if self.log:
                        self.log({"pretrain_loss": loss_mean, "pretrain_top1": top1_mean,
                                  "pretrain_lr": self._lr(p.examples)}, p.examples)
                    while next_save <= p.examples:
                        next_save += self.settings.save_every
                    self._save(p)
                if p.examples >= budget or p.batch == 0:
                    break
        bar.close()
        backbone = self.out_dir / BACKBONE_FILE
        atomic_save({k: v.detach().cpu() for k, v in self.moco.query.backbone.state_dict().items()}, backbone)
        return PretrainResult(backbone, file_sha256(backbone), p.examples, p.step, p.seconds, p.last_loss,
                              {"mean": [self.mean] * 3, "std": [self.std] * 3}, str(self.runtime.device),
                              self.runtime.precision)
