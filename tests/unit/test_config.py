"""params.yaml, the profiles, and the checks that run before any training starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from chexops.config import config_from_dict, grid_keys, grid_runs, load_config, train_seed, validate
from chexops.errors import ConfigError, UnknownComponentError
from chexops.naming import RunKey
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


@pytest.mark.parametrize("params", ["params.yaml", "pipelines/profiles/paper.yaml",
                                    "pipelines/profiles/synthetic-paper.yaml",
                                    "pipelines/profiles/synthetic-evidence.yaml"])
def test_every_value_dvc_yaml_templates_is_in_the_params_file(params):
    """`cp <profile> params.yaml && dvc repro` fails before any stage when dvc.yaml names a key the file lacks
    (the paper profile once lacked grid.label_fractions)."""
    import re

    names = set(re.findall(r"\$\{([A-Za-z0-9_.]+)\}", (ROOT / "dvc.yaml").read_text())) - {"item"}
    raw = yaml.safe_load((ROOT / params).read_text())
    missing = []
    for name in sorted(n for n in names if not n.startswith("item.")):
        node = raw
        for part in name.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(name)
                break
            node = node[part]
    assert not missing, f"{params} lacks {missing}, which dvc.yaml templates"


def test_grid_seeds_add_one_repeat_per_full_configuration_named_and_foldered_by_seed(tmp_path):
    config = validate(load_config(_with(tmp_path / "p.yaml", seeds=[1, 2])))
    keys = grid_keys(config)
    assert [k.name for k in keys[:len(grid_runs(config))]] == [RunKey(*r).name for r in grid_runs(config)]
    repeats = [k for k in keys if k.seed is not None]
    g = config.grid
    assert len(repeats) == 2 * len(g.families) * len(g.initializers)
    key = next(k for k in repeats if (k.family, k.initializer, k.seed) == ("resnet18", "random", 2))
    assert key.name == "resnet18/random/full/seed-2" and key.slug == "resnet18__random__full__labels-1.0__seed-2"
    assert key.tune_file("runs") == RunKey("resnet18", "random").tune_file("runs")  # its configuration's lr
    assert key.train_command() == "chexops train --family resnet18 --init random --truncate 0 --seed 2"
    assert train_seed(config, key) == 2 and train_seed(config, RunKey("resnet18", "random")) == config.train.seed


@pytest.mark.parametrize("seeds, fractions, error", [
    ([0], [1.0], "other than train.seed"), ([1, 1], [1.0], "distinct"), ([-1], [1.0], "whole numbers"),
    ([1], [0.1], "add 1.0 to grid.label_fractions")])
def test_bad_grid_seeds_are_one_line_before_training(tmp_path, seeds, fractions, error):
    with pytest.raises(ConfigError, match=error):
        validate(load_config(_with(tmp_path / "p.yaml", seeds=seeds, label_fractions=fractions)))

