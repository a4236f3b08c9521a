"""In-domain self-supervised pretraining (MoCo v2) and the `ssl` initializer; label fractions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures.training import prepare_study, ssl_config

from chexops import naming
from chexops.config import config_from_dict, validate
from chexops.data.splits import label_fraction_rows
from chexops.errors import ConfigError, WeightsError
from chexops.models.build import build_model
from chexops.naming import RunKey
from chexops.records import file_sha256
from chexops.train.augment import radiograph_views, view_generator
from chexops.train.pretrain import Pretrainer

FAMILY = "resnet18"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl")
    return prepare_study(root, ssl_config(root))


def _pretrain(config, out: Path, **kwargs):
    out.mkdir(parents=True, exist_ok=True)
    logs: list[tuple[int, float]] = []
    result = Pretrainer(config, FAMILY, out, log=lambda m, s: logs.append((s, m["pretrain_loss"])),
                        progress_bar=False, **kwargs).fit()
    return result, logs


def test_views_are_seeded_per_step_and_stay_in_range():
    x = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    args = dict(crop_scale=[0.6, 1.0], rotate_degrees=10, hflip=True, brightness=0.2, contrast=0.2)
    a = radiograph_views(x, view_generator(0, 5, 0), **args)
    b = radiograph_views(x, view_generator(0, 5, 0), **args)
    c = radiograph_views(x, view_generator(0, 5, 1), **args)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 1, 32, 32) and a.min() >= 0 and a.max() <= 1


def test_pretraining_loss_falls_on_synthetic_data(prepared, tmp_path):
    """The loss starts near chance, ln(queue + 1) (the queue is filled with real keys first), and falls."""
    config = ssl_config(prepared, examples=1024, save_every=64)
    result, logs = _pretrain(config, tmp_path / "p")
    chance = np.log(config.pretrain.queue + 1)
    first, last = logs[0][1], np.mean([loss for _, loss in logs[-4:]])
    assert abs(first - chance) < 0.3, (first, chance)
    assert last < chance - 0.12 and last < first - 0.02, logs
    assert result.examples == 1024 and result.backbone.is_file()


def test_killed_pretraining_resumes_to_the_same_weights(prepared, tmp_path):
    config = ssl_config(prepared)
    reference, _ = _pretrain(config, tmp_path / "ref")

    def die(progress):
        if progress.examples >= 96:  # after the third saved state: like a SIGKILL between two saves
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _pretrain(config, tmp_path / "killed", on_save=die)
    assert not (tmp_path / "killed" / naming.BACKBONE_FILE).exists()
    resumed, logs = _pretrain(config, tmp_path / "killed")
    assert logs[0][0] > 96  # it went on from the saved state rather than starting over
    assert resumed.sha256 == reference.sha256
    a, b = torch.load(reference.backbone), torch.load(resumed.backbone)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pretraining_with_other_settings_is_not_resumed(prepared, tmp_path):
    config = ssl_config(prepared)

    def die(progress):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _pretrain(config, tmp_path / "p", on_save=die)
    with pytest.raises(ConfigError, match="other settings"):
        _pretrain(ssl_config(prepared, lr=5e-4), tmp_path / "p")


def test_ssl_stage_output_loads_through_the_registry_and_runs_link_to_it(prepared):
    """pretrain stage -> runs/pretrain/<family>__ssl; build_model('ssl') loads it; a fine-tuned run is tagged with
    the pretraining run id and the backbone's sha256, and evaluates with the pretraining's normalisation."""
    import mlflow

    from chexops.stages import pretrain
    from chexops.stages.configuration import run_configuration
    from chexops.stages.context import StageContext

    config = validate(ssl_config(prepared))
    cwd = os.getcwd()
    os.chdir(prepared)
    try:
        key = RunKey(FAMILY, "ssl")
        record = pretrain.run(StageContext(config, key, progress=False))
        folder = key.pretrain_dir(config.train.runs_dir)
        assert record["sha256"] == file_sha256(folder / naming.BACKBONE_FILE)
        assert not (folder / naming.STATE_FILE).exists()  # the resumable state is not kept once done
        model, report = build_model(FAMILY, "ssl", 0, 14, pretrain_dir=folder)
        state = torch.load(folder / naming.BACKBONE_FILE)
        assert torch.equal(model.features.conv1.weight, state["conv1.weight"])
        assert report.init_normalization == record["normalization"]
        fresh, _ = build_model(FAMILY, "random", 0, 14)
        assert not torch.equal(fresh.features.conv1.weight, state["conv1.weight"])
        # a truncated run starts from the same backbone
        cut, _ = build_model(FAMILY, "ssl", 2, 14, pretrain_dir=folder)
        assert torch.equal(cut.features.conv1.weight, state["conv1.weight"])

        result = run_configuration(StageContext(config, key, progress=False), register_model=False)
        run = mlflow.MlflowClient(config.tracking.uri).get_run(result["mlflow_run_id"])
        assert run.data.tags["chexops.pretrain_run_id"] == record["mlflow_run_id"]
        assert run.data.tags["chexops.pretrain_sha256"] == record["sha256"]
        assert run.data.tags["chexops.data"].startswith("synthetic CheXpert-format phantoms, 32 px")
        pre = mlflow.MlflowClient(config.tracking.uri).get_run(record["mlflow_run_id"])
        assert pre.info.run_name == f"{FAMILY}/ssl/pretrain"
        assert "pretrain_loss" in pre.data.metrics
        manifest = json.loads((key.train_dir(config.train.runs_dir) / naming.MANIFEST_FILE).read_text())
        assert manifest["normalization"] == record["normalization"]
        # the random configuration's pretrain stage is a pass-through
        rec = pretrain.run(StageContext(config, RunKey(FAMILY, "random"), progress=False))
        assert rec["pretraining"].startswith("none")
    finally:
        os.chdir(cwd)


def test_ssl_without_its_pretrain_output_says_how_to_make_it(tmp_path):
    with pytest.raises(WeightsError, match="run the pretrain stage first"):
        build_model(FAMILY, "ssl", 0, 14, pretrain_dir=tmp_path / "nothing")


def test_a_changed_backbone_file_is_refused(prepared, tmp_path):
    config = ssl_config(prepared)
    out = tmp_path / "p"
    result, _ = _pretrain(config, out)
    (out / naming.PRETRAIN_FILE).write_text(json.dumps({"family": FAMILY, "sha256": "0" * 64,
                                                        "normalization": result.normalization}))
    with pytest.raises(WeightsError, match="does not match the sha256"):
        build_model(FAMILY, "ssl", 0, 14, pretrain_dir=out)


def test_label_fractions_are_patient_grouped_nested_and_seeded():
    patients = [f"p{i}" for i in range(50) for _ in range(1 + i % 3)]  # 1 to 3 images per patient
    index = pd.DataFrame({"patient": patients})
    tenth, half = label_fraction_rows(index, 0.1, 0), label_fraction_rows(index, 0.5, 0)
    chosen = set(index.loc[half, "patient"])
    assert len(chosen) == 25 and len(set(index.loc[tenth, "patient"])) == 5
    assert set(index.loc[tenth, "patient"]) <= chosen  # smaller fractions are subsets of larger ones
    assert set(half) == set(np.flatnonzero(index["patient"].isin(chosen)))  # every image of a chosen patient
    assert np.array_equal(half, label_fraction_rows(index, 0.5, 0))
    assert not np.array_equal(half, label_fraction_rows(index, 0.5, 1))
    assert len(label_fraction_rows(index, 1.0, 0)) == len(index)


def test_label_fraction_run_trains_on_its_patients_only(prepared, tmp_path):
    from chexops.train.loop import Trainer

    config = ssl_config(prepared)
    cwd = os.getcwd()
    os.chdir(prepared)
    try:
        trainer = Trainer(config, RunKey(FAMILY, "random", 0, 0.5), lr=1e-3, run_dir=tmp_path, progress=False)
    finally:
        os.chdir(cwd)
    index = trainer.train_split.index
    rows = trainer.loader.order(0)
    assert set(rows) == set(label_fraction_rows(index, 0.5, config.study.seed))
    assert trainer.budget == len(rows)  # one epoch of the fraction


def test_label_fraction_config_is_checked():
    with pytest.raises(ConfigError, match="as decimals"):
        config_from_dict({"grid": {"label_fractions": [1]}})
    with pytest.raises(ConfigError, match=r"in \(0, 1\]"):
        validate(config_from_dict({"grid": {"label_fractions": [0.0, 1.0]}}))
    with pytest.raises(ConfigError, match="not a full configuration"):
        validate(config_from_dict({"grid": {"families": ["resnet18"], "initializers": ["random"],
                                            "truncated": [{"family": "resnet18", "depth": 1, "init": "ssl"}]}}))


def test_run_keys_name_label_fractions():
    assert RunKey("densenet121", "ssl").name == "densenet121/ssl/full"
    assert RunKey("densenet121", "ssl").slug == "densenet121__ssl__full__labels-1.0"
    assert RunKey("densenet121", "ssl", 0, 0.1).name == "densenet121/ssl/full/labels-0.1"
    assert RunKey("densenet121", "ssl", 0, 0.1).slug == "densenet121__ssl__full__labels-0.1"
