"""Device and precision: CUDA with bf16 autocast and channels_last when present, fp32 on the CPU."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from chexops.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # fp32 | bf16
    channels_last: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def select_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {device!r} but no CUDA device is available; use auto or cpu.")
    dev = torch.device(device)
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" else "fp32"
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels once
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(dev, precision, channels_last=dev.type == "cuda")
