"""Built-in initializers: random (seeded), imagenet (the family's pinned timm tag), checkpoint:PATH."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chexops.components.hookspecs import hookimpl
from chexops.components.specs import FamilySpec, InitializerSpec, InitReport
from chexops.models import weights


def _random(model: Any, family: FamilySpec, argument: str | None, context: dict[str, Any]) -> InitReport:
    # build_model creates the network under a seeded generator, so timm's own initialisation is already
    # the reproducible random init; re-initialising here would only change which random numbers are used.
    return InitReport("random", loaded=False, source=f"timm default init, seed {context.get('seed', 0)}")


def _imagenet(model: Any, family: FamilySpec, argument: str | None, context: dict[str, Any]) -> InitReport:
    state, source = weights.find_imagenet_weights(family, weights.weights_dirs(context.get("weights_dir")))
    return weights.apply_state_dict(model, state, source, "imagenet", family)


def _checkpoint(model: Any, family: FamilySpec, argument: str | None, context: dict[str, Any]) -> InitReport:
    path = Path(argument or "").expanduser()
    state = weights.read_state_dict(path)
    return weights.apply_state_dict(model, state, str(path), f"checkpoint:{path}", family)


@hookimpl
def register_initializers(register: Any) -> None:
    register(InitializerSpec("random", _random, "timm's default initialisation under the run's seed"))
    register(
        InitializerSpec(
            "imagenet",
            _imagenet,
            "ImageNet weights of the family's pinned timm tag (weights folder, then timm cache/hub)",
            pretrained=True,
        )
    )
    register(
        InitializerSpec(
            "checkpoint",
            _checkpoint,
            "any local state dict, e.g. in-domain pretrained weights: checkpoint:PATH",
            pretrained=True,
            needs_argument=True,
        )
    )
