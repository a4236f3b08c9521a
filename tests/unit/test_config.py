"""params.yaml, the profiles, and the checks that run before any training starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from chexops.config import config_from_dict, grid_runs, load_config, validate
from chexops.errors import ConfigError, UnknownComponentError
from chexops.stages.ingest import dataset_root

ROOT = Path(__file__).resolve().parents[2]


def test_default_params_validate_and_name_the_demo_grid():
    config = validate(load_config(ROOT / "params.yaml"))
    assert config.data.source == "synthetic" and config.grid.initializers == ["ssl", "random"]
    assert ("resnet18", "random", 1, 1.0, "drop-last-k") in grid_runs(config)
    assert ("resnet18", "ssl", 0, 1.0, "drop-last-k") in grid_runs(config)


@pytest.mark.parametrize("profile", ["paper.yaml", "synthetic-paper.yaml"])
def test_profiles_hold_the_paper_grid(profile):
    config = validate(load_config(ROOT / "pipelines" / "profiles" / profile))
    runs = grid_runs(config)
    full = [r for r in runs if r[2] == 0]
    assert len(full) == 32 and {r[1] for r in full} == {"imagenet", "random"}
    truncated = {(f, d) for f, _, d, _, _ in runs if d}
    assert truncated == {("densenet121", d) for d in (1, 2, 3)} | {("resnet18", d) for d in (1, 2, 3)} | {
        ("mnasnet", d) for d in range(1, 7)} | {("efficientnet_b0", d) for d in range(1, 7)}
    t = config.train
    assert (t.lr, t.batch_size, t.epochs, t.top_k, config.eval.bootstrap) == (1e-4, 16, 3, 10, 1000)


def test_evidence_profile_runs_the_default_grid_on_a_500_study_test_split():
    default = validate(load_config(ROOT / "params.yaml"))
    evidence = validate(load_config(ROOT / "pipelines" / "profiles" / "synthetic-evidence.yaml"))
    assert grid_runs(evidence) == grid_runs(default) and evidence.study.name != default.study.name
    assert (evidence.data.synthetic.holdout, evidence.data.synthetic.patients) == (500, 1600)


def test_paper_profile_protocol():
    config = load_config(ROOT / "pipelines" / "profiles" / "paper.yaml")
    assert (config.data.source, config.data.image_size, config.train.eval_every) == ("chexpert", 320, 8192)
    assert config.train.max_examples is None


def _with(path: Path, **grid) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["grid"].update(grid)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_family_fails_before_training_with_the_valid_names(tmp_path):
    config = load_config(_with(tmp_path / "p.yaml", families=["densenet121", "resnet19"]))
    with pytest.raises(UnknownComponentError, match=r"unknown family 'resnet19'.*Available: densenet121"):
        validate(config)


def test_unknown_initializer_fails_with_the_valid_names(tmp_path):
    config = load_config(_with(tmp_path / "p.yaml", initializers=["imagenett"]))
    with pytest.raises(UnknownComponentError, match="Did you mean: imagenet"):
        validate(config)


def test_truncation_deeper_than_the_family_allows(tmp_path):
    config = load_config(_with(tmp_path / "p.yaml", truncated=[{"family": "resnet18", "depth": 4}]))
    with pytest.raises(ConfigError, match="resnet18 allows dropping 1 to 3 blocks"):
        validate(config)


def test_image_size_too_small_for_inception():
    config = config_from_dict({"data": {"image_size": 64}, "grid": {"families": ["inception_v3"]}})
    with pytest.raises(ConfigError, match="inception_v3 needs images of at least 75 px"):
        validate(config)


def test_missing_real_data_path_names_the_key(tmp_path):
    config = config_from_dict({"data": {"source": "chexpert", "root": str(tmp_path / "nowhere")}})
    with pytest.raises(ConfigError, match="data.root"):
        dataset_root(config)


def test_unknown_and_mistyped_keys():
    with pytest.raises(ConfigError, match=r"unknown params key 'trian'.*Did you mean: train"):
        config_from_dict({"trian": {}})
    with pytest.raises(ConfigError, match=r"train.batch_size must be int, got 'sixteen'"):
        config_from_dict({"train": {"batch_size": "sixteen"}})
    assert config_from_dict({"train": {"lr": "1e-4"}}).train.lr == 1e-4  # YAML reads 1e-4 as a string


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "params.yaml")


def test_truncated_runs_keyed_by_configuration_name_dvc_stages_after_them() -> None:
    entry = {"family": "resnet18", "depth": 1, "init": "random"}
    named = config_from_dict({"grid": {"families": ["resnet18"], "initializers": ["random"],
                                       "truncated": {"resnet18-random-drop-1": entry}}})
    listed = config_from_dict({"grid": {"families": ["resnet18"], "initializers": ["random"], "truncated": [entry]}})
    assert named.grid.truncated == listed.grid.truncated
    with pytest.raises(ConfigError, match="name it 'resnet18-random-drop-1'"):
        config_from_dict({"grid": {"truncated": {"resnet18-drop1": entry}}})
