"""ImageNet and checkpoint initializers, through the real loading path, on files the tests write."""

from __future__ import annotations

import pytest
import timm
import torch

from chexops.components.builtin.families import FAMILIES
from chexops.errors import WeightsError
from chexops.models.build import build_model
from chexops.models.weights import ENV_WEIGHTS_DIR


def _imagenet_like(family, seed: int = 123) -> dict[str, torch.Tensor]:
    """Stand-in ImageNet weights: a timm model of the exact architecture with other random values."""
    torch.manual_seed(seed)
    return timm.create_model(family.timm_name).state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
def test_imagenet_weights_load_from_weights_folder(family, tmp_path):
    state = _imagenet_like(family)
    torch.save(state, tmp_path / f"{family.pretrained_name}.pth")
    model, report = build_model(family.name, "imagenet", weights_dir=tmp_path)
    random_model, _ = build_model(family.name, "random")
    assert report.weights_loaded and report.weights_source == str(tmp_path / f"{family.pretrained_name}.pth")
    first_body_key = next(k for k in state if k.endswith("weight"))
    loaded = model.features.state_dict()[first_body_key]
    assert torch.equal(loaded, state[first_body_key])
    assert not torch.equal(loaded, random_model.features.state_dict()[first_body_key])
    assert report.loaded_keys == len(state)  # every key, the 1000-class classifier before it is replaced too


def test_imagenet_from_env_folder_in_safetensors(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    family = next(f for f in FAMILIES if f.name == "mobilenetv3")
    save_file(_imagenet_like(family), str(tmp_path / f"{family.pretrained_name}.safetensors"))
    monkeypatch.setenv(ENV_WEIGHTS_DIR, str(tmp_path))
    _, report = build_model("mobilenetv3", "imagenet", truncate=2)
    assert report.weights_loaded and report.weights_source.endswith(".safetensors")


def test_imagenet_missing_weights_says_where_it_looked(tmp_path):
    with pytest.raises(WeightsError) as info:
        build_model("resnet18", "imagenet", weights_dir=tmp_path)
    message = str(info.value)
    assert "resnet18.tv_in1k" in message and str(tmp_path / "resnet18.tv_in1k.pth") in message
    assert "timm cache and hub" in message and "chexops weights fetch resnet18" in message


def test_checkpoint_initializer_accepts_in_domain_weights_with_another_head(tmp_path):
    source, _ = build_model("resnet18", "random", seed=7)  # a chexops model: 14-class head, other key names
    body = timm.create_model("resnet18", num_classes=14)
    body.load_state_dict({k: v for k, v in source.features.state_dict().items()} | {
        "fc.weight": source.head.weight, "fc.bias": source.head.bias})
    torch.save({"state_dict": body.state_dict()}, tmp_path / "indomain.pt")
    model, report = build_model("resnet18", f"checkpoint:{tmp_path / 'indomain.pt'}")
    assert report.weights_loaded and report.initializer.startswith("checkpoint:")
    assert torch.equal(model.features.conv1.weight, source.features.conv1.weight)


def test_checkpoint_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        build_model("resnet18", f"checkpoint:{tmp_path / 'nope.pt'}")


def test_checkpoint_not_a_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="not a state dict"):
        build_model("resnet18", f"checkpoint:{tmp_path / 'list.pt'}")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(WeightsError, match="could not be read as a state dict"):
        build_model("resnet18", f"checkpoint:{tmp_path / 'text.pt'}")


class Evil:  # weights_only=True must refuse to unpickle arbitrary objects
    pass


def test_checkpoint_refuses_arbitrary_pickles(tmp_path):
    torch.save({"a": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="could not be read"):
        build_model("resnet18", f"checkpoint:{tmp_path / 'evil.pt'}")


def test_weights_for_the_wrong_architecture(tmp_path):
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "densenet121.tv_in1k.pth")
    with pytest.raises(WeightsError, match="does not fit densenet121"):
        build_model("densenet121", "imagenet", weights_dir=tmp_path)
