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

# The ImageNet top-1 of the weights CheXtransfer's code loaded: torchvision's IMAGENET1K_V1 checkpoints (as
# torchvision's weight metadata documents them) and, for InceptionV4, which torchvision lacks, Cadene's
# pretrainedmodels port of the TensorFlow weights. timm re-evaluated its tv_in1k copies with its own
# preprocessing, hence the small differences from the values above.
_TORCHVISION = "torchvision IMAGENET1K_V1"
_REFERENCE_TOP1: dict[str, tuple[float, str]] = {
    "densenet121": (74.434, _TORCHVISION), "densenet169": (75.600, _TORCHVISION),
    "densenet201": (76.896, _TORCHVISION), "resnet18": (69.758, _TORCHVISION), "resnet34": (73.314, _TORCHVISION),
    "resnet50": (76.130, _TORCHVISION), "resnet101": (77.374, _TORCHVISION), "inception_v3": (77.294, _TORCHVISION),
    "inception_v4": (80.062, "Cadene pretrainedmodels (TensorFlow port)"), "mnasnet": (73.456, _TORCHVISION),
    "efficientnet_b0": (77.692, _TORCHVISION), "efficientnet_b1": (78.642, _TORCHVISION),
    "efficientnet_b2": (80.608, _TORCHVISION), "efficientnet_b3": (82.008, _TORCHVISION),
    "mobilenetv2": (71.878, _TORCHVISION), "mobilenetv3": (74.042, _TORCHVISION),
}

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
        reference_top1=_REFERENCE_TOP1[name][0],
        reference_top1_source=_REFERENCE_TOP1[name][1],
    )
    for name, timm_name, tag, group, top1, blocks, min_size in _TABLE
)


@hookimpl
def register_families(register: Any) -> None:
    for spec in FAMILIES:
        register(spec)
