"""Round-3 fault audit, #12: what a refused or killed run leaves behind.

A refused train must not leave an empty runs/train/<run>/checkpoints/, and the `.state.pt.*.tmp` of a write a
kill cut short must not stay in a pretrain (or train) folder once the run resumed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fixtures.training import prepare_study

from chexops import naming
from chexops.config import config_from_dict
from chexops.errors import ConfigError
from chexops.naming import RunKey
from chexops.train.loop import train_run
from chexops.train.pretrain import Pretrainer

FAMILY = "resnet18"
KEY = RunKey(FAMILY, "random", 3)


def _config(root: Path, batch_size: int = 8):
    return config_from_dict({
        "study": {"name": "r3-leftovers"},
        "data": {"source": "synthetic", "synthetic": {"patients": 40, "seed": 1, "image_size": 40},
                 "image_size": 32, "index_dir": str(root / "index"), "cache_dir": str(root / "cache"), "workers": 1},
        "train": {"batch_size": batch_size, "epochs": 1, "eval_every": 16, "top_k": 1, "lr": 1e-3,
                  "max_examples": 32, "runs_dir": str(root / "runs")},
        "pretrain": {"examples": 64, "batch_size": 16, "queue": 32, "save_every": 32, "lr": 1e-3},
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}", "artifacts": str(root / "mlartifacts")},
        "grid": {"families": [FAMILY], "initializers": ["random"], "truncated": [
            {"family": FAMILY, "init": "random", "depth": 3}]},
    })


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("r3left")
    return prepare_study(root, _config(root))


def _refused_config(prepared: Path, runs: Path):
    import dataclasses

    config = _config(prepared, batch_size=100_000)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, runs_dir=str(runs)))


def test_a_refused_training_leaves_no_empty_run_folder(prepared, tmp_path):
    with pytest.raises(ConfigError, match="batch_size"):
        train_run(_refused_config(prepared, tmp_path), KEY, progress=False)
    assert not (KEY.train_dir(str(tmp_path)) / "checkpoints").exists()


def test_a_refused_train_stage_leaves_no_empty_run_folder(prepared, tmp_path):
    from chexops.stages import train
    from chexops.stages.context import StageContext

    cwd = os.getcwd()
    os.chdir(prepared)
    try:
        with pytest.raises(ConfigError, match="batch_size"):
            train.run(StageContext(_refused_config(prepared, tmp_path), key=KEY, progress=False))
    finally:
        os.chdir(cwd)
    assert not (KEY.train_dir(str(tmp_path)) / "checkpoints").exists()


def test_a_stray_temporary_is_gone_after_a_training_resumes(prepared, tmp_path):
    import dataclasses

    config = _config(prepared)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, runs_dir=str(tmp_path)))
    run_dir = KEY.train_dir(str(tmp_path))
    (run_dir / "checkpoints").mkdir(parents=True)
    stray = [run_dir / f".{naming.STATE_FILE}.k1ll3d.tmp", run_dir / "checkpoints" / ".ckpt-0000000016.pt.x.tmp"]
    for path in stray:
        path.write_bytes(b"half")
    result = train_run(config, KEY, progress=False)
    assert result.examples == 32
    assert not any(path.exists() for path in stray)


def test_a_stray_temporary_is_gone_after_a_pretraining_resumes(prepared, tmp_path):
    out = tmp_path / "p"

    def die(progress):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Pretrainer(_config(prepared), FAMILY, out, progress_bar=False, on_save=die).fit()
    stray = out / f".{naming.STATE_FILE}.k1ll3d.tmp"  # what a SIGKILL inside atomic_save leaves
    stray.write_bytes(b"half a state")
    result = Pretrainer(_config(prepared), FAMILY, out, progress_bar=False).fit()
    assert result.examples == 64
    assert not stray.exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
