"""Registers convnext_tiny (timm convnext_tiny.fb_in1k, ImageNet top-1 82.066).

Its four stages are the truncation points: drop-last-k removes the final k stages (at most 3), and the
untruncated model keeps timm's own head norm before chexops' new linear layer.
"""

from __future__ import annotations

from typing import Any

import chexops


@chexops.hookimpl
def register_families(register: Any) -> None:
    register(
        chexops.FamilySpec(
            name="convnext_tiny",
            timm_name="convnext_tiny",
            tag="fb_in1k",
            group="ConvNeXt",
            imagenet_top1=82.066,
            blocks=("stages.0", "stages.1", "stages.2", "stages.3"),
            max_drop=3,
            description="ConvNeXt: timm convnext_tiny.fb_in1k",
        )
    )
