"""convnext_tiny passes chexops' checks and builds through chexops at every allowed truncation depth."""

from __future__ import annotations

import timm
import torch

import chexops
from chexops.testing import check_family


def test_registered_by_this_distribution(convnext):
    family = convnext.component("families", "convnext_tiny")
    assert family.distribution == "chexops-convnext"
    assert (family.spec.pretrained_name, family.spec.imagenet_top1, family.spec.max_drop) == (
        "convnext_tiny.fb_in1k", 82.066, 3)


def test_passes_the_deep_checks(convnext):
    report = check_family("convnext_tiny")
    assert sorted(report.parameters) == [0, 1, 2, 3]


def test_every_depth_builds_and_runs(convnext):
    reference = sum(p.numel() for p in timm.create_model("convnext_tiny", num_classes=14).parameters())
    previous = None
    for depth in range(4):
        model, report = chexops.build_model("convnext_tiny", truncate=depth)
        with torch.no_grad():
            assert model.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, 14)
        if depth == 0:
            assert report.parameters == reference
        else:
            assert report.parameters < previous and report.feature_width == model.head.in_features
        previous = report.parameters
