"""`train.compile`: how the training step runs, eager or compiled, chosen per family.

    off         eager PyTorch (bf16 autocast and channels_last on CUDA, as the runtime says)
    compile     torch.compile (inductor) of the model's forward and backward; works on CPU and CUDA
    cudagraphs  torch.compile with mode="reduce-overhead": inductor plus CUDA graphs, which replay a whole step's
                kernels at once; for the paper's batch of 16, where kernel launches bound an H200. CUDA only
    auto        the choice measured fastest and numerically safe for the family on CUDA (MEASURED_CHOICES);
                eager where nothing has been measured, and always eager on the CPU

Only the training step is compiled: validation, checkpoints and the saved state use the eager module, so a
checkpoint never carries torch.compile's `_orig_mod.` prefix and a compiled run resumes an eager one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chexops.config import COMPILE_MODES as MODES
from chexops.errors import ConfigError

if TYPE_CHECKING:
    import torch

# family -> the mode `benchmarks/train_step.py --compile all` measured fastest on CUDA with the same validation
# AUROC as eager. Empty: no GPU measurement has been made yet (benchmarks/gpu_round.sh makes it), so `auto`
# stays eager everywhere until one is recorded here.
MEASURED_CHOICES: dict[str, str] = {}


def resolve(mode: str, family: str, device_type: str) -> str:
    """The mode a run of `family` on a `device_type` device uses: off, compile or cudagraphs."""
    if mode not in MODES:
        raise ConfigError(f"train.compile must be one of {', '.join(MODES)}, got {mode!r}.")
    if mode == "auto":
        return MEASURED_CHOICES.get(family, "off") if device_type == "cuda" else "off"
    if mode == "cudagraphs" and device_type != "cuda":
        raise ConfigError("train.compile is cudagraphs, which needs a CUDA device, but the run is on "
                          f"{device_type}; use compile (works on CPU), auto or off.")
    return mode


def compile_model(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """The module the training step calls under `mode` (resolved): the model itself when off."""
    import torch

    if mode == "off":
        return model
    # dynamic=False: the batch shape is fixed but for an epoch's short last batch, which compiles once more
    return torch.compile(model, dynamic=False, mode="reduce-overhead" if mode == "cudagraphs" else None)


def step_begins(mode: str) -> None:
    """Tell CUDA graphs a new step starts: the previous step's graph outputs may be overwritten now."""
    if mode == "cudagraphs":
        import torch

        torch.compiler.cudagraph_mark_step_begin()
