"""Finding, reading and applying weight files.

ImageNet weights come from, in order: the weights folders (params.yaml `model.weights_dir`, then
`CHEXOPS_WEIGHTS_DIR`), then timm's own cache and hub. Nothing falls back to random: when no source works
the error lists every place that was tried and how to provide the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chexops.components.specs import FamilySpec, InitReport
from chexops.errors import WeightsError

if TYPE_CHECKING:
    import torch
    from torch import nn

ENV_WEIGHTS_DIR = "CHEXOPS_WEIGHTS_DIR"
SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def weights_dirs(configured: str | Path | None) -> list[Path]:
    dirs = [Path(configured)] if configured else []
    if os.environ.get(ENV_WEIGHTS_DIR):
        dirs.append(Path(os.environ[ENV_WEIGHTS_DIR]))
    return dirs


def candidate_files(family: FamilySpec, dirs: list[Path]) -> list[Path]:
    """Where a weights file for the family's pinned tag may lie, in search order."""
    names = [family.pretrained_name + s for s in SUFFIXES]
    out = []
    for d in dirs:
        out += [d / n for n in names]
        # the layout timm / huggingface_hub use: <dir>/<model.tag>/model.safetensors
        out += [d / family.pretrained_name / n for n in ("model.safetensors", "pytorch_model.bin")]
    return out


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a file, never unpickling arbitrary objects (weights_only=True)."""
    import torch

    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; check the path.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{path} could not be read as a state dict ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            "Save weights with torch.save(model.state_dict(), path) or as .safetensors."
        ) from exc
    # Training scripts often wrap the weights; accept the common wrappers.
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(
            f"{path} holds a {type(obj).__name__}, not a state dict of tensors. "
            "Save weights with torch.save(model.state_dict(), path)."
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    names = [n for n, m in model.named_modules() if classifier is not None and m is classifier and n]
    return tuple(n + "." for n in names)


def apply_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, initializer: str, family: FamilySpec
) -> InitReport:
    """Load `state` into `model`; the classifier may differ (it is replaced anyway), nothing else may."""
    own = model.state_dict()
    head = _classifier_prefixes(model)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in own if k in state and state[k].shape != own[k].shape and not k.startswith(head)]
    body_missing = [k for k in missing if not k.startswith(head)]
    if wrong_shape or body_missing:
        detail = "; ".join(
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong_shape[:3]
        ) or f"missing e.g. {', '.join(body_missing[:3])}"
        raise WeightsError(
            f"{source} does not fit {family.name} ({family.timm_name}): {len(body_missing)} missing and "
            f"{len(wrong_shape)} mis-shaped keys ({detail}). Are these weights for another architecture?"
        )
    usable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(usable, strict=False)
    return InitReport(
        initializer=initializer,
        loaded=True,
        source=source,
        loaded_keys=len(usable),
        missing_keys=missing,
        unexpected_keys=unexpected,
    )


def _from_timm(family: FamilySpec) -> dict[str, torch.Tensor]:
    import timm

    model = timm.create_model(family.pretrained_name, pretrained=True)
    return model.state_dict()


def find_imagenet_weights(family: FamilySpec, dirs: list[Path]) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, where it came from) for the family's pinned tag, or a WeightsError listing every place."""
    tried = []
    for path in candidate_files(family, dirs):
        if path.is_file():
            return read_state_dict(path), str(path)
        tried.append(f"{path} (no such file)")
    try:
        return _from_timm(family), f"timm cache/hub ({family.pretrained_name})"
    except Exception as exc:  # offline, no cache, hub error: all mean "not here"
        tried.append(f"timm cache and hub for {family.pretrained_name} ({type(exc).__name__}: {str(exc)[:120]})")
    raise WeightsError(
        f"no ImageNet weights for {family.name} (timm tag {family.pretrained_name}). Looked in: "
        + "; ".join(tried)
        + f". Provide them: on a machine with internet run `chexops weights fetch {family.name} --to DIR`, "
        f"copy DIR here and set {ENV_WEIGHTS_DIR}=DIR (or model.weights_dir in params.yaml)."
    )


def fetch(family: FamilySpec, to: Path) -> Path:
    """Save the pinned tag's ImageNet weights under `to` so an offline machine can use them."""
    from safetensors.torch import save_file

    try:
        state = _from_timm(family)
    except Exception as exc:
        raise WeightsError(
            f"could not download {family.pretrained_name} through timm ({type(exc).__name__}: {exc}). "
            "Run this on a machine that can reach the Hugging Face hub."
        ) from exc
    to.mkdir(parents=True, exist_ok=True)
    path = to / f"{family.pretrained_name}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path
