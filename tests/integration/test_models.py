"""build_model for every family, initializer and truncation depth, and its report."""

from __future__ import annotations

import pytest
import timm
import torch

from chexops.components.builtin.families import FAMILIES
from chexops.errors import BuildError, UnknownComponentError
from chexops.models.build import build_model

NAMES = [f.name for f in FAMILIES]


def _forward(model: torch.nn.Module, size: int) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.zeros(2, 3, size, size))


@pytest.mark.parametrize("family", FAMILIES, ids=NAMES)
def test_every_depth_builds_and_runs(family):
    size = max(64, family.min_size)
    model, report = build_model(family.name, "random")
    reference = timm.create_model(family.timm_name, num_classes=14)
    assert report.parameters == sum(p.numel() for p in reference.parameters())
    assert _forward(model, size).shape == (2, 14)
    previous = report.parameters
    for depth in range(1, family.max_drop + 1):
        model, report = build_model(family.name, "random", truncate=depth)
        assert _forward(model, size).shape == (2, 14)
        assert report.feature_width == model.head.in_features
        assert report.parameters <= previous, f"dropping {depth} blocks added parameters"
        assert report.blocks_dropped == list(family.blocks[-depth:])
        previous = report.parameters


def test_report_describes_the_build():
    model, report = build_model("densenet121", "random", truncate=1, num_classes=5)
    assert (report.family, report.group, report.timm_tag) == ("densenet121", "DenseNet", "densenet121.tv_in1k")
    assert (report.truncation, report.num_classes, report.weights_loaded) == ("drop-1", 5, False)
    assert report.feature_width == model.head.in_features == 1024
    assert report.parameters == sum(p.numel() for p in model.parameters())
    assert report.normalization["mean"] == [0.485, 0.456, 0.406]


def test_random_init_is_seeded():
    a, _ = build_model("resnet18", "random", seed=3)
    b, _ = build_model("resnet18", "random", seed=3)
    c, _ = build_model("resnet18", "random", seed=4)
    wa, wb, wc = (m.state_dict()["features.conv1.weight"] for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_truncation_deeper_than_allowed():
    with pytest.raises(BuildError, match="allows dropping 1 to 3 blocks"):
        build_model("resnet18", "random", truncate=4)


def test_unknown_family():
    with pytest.raises(UnknownComponentError, match="Did you mean: efficientnet_b3"):
        build_model("efficientnet_b9")


def test_inception_inputs_need_75_pixels():
    family = next(f for f in FAMILIES if f.name == "inception_v3")
    assert family.min_size == 75
    model, _ = build_model("inception_v3", truncate=3)
    assert _forward(model, 75).shape == (2, 14)
