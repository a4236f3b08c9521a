"""What a plugin registers: one frozen dataclass per kind of component.

A spec is plain data plus, where the component does work, one callable. Plugins create specs and hand them to
the `register` object their hook receives; nothing else about chexops needs to be imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and numpy stay out of import time for the CLI's fast paths
    import numpy as np
    from torch import nn


@dataclass(frozen=True)
class FamilySpec:
    """An architecture: a timm model pinned to one pretrained tag.

    `blocks` are the model's stage boundaries (DenseNet dense blocks, ResNet layers, Inception mixed blocks,
    EfficientNet/MNASNet/MobileNet stages); `max_drop` is how many of them truncation may remove from the end.
    """

    name: str
    timm_name: str
    tag: str
    group: str
    imagenet_top1: float | None
    # Module names (dotted, in execution order) of the blocks truncation may remove from the end.
    blocks: tuple[str, ...]
    max_drop: int
    description: str = ""
    min_size: int = 32  # smallest input in pixels the network accepts (Inception's valid convolutions need more)
    # Builds the untrained network with the default 1000-class head; None means timm.create_model(timm_name).
    create: Callable[[FamilySpec], nn.Module] | None = None
    # The ImageNet top-1 of the weights a reference study used (e.g. the paper's torchvision checkpoints), shown
    # beside `imagenet_top1` so a reader sees where the correlation inputs differ from that study's; None: unknown.
    reference_top1: float | None = None
    reference_top1_source: str = ""

    @property
    def pretrained_name(self) -> str:
        """timm's `model.tag` name, e.g. densenet121.tv_in1k."""
        return f"{self.timm_name}.{self.tag}"

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) of the pinned tag's timm config: what its ImageNet weights were trained with."""
        import timm

        from chexops.errors import PluginError

        try:
            cfg = timm.get_pretrained_cfg(self.pretrained_name)
        except RuntimeError as exc:  # timm's "Invalid pretrained tag": a typo in the spec, not a chexops bug
            raise PluginError(f"family {self.name!r}: timm does not know {self.pretrained_name!r} ({exc}); fix its "
                              f"timm_name or tag (`chexops plugins --check` lists the valid tags).") from exc
        if cfg is None:
            return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        return tuple(cfg.mean), tuple(cfg.std)


@dataclass
class InitReport:
    """What an initializer did to a model, for the build report and the run's tags."""

    initializer: str
    loaded: bool
    source: str | None = None
    loaded_keys: int = 0
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    # The input normalisation the weights were trained with ({"mean": [3], "std": [3]}); None: ImageNet's for a
    # pretrained initializer, the training data's own otherwise.
    normalization: dict[str, list[float]] | None = None
    # Links to where the weights came from, tagged on the fine-tuned run (e.g. the pretraining run and file hash).
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InitializerSpec:
    """Fills a freshly created network with weights.

    `apply(model, family, argument, context)` returns an InitReport. `argument` is what follows the colon in
    `checkpoint:PATH` (None when absent); `context` carries `seed`, `weights_dir` (folders to search) and
    `pretrain_dir` (where this initializer's pretraining step left its output for the family).

    `pretrain(family, out_dir, context)`, when set, is a step the study runs once per (family, initializer)
    before any fine-tune (the `pretrain` stage): it leaves its weights in `out_dir` and returns a summary dict.
    `context` carries `config` (the validated params), `progress` (bool) and `log(metrics, step)`.
    """

    name: str
    apply: Callable[[nn.Module, FamilySpec, str | None, dict[str, Any]], InitReport]
    description: str = ""
    pretrained: bool = False  # compared with `random` in the analyses (the pretraining boost)
    needs_argument: bool = False
    pretrain: Callable[[FamilySpec, Path, dict[str, Any]], dict[str, Any]] | None = None
    label: str = ""  # what the pretraining is, for reports: "ImageNet (supervised)", "in-domain MoCo v2"


@dataclass(frozen=True)
class TruncationSpec:
    """Cuts a network: `apply(model, family, depth)` returns (feature extractor, feature width).

    The feature extractor maps images to a (N, C, H, W) or (N, C) tensor; build_model puts global average
    pooling and a new linear head on it.
    """

    name: str
    apply: Callable[[nn.Module, FamilySpec, int], tuple[nn.Module, int]]
    description: str = ""
    takes_depth: bool = True


@dataclass(frozen=True)
class LabelPolicySpec:
    """Turns raw CheXpert labels into training targets.

    `apply(labels)` takes an (N, 14) float array holding 1, 0, -1 (uncertain) and NaN (blank) and returns
    (targets, mask), both float32 (N, 14); mask 0 removes an entry from the loss.
    """

    name: str
    apply: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    description: str = ""
