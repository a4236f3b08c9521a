"""build_model(): the family creates the network, the initializer fills it, the truncation cuts it, and a new
head of `num_classes` outputs goes on."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from chexops.components.registry import get_registry
from chexops.components.specs import FamilySpec, TruncationSpec
from chexops.errors import BuildError, did_you_mean
from chexops.naming import DEFAULT_STRATEGY, truncation_label


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
    truncation_strategy: str
    blocks_dropped: list[str]
    parameters: int
    feature_width: int
    num_classes: int
    normalization: dict[str, list[float]] = field(default_factory=dict)  # the family's ImageNet mean/std
    init_normalization: dict[str, list[float]] | None = None  # what the initializer's weights were trained with
    init_tags: dict[str, str] = field(default_factory=dict)  # links to the weights' origin (pretraining run)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def create_network(family: FamilySpec) -> nn.Module:
    """The family's untrained network with timm's 1000-class head (the state every initializer starts from)."""
    if family.create is not None:
        return family.create(family)
    import timm

    if not timm.is_model(family.timm_name):  # timm's own error is a traceback from deep inside its factory
        raise BuildError(f"family {family.name!r}: timm {timm.__version__} has no model {family.timm_name!r}."
                         f"{did_you_mean(family.timm_name, timm.list_models())} Fix timm_name in its FamilySpec "
                         "(`timm.list_models()` lists the names).")
    return timm.create_model(family.timm_name, pretrained=False)


def _strategy(trunc: TruncationSpec, depth: int) -> TruncationSpec:
    """The strategy, if `depth` fits what it declares: a depth for one that takes none is a mistake, not ignored."""
    if not trunc.takes_depth and depth != 0:
        raise BuildError(f"truncation {trunc.name!r} takes no depth, but depth {depth} was asked; use depth 0, or a "
                         "strategy that cuts at a depth (drop-last-k).")
    if trunc.takes_depth and depth == 0:
        raise BuildError(f"truncation {trunc.name!r} cuts at a depth of 1 or more; got 0 (the whole network needs no "
                         "strategy).")
    return trunc


def build_model(
    family: str,
    init: str = "random",
    truncate: int = 0,
    num_classes: int = 14,
    seed: int = 0,
    weights_dir: str | Path | None = None,
    truncation: str | None = None,
    pretrain_dir: str | Path | None = None,
) -> tuple[ChexModel, BuildReport]:
    """Build `family` initialised by `init` (e.g. `imagenet`, `checkpoint:PATH`), cut by the truncation strategy
    `truncation` (default drop-last-k, which removes the final `truncate` blocks; depth 0 is the whole network)."""
    registry = get_registry()
    entry = registry.entry("families", family)
    spec: FamilySpec = entry.spec
    init_spec, argument = registry.initializer(init)
    strategy = truncation or DEFAULT_STRATEGY
    trunc = _strategy(registry.truncation("none" if strategy == DEFAULT_STRATEGY and truncate == 0 else strategy),
                      truncate)
    # A private RNG stream: the same seed gives the same network whatever ran before in this process.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = create_network(spec)
        init_report = init_spec.apply(net, spec, argument, {"seed": seed, "weights_dir": weights_dir,
                                                             "pretrain_dir": pretrain_dir})
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
        truncation=truncation_label(truncate, strategy),
        truncation_strategy=trunc.name,
        # which blocks another strategy removes is its own business; drop-last-k's are the family's last ones
        blocks_dropped=list(spec.blocks[len(spec.blocks) - truncate :]) if truncate and trunc.name == DEFAULT_STRATEGY
        else [],
        parameters=sum(p.numel() for p in model.parameters()),
        feature_width=width,
        num_classes=num_classes,
        normalization={"mean": list(mean), "std": list(std)},
        init_normalization=init_report.normalization,
        init_tags=dict(init_report.tags),
    )
    return model, report
