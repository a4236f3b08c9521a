"""grid.seeds: a repeat of a full configuration with another train seed trains in its own folder and MLflow run,
is evaluated like its configuration, is never registered, and is up to date on a second call."""

from __future__ import annotations

import json

import yaml
from fixtures.training import prepare_study, trained_params

from chexops import cli as cli_module
from chexops.config import config_from_dict
from chexops.naming import DVC_EXP_ENV, RunKey

BASE, REPEAT = RunKey("resnet18", "random"), RunKey("resnet18", "random", seed=1)


def _train(root, *extra):
    try:
        cli_module.main(["train", "--family", "resnet18", "--init", "random", *extra,
                         "--params", str(root / "params.yaml"), "--quiet"])
    except SystemExit as exc:
        assert exc.code in (0, None)


def test_a_seed_repeat_trains_apart_is_evaluated_and_never_registered(tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    raw = trained_params(tmp_path, "seeds")
    raw["grid"]["seeds"] = [1]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    config = config_from_dict(raw)
    prepare_study(tmp_path, config)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DVC_EXP_ENV, "lr-sweep")  # the console names the alias the version took
    _train(tmp_path)
    assert "registered seeds.resnet18.random.full version 1 (alias candidate-lr-sweep)" in capsys.readouterr().out
    monkeypatch.delenv(DVC_EXP_ENV)
    _train(tmp_path, "--seed", "1")
    runs = config.train.runs_dir
    assert REPEAT.train_dir(runs).name == "resnet18__random__full__labels-1.0__seed-1"
    record = json.loads((REPEAT.eval_dir(runs) / "eval.json").read_text())
    base = json.loads((BASE.eval_dir(runs) / "eval.json").read_text())
    assert (record["run"], record["train_seed"], record["seed_repeat"]) == ("resnet18/random/full/seed-1", 1, True)
    assert (base["train_seed"], base["seed_repeat"]) == (config.train.seed, False)
    assert record["metrics"] != base["metrics"]  # another seed, another training
    assert BASE.registry_file(runs).is_file() and not REPEAT.registry_file(runs).exists()
    client = MlflowClient(tracking_uri=raw["tracking"]["uri"])
    (run,) = client.search_runs(client.get_experiment_by_name("seeds").experiment_id,
                                "attributes.run_name = 'resnet18/random/full/seed-1'")
    assert run.data.params["seed"] == "1" and run.info.status == "FINISHED"
    assert [m.name for m in client.search_registered_models()] == ["seeds.resnet18.random.full"]
    capsys.readouterr()
    _train(tmp_path, "--seed", "1")  # trained, evaluated: nothing to do
    assert "up to date" in capsys.readouterr().out
