"""Built-in initializers: random (seeded), imagenet (the family's pinned timm tag), ssl (in-domain MoCo v2
pretraining by the study's `pretrain` stage), checkpoint:PATH."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chexops.components.hookspecs import hookimpl
from chexops.components.specs import FamilySpec, InitializerSpec, InitReport
from chexops.errors import WeightsError
from chexops.models import weights
from chexops.naming import BACKBONE_FILE, PRETRAIN_FILE


def _random(model: Any, family: FamilySpec, argument: str | None, context: dict[str, Any]) -> InitReport:
    # build_model creates the network under a seeded generator, so timm's own initialisation is already
    # the reproducible random init; re-initialising here would only change which random numbers are used.
    return InitReport("random", loaded=False, source=f"timm default init, seed {context.get('seed', 0)}")


def _imagenet(model: Any, family: FamilySpec, argument: str | None, context: dict[str, Any]) -> InitReport:
    state, source = weights.find_imagenet_weights(family, weights.weights_dirs(context.get("weights_dir")))
    return weights.apply_state_dict(model, state, source, "imagenet", family)


def _checkpoint(model: Any, family: FamilySpec, argument: str | None, context: dict[str, Any]) -> InitReport:
    path = Path(argument or "").expanduser()
    if path.name == BACKBONE_FILE and (path.parent / PRETRAIN_FILE).is_file():  # another study's pretrain output
        return _pretrained_backbone(model, family, path, f"checkpoint:{path}")
    state = weights.read_state_dict(path)
    return weights.apply_state_dict(model, state, str(path), f"checkpoint:{path}", family)


def _ssl(model: Any, family: FamilySpec, argument: str | None, context: dict[str, Any]) -> InitReport:
    """The backbone the study's `pretrain` stage left for this family."""
    folder = context.get("pretrain_dir")
    if folder is None or not (Path(folder) / PRETRAIN_FILE).is_file():
        raise WeightsError(f"no pretrained {family.name} backbone in {folder}: run the pretrain stage first "
                           f"(`dvc repro`, or `python pipelines/pretrain.py --family {family.name} --init ssl`).")
    return _pretrained_backbone(model, family, Path(folder) / BACKBONE_FILE, "ssl")


def _pretrained_backbone(model: Any, family: FamilySpec, backbone: Path, initializer: str) -> InitReport:
    """Load a pretrain stage's backbone, checked against its record; the record's normalisation and links go
    with it, so a fine-tune sees its input as the pretraining did and its run links to the pretraining run."""
    import json

    record = json.loads((backbone.parent / PRETRAIN_FILE).read_text())
    if record.get("family") != family.name:
        raise WeightsError(f"{backbone.parent} holds a {record.get('family')} backbone, not {family.name}.")
    from chexops.records import file_sha256

    digest = file_sha256(backbone)
    if digest != record.get("sha256"):
        raise WeightsError(f"{backbone} does not match the sha256 its {PRETRAIN_FILE} records (changed or partly "
                           "written): run the pretrain stage again.")
    report = weights.apply_state_dict(model, weights.read_state_dict(backbone), str(backbone), initializer, family)
    report.normalization = record["normalization"]
    report.tags = {"chexops.pretrain_run_id": str(record.get("mlflow_run_id")), "chexops.pretrain_sha256": digest,
                   "chexops.pretrain_method": str(record.get("method"))}
    return report


def _moco_pretrain(family: FamilySpec, out_dir: Path, context: dict[str, Any]) -> dict[str, Any]:
    from chexops.train.pretrain import Pretrainer

    result = Pretrainer(context["config"], family.name, out_dir, context.get("log"),
                        context.get("progress", True)).fit()
    return {"method": "MoCo v2", "backbone": str(result.backbone), "sha256": result.sha256,
            "examples": result.examples, "steps": result.steps, "seconds": round(result.seconds, 1),
            "final_loss": result.final_loss, "normalization": result.normalization, "device": result.device,
            "precision": result.precision}


@hookimpl
def register_initializers(register: Any) -> None:
    register(InitializerSpec("random", _random, "timm's default initialisation under the run's seed"))
    register(
        InitializerSpec(
            "imagenet",
            _imagenet,
            "ImageNet weights of the family's pinned timm tag (weights folder, then timm cache/hub)",
            pretrained=True,
            label="ImageNet (supervised), as CheXtransfer",
        )
    )
    register(
        InitializerSpec(
            "ssl",
            _ssl,
            "in-domain self-supervised: MoCo v2 on the training split's images (labels unused), by the pretrain "
            "stage; checkpoint:runs/pretrain/<family>__ssl/backbone.pt reuses one elsewhere",
            pretrained=True,
            pretrain=_moco_pretrain,
            label="in-domain self-supervised (MoCo v2), as MoCo-CXR",
        )
    )
    register(
        InitializerSpec(
            "checkpoint",
            _checkpoint,
            "any local state dict: checkpoint:PATH (a pretrain stage's backbone.pt keeps its normalisation)",
            pretrained=True,
            needs_argument=True,
        )
    )
