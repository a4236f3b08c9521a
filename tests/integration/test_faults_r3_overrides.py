"""Round-3 fault audit, #7: `chexops train ... --lr 0.002` on a configuration trained at 0.001 is not "up to date":
it says the run differs and names --restart."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from chexops import cli as cli_module
from chexops import naming
from chexops.config import config_from_dict
from chexops.naming import RunKey
from chexops.train.loop import train_run

KEY = RunKey("resnet18", "random", 3)


def _raw(root: Path) -> dict:
    return {
        "study": {"name": "r3-lr"},
        "data": {"source": "synthetic", "synthetic": {"patients": 40, "seed": 1, "image_size": 40},
                 "image_size": 32, "index_dir": str(root / "index"), "cache_dir": str(root / "cache"), "workers": 1},
        "train": {"batch_size": 8, "epochs": 1, "eval_every": 16, "top_k": 1, "lr": 1e-3, "max_examples": 32,
                  "runs_dir": str(root / "runs")},
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}", "artifacts": str(root / "mlartifacts")},
        "grid": {"families": ["resnet18"], "initializers": ["random"], "truncated": [
            {"family": "resnet18", "init": "random", "depth": 3}]},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A configuration trained to its whole budget at lr 0.001 (the train stage's part of `chexops train`)."""
    from chexops.stages import ingest, prepare
    from chexops.stages.context import StageContext

    root = tmp_path_factory.mktemp("r3lr")
    config = config_from_dict(_raw(root))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        ingest.run(StageContext(config, progress=False))
        prepare.run(StageContext(config, progress=False))
    finally:
        os.chdir(cwd)
    train_run(config, KEY, progress=False)
    # what evaluate and register leave: the run evaluated and registered (version 1), so it reads as up to date
    runs = config.train.runs_dir
    (KEY.train_dir(runs) / naming.RUN_RECORD_FILE).write_text(json.dumps({"run_id": "r1", "run": KEY.name}))
    KEY.registry_file(runs).parent.mkdir(parents=True)
    KEY.registry_file(runs).write_text(json.dumps({"run_id": "r1", "version": 1}))
    KEY.eval_dir(runs).mkdir(parents=True)
    (KEY.eval_dir(runs) / naming.EVAL_FILE).write_text(json.dumps({"metrics": {}}))
    (root / "params.yaml").write_text(yaml.safe_dump(_raw(root)))
    return root


def test_another_lr_on_a_trained_run_says_it_differs_and_names_restart(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained)
    with pytest.raises(SystemExit) as info:
        cli_module.main(["train", "--family", "resnet18", "--init", "random", "--truncate", "3", "--lr", "0.002",
                         "--params", str(trained / "params.yaml"), "--quiet"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.count("\n") == 1 and "up to date" not in err
    assert "--lr 0.002" in err and "--restart" in err and "--truncate 3" in err


def test_the_stage_does_not_call_a_run_at_another_lr_trained_to_budget(trained, monkeypatch):
    from chexops.stages.configuration import trained_to_budget as _trained_to_budget
    from chexops.stages.context import StageContext

    monkeypatch.chdir(trained)
    config = config_from_dict(_raw(trained))
    assert _trained_to_budget(StageContext(config, KEY, progress=False, lr=1e-3))
    assert not _trained_to_budget(StageContext(config, KEY, progress=False, lr=2e-3))
