"""The training step, on its own: importable with torch alone (no pandas, mlflow or optuna), so the benchmarks
and `chexops plan` time exactly the step the runs take, on machines that hold only the training core."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from chexops.data.loader import to_model_input
from chexops.train.runtime import Runtime


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, rt: Runtime, batch: Any,
               mean: list, std: list, loss_norm: float | None = None) -> torch.Tensor:
    """One optimisation step on a cached uint8 batch: normalised on the device, masked BCE over 14 tasks.

    `loss_norm` replaces the batch's mask sum as the denominator; under DDP it is the global batch's mask sum
    over the world size, so that DDP's gradient mean equals the single-process gradient of the global batch.
    Returns the loss as a device tensor: reading it here would force a host sync every step.
    """
    x = to_model_input(batch.x, rt.device, mean, std, rt.channels_last)
    targets = batch.targets.to(rt.device, non_blocking=True)
    mask = batch.mask.to(rt.device, non_blocking=True)
    with rt.autocast():
        logits = model(x)
    losses = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    loss = (losses * mask).sum() / (mask.sum().clamp_min(1.0) if loss_norm is None else loss_norm)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()
