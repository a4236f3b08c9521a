"""Random views of a radiograph batch for contrastive pretraining, made on the device in one pass.

One affine resampling per batch (crop, rotation and flip together, `grid_sample`), then exposure changes
(brightness, contrast). Every random number comes from a generator seeded by (seed, step, view), so the views
of a step are the same after a resume: pretraining is as resumable as training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def view_generator(seed: int, step: int, view: int) -> torch.Generator:
    """A CPU generator for one view of one step: cheap to make, identical on every device and after a resume."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step + 1) * 7 + view)  # step -1: the queue fill


def radiograph_views(x_uint8: torch.Tensor, generator: torch.Generator, *, crop_scale: Sequence[float],
                     rotate_degrees: float, hflip: bool, brightness: float, contrast: float) -> torch.Tensor:
    """uint8 (B, 1, S, S) on any device -> float (B, 1, S, S) in [0, 1]: one random view per image."""
    b = x_uint8.shape[0]
    x = x_uint8.float().div_(255.0)
    u = torch.rand(b, 5, generator=generator)  # every draw on the CPU, so the views do not depend on the device
    scale = torch.sqrt(crop_scale[0] + (crop_scale[1] - crop_scale[0]) * u[:, 0])  # side of the crop / side
    angle = (2 * u[:, 1] - 1) * math.radians(rotate_degrees)
    flip = torch.where(u[:, 2] < 0.5, -1.0, 1.0) if hflip else torch.ones(b)
    # the crop stays inside the image: its centre moves at most (1 - scale) in normalised coordinates
    tx, ty = (2 * u[:, 3] - 1) * (1 - scale), (2 * u[:, 4] - 1) * (1 - scale)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    # outside the image is black, like the collimated border of a radiograph
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    exposure = torch.rand(b, 2, generator=generator).to(x.device)
    shift = ((2 * exposure[:, 0] - 1) * brightness).view(b, 1, 1, 1)
    gain = (1 + (2 * exposure[:, 1] - 1) * contrast).view(b, 1, 1, 1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * gain + mean + shift).clamp_(0.0, 1.0)


def normalize(x01: torch.Tensor, mean: float, std: float, channels_last: bool) -> torch.Tensor:
    """[0, 1] grey (B, 1, S, S) -> the 3-channel normalised input the families take (as `to_model_input`)."""
    x = ((x01 - mean) / std).expand(-1, 3, -1, -1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)
