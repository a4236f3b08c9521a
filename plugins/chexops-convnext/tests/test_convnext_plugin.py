"""convnext_tiny builds through chexops at every allowed truncation depth."""

from __future__ import annotations

import timm
import torch

from chexops.components.registry import get_registry
from chexops.models.build import build_model


def test_registered_by_this_distribution():
    entry = get_registry().entry("families", "convnext_tiny")
    assert entry.plugin.distribution == "chexops-convnext"
    assert (entry.spec.pretrained_name, entry.spec.imagenet_top1, entry.spec.max_drop) == (
        "convnext_tiny.fb_in1k", 82.066, 3)


def test_every_depth_builds_and_runs():
    reference = sum(p.numel() for p in timm.create_model("convnext_tiny", num_classes=14).parameters())
    previous = None
    for depth in range(4):
        model, report = build_model("convnext_tiny", truncate=depth)
        with torch.no_grad():
            assert model.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, 14)
        if depth == 0:
            assert report.parameters == reference
        else:
            assert report.parameters < previous and report.feature_width == model.head.in_features
        previous = report.parameters
