"""Data-parallel training of one configuration under torchrun (DDP).

`torchrun --nproc-per-node N -m chexops train ...` starts N processes; each joins the process group from
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT): NCCL when training on CUDA,
gloo on the CPU. The design goal is that N processes train exactly what one process would:

- the global batch is `train.batch_size`; every rank walks the same seeded order (BatchLoader.order) and takes
  its own disjoint slice of every global batch, so together the ranks see the single-process batches;
- the masked BCE of a rank is divided by (global mask sum / world size), so DDP's gradient mean is the
  single-process gradient of the global batch, not a mean of per-rank means;
- batch norm normalises with the statistics of the global batch (torch's SyncBatchNorm on CUDA, GlobalBatchNorm
  below on the CPU, where torch's is refused), so the forward pass and the running statistics match too;
- rank 0 alone validates (the unwrapped model on the full validation set), logs, and writes checkpoints, state
  and manifest; the other ranks wait at a barrier. Every rank loads a saved state, so resume works unchanged.

Layers that draw random numbers (dropout, drop-path) draw them per rank, so those families match one process
in distribution only; the CheXtransfer families train without them by default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from chexops.data.loader import Batch, BatchLoader, prefetched
from chexops.errors import ConfigError

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the process group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Whether torchrun (or an equivalent launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _uses_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def init_from_env(device: str = "auto") -> DistContext | None:
    """Join torchrun's process group; None when this process was not started as one of several.

    `device` is train.device: CUDA (auto on a GPU box, or cuda) means NCCL with one GPU per process, chosen by
    LOCAL_RANK; anything else means gloo on the CPU.
    """
    if not launched():
        return None
    if dist.is_initialized():
        return context()
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set; start "
                          "distributed training with `torchrun --nproc-per-node N -m chexops train ...`.")
    if device.startswith("cuda:"):
        raise ConfigError(f"train.device is {device!r}, but under torchrun each process uses the GPU of its "
                          "LOCAL_RANK; set train.device to auto or cuda (and pick GPUs with CUDA_VISIBLE_DEVICES).")
    local_rank = int(os.environ["LOCAL_RANK"])
    backend = "gloo"
    if _uses_cuda(device):
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                              "start at most one process per GPU (torchrun --nproc-per-node).")
        torch.cuda.set_device(local_rank)  # so train.device "cuda" means this process's own GPU
        backend = "nccl"
    dist.init_process_group(backend=backend, init_method="env://")
    return context()


def context() -> DistContext | None:
    """The current process group as a DistContext; None without one (or with a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                       dist.get_backend())


def is_main() -> bool:
    """True in a single process and on rank 0: the one process that writes files and logs."""
    ctx = context()
    return ctx is None or ctx.is_main


def barrier(ctx: DistContext | None) -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if ctx is None:
        return
    if ctx.backend == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        # a rank that tears its gloo connections down while a peer still reads them makes that peer abort; after
        # an error the peers may never reach the barrier, so only a clean exit waits for them
        if sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()


def mean_across(value: torch.Tensor, ctx: DistContext | None) -> torch.Tensor:
    """The mean of `value` over the ranks (`value` itself without a process group)."""
    if ctx is None:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / ctx.world_size


def wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    """`model` (already on this rank's device) in DistributedDataParallel; keep the unwrapped one for saving."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [torch.cuda.current_device()] if ctx.backend == "nccl" else None
    return DistributedDataParallel(model, device_ids=device_ids)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch for CPU processes (torch's SyncBatchNorm, and DDP with it, is GPU-only);
    also stands in for timm's BatchNormAct2d (norm, then its drop and act).

    Same parameters and buffers as nn.BatchNorm2d, so its checkpoints load into the plain model. The per-channel
    sums are all-reduced with autograd, so the backward pass exchanges the matching gradient terms.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and dist.is_available() and dist.is_initialized():
            x = self._global_batch_norm(x)
        else:
            x = super().forward(x)
        if hasattr(self, "drop"):  # only set when converted from timm's BatchNormAct2d
            x = self.drop(x)
        if hasattr(self, "act"):
            x = self.act(x)
        return x

    def _global_batch_norm(self, x: torch.Tensor) -> torch.Tensor:
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        count = torch.tensor([x.numel() // x.size(1)], dtype=torch.float64)  # values per channel on this rank
        dist.all_reduce(count)
        n = float(count.item())
        if n < 1:
            raise ValueError("batch norm over an empty global batch: every rank got no images.")
        mean = all_reduce(x.sum(dims)) / n
        centred = x - mean.reshape(shape)
        var = all_reduce(centred.square().sum(dims)) / n  # two passes, as F.batch_norm, for its accuracy
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():  # running variance is unbiased, as in torch's batch norm
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (n / max(n - 1, 1)), alpha=factor)
        y = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


def sync_batchnorm(module: nn.Module, device_type: str = "cpu") -> nn.Module:
    """Every batch-norm layer of `module` (torch's and timm's BatchNormAct2d) normalising over the global batch,
    sharing its parameters and buffers: torch's SyncBatchNorm on CUDA (timm's conversion, which knows its own
    layers), GlobalBatchNorm elsewhere. Call before building the optimiser."""
    if device_type == "cuda":
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(module)
    return _to_global_batchnorm(module)


def _to_global_batchnorm(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        for extra in ("drop", "act"):
            if isinstance(getattr(module, extra, None), nn.Module):
                setattr(new, extra, getattr(module, extra))
        return new.train(module.training)
    for name, child in module.named_children():
        converted = _to_global_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


@dataclass
class ShardBatch(Batch):
    """This rank's slice of a global batch, with what the loop needs to know about the whole of it."""

    examples: int = 0  # images in the global batch, over every rank
    loss_norm: float = 1.0  # this rank's masked-BCE denominator: global mask sum / world size


class ShardedLoader:
    """A BatchLoader's global batches, cut into one disjoint slice per rank; same order, same resume points."""

    def __init__(self, loader: BatchLoader, ctx: DistContext) -> None:
        if loader.batch_size % ctx.world_size:
            raise ConfigError(
                f"train.batch_size is {loader.batch_size}, which {ctx.world_size} processes cannot share: it is the "
                f"global batch and each process takes batch_size / {ctx.world_size} images of it. Set "
                f"train.batch_size to a multiple of {ctx.world_size} or change --nproc-per-node."
            )
        self.loader, self.ctx = loader, ctx

    def __len__(self) -> int:
        return self.num_batches

    @property
    def num_batches(self) -> int:
        return self.loader.num_batches

    def batches(self, epoch: int, start: int = 0) -> Iterator[ShardBatch]:
        """This rank's slices of the batches of `epoch` from batch `start` on (as BatchLoader.batches)."""
        if epoch < 0:
            raise ConfigError(f"epoch must be 0 or more, got {epoch}.")
        count, size = self.num_batches, self.loader.batch_size
        if not 0 <= start <= count:
            raise ConfigError(f"start batch must be between 0 and {count} (batches in an epoch), got {start}.")
        order = self.loader.order(epoch)
        shards = (self.shard(order[b * size:(b + 1) * size]) for b in range(start, count))
        return prefetched(shards, self.loader.prefetch) if self.loader.prefetch else shards

    def shard(self, rows: np.ndarray) -> ShardBatch:
        """This rank's part of the global batch `rows`; a short last batch is spread as evenly as it goes."""
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        mine = np.array_split(rows, self.ctx.world_size)[self.ctx.rank]
        part = self.loader.gather(mine)
        mask_sum = float(self.loader.mask[rows].sum())  # the whole batch's, read locally: no collective needed
        return ShardBatch(part.x, part.targets, part.mask, part.rows, examples=len(rows),
                          loss_norm=max(mask_sum, 1.0) / self.ctx.world_size)
