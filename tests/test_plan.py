"""chexops plan: the validation schedule it counts, its profile file, and its estimate against a real run."""

from __future__ import annotations

import time

import pytest
from test_train import prepare_study

from chexops.config import config_from_dict
from chexops.errors import ConfigError
from chexops.naming import RunKey
from chexops.train import plan
from chexops.train.loop import train_run

KEYS = [RunKey("resnet18", "random", 3), RunKey("resnet18", "random", 2)]  # resnet18 cut to one and two blocks


def make_config(root, **train):
    return config_from_dict({
        "study": {"name": "plan"},
        "data": {"source": "synthetic", "synthetic": {"patients": 60, "seed": 1, "image_size": 48},
                 "image_size": 32, "index_dir": str(root / "index"), "cache_dir": str(root / "cache"), "workers": 1},
        "train": {"batch_size": 8, "epochs": 2, "max_examples": 160, "eval_every": 48, "top_k": 2, "lr": 1e-3,
                  "runs_dir": str(root / "runs")} | train,
        "grid": {"families": [], "initializers": ["random"],
                 "truncated": [{"family": k.family, "depth": k.depth, "init": k.initializer} for k in KEYS]},
    })


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    return prepare_study(root, make_config(root))


@pytest.mark.parametrize("train", [{}, {"max_examples": None}, {"eval_every": 1000, "max_examples": None},
                                   {"batch_size": 7, "eval_every": 20}])
def test_schedule_is_the_loops(prepared, tmp_path, train, one_thread):
    config = make_config(prepared, runs_dir=str(tmp_path), **train)
    logged = []
    result = train_run(config, KEYS[0], log=lambda metrics, step: logged.append(step), progress=False)
    sizes = plan.split_sizes(config)
    t = config.train
    budget = min(t.epochs * sizes.train, t.max_examples or t.epochs * sizes.train)
    assert plan.schedule(sizes.train, budget, t.batch_size, t.eval_every, t.epochs) == (result.examples, len(logged))


def test_plan_of_two_configurations_is_within_2x_of_the_measured_runs(prepared, tmp_path, one_thread):
    config = make_config(prepared, runs_dir=str(tmp_path))
    profile = plan.measure(config, steps=5, warmup=2)
    estimate = plan.plan(config, profile, plan.split_sizes(config))
    assert [r["run"] for r in estimate["configurations"]] == [k.name for k in KEYS]
    for row, key in zip(estimate["configurations"], KEYS, strict=True):
        start = time.perf_counter()
        train_run(config, key, progress=False)  # builds, trains and validates, as the plan's parts but test
        measured = time.perf_counter() - start
        expected = row["total"] - row["test"]
        assert 0.5 < measured / expected < 2.0, (key.name, measured, row)
    assert estimate["sequential_seconds"] == pytest.approx(sum(r["total"] for r in estimate["configurations"]))
    assert estimate["packed_seconds"] is None  # packing was not measured: the plan does not make a number up


def test_profile_round_trip_and_missing_models(prepared, tmp_path):
    config = make_config(prepared, runs_dir=str(tmp_path))
    timing = plan.ModelTiming("resnet18", 3, "drop-last-k", 1e-3, 1e-4, 0.5, 0.1, None)
    profile = plan.Profile("cpu", "fp32", "off", 32, 8, 256, {timing.model: timing}, pack=3, packing_gain=2.0,
                           packing_model=timing.model)
    path = tmp_path / "profile.json"
    path.write_text(profile.to_json())
    assert plan.Profile.read(path) == profile
    with pytest.raises(ConfigError, match="no measurement of resnet18/drop-last-k-2"):
        plan.plan(config, profile, plan.split_sizes(config))
    only_first = make_config(prepared, runs_dir=str(tmp_path))
    only_first = config_from_dict({**only_first.to_dict(), "grid": {
        "families": [], "initializers": ["random"], "truncated": [{"family": "resnet18", "depth": 3, "init": "random"}],
        "label_fractions": [1.0]}})
    result = plan.plan(only_first, profile, plan.SplitSizes(100, 10, 10))
    (row,) = result["configurations"]
    assert row["train"] == pytest.approx(row["examples"] * 1e-3)
    assert result["packed_seconds"] == pytest.approx(result["sequential_seconds"] / 2.0)
    path.write_text("{}")
    with pytest.raises(ConfigError, match="not a chexops plan profile"):
        plan.Profile.read(path)
