"""The 16 CheXtransfer architectures, each pinned to the timm tag matching the study's checkpoints.

ImageNet top-1 values are timm's results table for that exact tag. Truncation blocks are the stage
boundaries of each architecture; at least one block always stays.
"""

from __future__ import annotations

from typing import Any

from chexops.components.hookspecs import hookimpl
from chexops.components.specs import FamilySpec

_DENSE = tuple(f"features.denseblock{i}" for i in range(1, 5))
_RES = tuple(f"layer{i}" for i in range(1, 5))
_STAGES = tuple(f"blocks.{i}" for i in range(7))  # EfficientNet / MNASNet / MobileNet stages
_INC3 = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
         "Mixed_7a", "Mixed_7b", "Mixed_7c")
_INC4 = tuple(f"features.{i}" for i in range(3, 22))  # Mixed_3a .. the last Inception-C block

# (name, timm model, tag, group, ImageNet top-1 of the tag, blocks, min input size)
_TABLE: tuple[tuple[str, str, str, str, float, tuple[str, ...], int], ...] = (
    ("densenet121", "densenet121", "tv_in1k", "DenseNet", 74.750, _DENSE, 32),
    ("densenet169", "densenet169", "tv_in1k", "DenseNet", 75.922, _DENSE, 32),
    ("densenet201", "densenet201", "tv_in1k", "DenseNet", 77.284, _DENSE, 32),
    ("resnet18", "resnet18", "tv_in1k", "ResNet", 69.752, _RES, 32),
    ("resnet34", "resnet34", "tv_in1k", "ResNet", 73.298, _RES, 32),
    ("resnet50", "resnet50", "tv_in1k", "ResNet", 76.156, _RES, 32),
    ("resnet101", "resnet101", "tv_in1k", "ResNet", 77.404, _RES, 32),
    ("inception_v3", "inception_v3", "tv_in1k", "Inception", 77.472, _INC3, 75),
    ("inception_v4", "inception_v4", "tf_in1k", "Inception", 80.144, _INC4, 75),
    ("mnasnet", "mnasnet_100", "rmsp_in1k", "MNASNet", 74.672, _STAGES, 32),
    ("efficientnet_b0", "tf_efficientnet_b0", "in1k", "EfficientNet", 76.542, _STAGES, 32),
    ("efficientnet_b1", "tf_efficientnet_b1", "in1k", "EfficientNet", 78.546, _STAGES, 32),
    ("efficientnet_b2", "tf_efficientnet_b2", "in1k", "EfficientNet", 79.612, _STAGES, 32),
    ("efficientnet_b3", "tf_efficientnet_b3", "in1k", "EfficientNet", 80.878, _STAGES, 32),
    ("mobilenetv2", "mobilenetv2_100", "ra_in1k", "MobileNet", 72.910, _STAGES, 32),
    ("mobilenetv3", "mobilenetv3_large_100", "ra_in1k", "MobileNet", 75.784, _STAGES, 32),
)

FAMILIES: tuple[FamilySpec, ...] = tuple(
    FamilySpec(
        name=name,
        timm_name=timm_name,
        tag=tag,
        group=group,
        imagenet_top1=top1,
        blocks=blocks,
        max_drop=len(blocks) - 1,
        description=f"{group}: timm {timm_name}.{tag}",
        min_size=min_size,
    )
    for name, timm_name, tag, group, top1, blocks, min_size in _TABLE
)


@hookimpl
def register_families(register: Any) -> None:
    for spec in FAMILIES:
        register(spec)
