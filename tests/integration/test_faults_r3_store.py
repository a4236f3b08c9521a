"""Round-3 fault audit, #5: a zero-byte mlflow.db: `chexops train` of a trained configuration is not "up to date,
registered": the store does not hold the version the run folder records."""

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
        "study": {"name": "r3-store"},
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

    root = tmp_path_factory.mktemp("r3store")
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
    KEY.registry_file(runs).write_text(json.dumps({"registered_model": "r3-store.resnet18.random.drop-3", "version": 1,
                                                   "alias": "candidate", "run_id": "r1"}))
    from chexops.records import EvalRecord

    EvalRecord(run=KEY.name, family="resnet18", group="ResNet", initializer="random", test_split={},
               truncation="drop-3", truncation_strategy="drop-last-k", depth=3, parameters=1, imagenet_top1=None,
               timm_tag=None, reference_top1=None, reference_top1_source=None, test_source="official", data="synthetic",
               label_fraction=1.0, initializer_pretrained=False, initializer_label="random", mlflow_run_id="r1",
               metrics={}, n_test_studies=0, headline={"metric": "test_mean_auroc_6"}, undefined_tasks=[],
               bootstrap={}, best_single={}, checkpoint_test_mean_auroc=[]).write(KEY.eval_dir(runs))
    (root / "params.yaml").write_text(yaml.safe_dump(_raw(root)))
    return root


def _train_again(trained: Path, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        cli_module.main(["train", "--family", "resnet18", "--init", "random", "--truncate", "3",
                         "--params", str(trained / "params.yaml"), "--quiet"])
    captured = capsys.readouterr()
    assert info.value.code == 2, captured
    assert "up to date" not in captured.out + captured.err
    assert captured.err.count("\n") == 1 and "--restart" in captured.err
    return captured.err


def test_a_zero_byte_store_does_not_make_a_trained_run_up_to_date(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (trained / "mlflow.db").write_bytes(b"")  # the store emptied after the run was registered
    assert "empty (0 bytes)" in _train_again(trained, capsys)


def test_a_new_empty_store_does_not_make_a_trained_run_up_to_date(trained, capsys, monkeypatch, empty_store):
    import shutil

    monkeypatch.chdir(trained)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(empty_store, trained / "mlflow.db")  # replaced by a fresh store
    err = _train_again(trained, capsys)
    assert "version 1" in err and "does not hold it" in err
