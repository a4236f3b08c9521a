"""chexops plan: the validation schedule it counts, its profile file, and its estimate against a real run."""

from __future__ import annotations

import pytest
from fixtures.training import prepare_study

from chexops.config import config_from_dict, with_overrides
from chexops.errors import ConfigError
from chexops.naming import RunKey
from chexops.scaleout import plan
from chexops.scaleout.profile import ModelTiming, Profile
from chexops.train.loop import train_run

KEYS = [RunKey("resnet18", "random", 0), RunKey("resnet18", "random", 3)]  # resnet18 whole, and cut to one block


def make_config(root, **train):
    return config_from_dict({
        "study": {"name": "plan"},
        "data": {"source": "synthetic", "synthetic": {"patients": 60, "seed": 1, "image_size": 48},
                 "image_size": 32, "index_dir": str(root / "index"), "cache_dir": str(root / "cache"), "workers": 1},
        "train": {"batch_size": 8, "epochs": 2, "max_examples": 160, "eval_every": 48, "top_k": 2, "lr": 1e-3,
                  "runs_dir": str(root / "runs")} | train,
        "grid": {"families": ["resnet18"], "initializers": ["random"],
                 "truncated": [{"family": "resnet18", "depth": 3, "init": "random"}]},
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
    result = train_run(config, KEYS[1], log=lambda metrics, step: logged.append(step), progress=False)
    sizes = plan.image_counts(config)
    t = config.train
    budget = min(t.epochs * sizes.train, t.max_examples or t.epochs * sizes.train)
    assert plan.schedule(sizes.train, budget, t.batch_size, t.eval_every, t.epochs) == (result.examples, len(logged))


def test_plan_of_two_configurations_sums_its_measured_models(prepared, tmp_path, one_thread):
    # how close the estimate comes to real runs is a timing claim: benchmarks/plan_accuracy.py measures it
    config = make_config(prepared, runs_dir=str(tmp_path))
    sizes = plan.image_counts(config)
    profile = Profile("cpu", "fp32", "off", 32, 8, 256)
    for key in KEYS:
        timing = plan.measure_model(config, key.family, key.depth, key.strategy, steps=4, warmup=1)
        profile.timings[timing.model] = timing
    estimate = plan.plan(config, profile, sizes)
    assert [r["run"] for r in estimate["configurations"]] == [k.name for k in KEYS]
    assert all(r["total"] > r["train"] > 0 for r in estimate["configurations"])
    assert estimate["sequential_seconds"] == pytest.approx(sum(r["total"] for r in estimate["configurations"]))
    assert estimate["packed_seconds"] is None  # packing was not measured: the plan does not make a number up


def test_profile_round_trip_and_missing_models(prepared, tmp_path):
    config = make_config(prepared, runs_dir=str(tmp_path))
    timing = ModelTiming("resnet18", 3, "drop-last-k", 1e-3, 1e-4, 0.5, 0.1, None)
    profile = Profile("cpu", "fp32", "off", 32, 8, 256, {timing.model: timing}, pack=3, packing_gain=2.0,
                           packing_model=timing.model)
    path = tmp_path / "profile.json"
    path.write_text(profile.to_json())
    assert Profile.read(path) == profile
    with pytest.raises(ConfigError, match="no measurement of resnet18: "):  # the full model
        plan.plan(config, profile, plan.image_counts(config))
    only_first = make_config(prepared, runs_dir=str(tmp_path))
    only_first = config_from_dict({**only_first.to_dict(), "grid": {
        "families": [], "initializers": ["random"], "truncated": [{"family": "resnet18", "depth": 3, "init": "random"}],
        "label_fractions": [1.0]}})
    result = plan.plan(only_first, profile, plan.ImageCounts(100, 10, 10))
    (row,) = result["configurations"]
    assert row["train"] == pytest.approx(row["examples"] * 1e-3)
    assert result["packed_seconds"] == pytest.approx(result["sequential_seconds"] / 2.0)
    path.write_text("{}")
    with pytest.raises(ConfigError, match="not a chexops plan profile"):
        Profile.read(path)


def test_ssl_pretraining_is_measured_and_planned(prepared, tmp_path, one_thread):
    config = config_from_dict({**make_config(prepared, runs_dir=str(tmp_path)).to_dict(), "grid": {
        "families": ["resnet18"], "initializers": ["ssl", "random"], "label_fractions": [1.0]}})
    config = with_overrides(config, "pretrain", batch_size=8, queue=32, examples=800)
    assert plan.grid_pretraining(config) == [("resnet18", "ssl")]  # random has no pretraining step
    timing = plan.measure_pretraining(config, "resnet18", "ssl")
    assert timing.s_per_example > 0 and timing.fixed_s >= 0
    model = ModelTiming("resnet18", 0, "drop-last-k", 1e-3, 1e-4, 0.5, 0.1, None)
    profile = Profile("cpu", "fp32", "off", 32, 8, 256, {model.model: model}, {"resnet18/ssl": timing})
    result = plan.plan(config, profile, plan.image_counts(config))
    rows = {r["run"]: r for r in result["configurations"]}
    assert set(rows) == {"resnet18/ssl/full", "resnet18/random/full", "resnet18/ssl/pretrain"}
    assert rows["resnet18/ssl/pretrain"]["total"] == pytest.approx(timing.fixed_s + 800 * timing.s_per_example)
    assert result["sequential_seconds"] == pytest.approx(sum(r["total"] for r in rows.values()))
    with pytest.raises(ConfigError, match="no measurement of resnet18/ssl pretraining"):
        plan.plan(config, Profile("cpu", "fp32", "off", 32, 8, 256, {model.model: model}),
                  plan.image_counts(config))
    with pytest.raises(ConfigError, match="cannot time the pretraining of the 'random' initializer"):
        plan.measure_pretraining(config, "resnet18", "random")


def test_measure_and_the_command_on_a_saved_profile(prepared, tmp_path, capsys, one_thread):
    import json

    from chexops.cli import main

    config = make_config(prepared, runs_dir=str(tmp_path))
    profile = plan.measure(config, steps=1, warmup=1)
    assert sorted(profile.timings) == ["resnet18", "resnet18/drop-last-k-3"]
    assert profile.packing_gain is None and not profile.pretraining
    saved = tmp_path / "profile.json"
    saved.write_text(profile.to_json())
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(config.to_dict()))  # JSON is YAML
    main(["plan", "--params", str(params), "--profile", str(saved), "--images", "1000,100,50", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == {"train": 1000, "valid": 100, "test": 50}
    assert [r["run"] for r in out["configurations"]] == [k.name for k in KEYS]
    assert out["configurations"][0]["examples"] == 160  # max_examples caps 2 epochs of 1000
    main(["plan", "--params", str(params), "--profile", str(saved)])
    text = capsys.readouterr().out
    assert "packed: not measured" in text and "sequential:" in text
