"""build_model(): the family creates the network, the initializer fills it, the truncation cuts it, and a new
head of `num_classes` outputs goes on."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from chexops.components.registry import get_registry
from chexops.components.specs import FamilySpec
from chexops.naming import truncation_label


class ChexModel(nn.Module):
    """Feature extractor, global average pooling, one linear layer."""

    def __init__(self, features: nn.Module, width: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if f.ndim == 4:
            f = self.pool(f).flatten(1)
        return self.head(f)


@dataclass
class BuildReport:
    """What was built, for `chexops build`, the run's params and tags."""

    family: str
    group: str
    timm_tag: str
    imagenet_top1: float | None
    plugin: str
    plugin_version: str
    initializer: str
    weights_loaded: bool
    weights_source: str | None
    loaded_keys: int
    truncation: str
    blocks_dropped: list[str]
    parameters: int
    feature_width: int
    num_classes: int
    normalization: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _create(family: FamilySpec) -> nn.Module:
    if family.create is not None:
        return family.create(family)
    import timm

    return timm.create_model(family.timm_name, pretrained=False)


def build_model(
    family: str,
    init: str = "random",
    truncate: int = 0,
    num_classes: int = 14,
    seed: int = 0,
    weights_dir: str | Path | None = None,
    truncation: str | None = None,
) -> tuple[ChexModel, BuildReport]:
    """Build `family` initialised by `init` (e.g. `imagenet`, `checkpoint:PATH`) with `truncate` blocks cut."""
    registry = get_registry()
    entry = registry.entry("families", family)
    spec: FamilySpec = entry.spec
    init_spec, argument = registry.initializer(init)
    trunc = registry.truncation(truncation or ("none" if truncate == 0 else "drop-last-k"))
    # A private RNG stream: the same seed gives the same network whatever ran before in this process.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _create(spec)
        init_report = init_spec.apply(net, spec, argument, {"seed": seed, "weights_dir": weights_dir})
        features, width = trunc.apply(net, spec, truncate)
        model = ChexModel(features, width, num_classes)
    mean, std = spec.normalization
    report = BuildReport(
        family=spec.name,
        group=spec.group,
        timm_tag=spec.pretrained_name,
        imagenet_top1=spec.imagenet_top1,
        plugin=entry.plugin.distribution,
        plugin_version=entry.plugin.version,
        initializer=init_report.initializer,
        weights_loaded=init_report.loaded,
        weights_source=init_report.source,
        loaded_keys=init_report.loaded_keys,
        truncation=truncation_label(truncate),
        blocks_dropped=list(spec.blocks[len(spec.blocks) - truncate :]) if truncate else [],
        parameters=sum(p.numel() for p in model.parameters()),
        feature_width=width,
        num_classes=num_classes,
        normalization={"mean": list(mean), "std": list(std)},
    )
    return model, report
