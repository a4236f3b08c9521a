"""A stop request (the worker's USR1 handler) stops training at the next step with its state saved there, and the
next run of the configuration resumes from that step instead of starting over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chexops.config import config_from_dict
from chexops.errors import TrainingStopped
from chexops.naming import RunKey
from chexops.train import interrupt

REPO = Path(__file__).resolve().parents[2]


def _prepared(root: Path) -> dict:
    raw = {"study": {"name": "stop"},
           "data": {"source": "synthetic", "synthetic": {"patients": 60, "seed": 2, "image_size": 48},
                    "image_size": 32, "index_dir": str(root / "index"), "cache_dir": str(root / "cache"),
                    "workers": 1},
           "train": {"batch_size": 8, "epochs": 2, "max_examples": 64, "eval_every": 32, "top_k": 1, "lr": 1e-3,
                     "device": "cpu", "runs_dir": str(root / "runs")},
           "grid": {"families": ["resnet18"], "initializers": ["random"], "truncated": []}}
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    env = dict(os.environ, PYTHONPATH=str(REPO), CHEXOPS_LOAD_PLUGINS="", OMP_NUM_THREADS="1")
    for stage in ("ingest", "prepare"):
        done = subprocess.run([sys.executable, str(REPO / "pipelines" / f"{stage}.py"), "--params", "params.yaml",
                               "--quiet"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    return raw


def test_stop_request_saves_state_at_the_step_and_the_next_run_resumes(tmp_path):
    from chexops.train.checkpoints import read_state
    from chexops.train.loop import train_run

    config = config_from_dict(_prepared(tmp_path))
    key = RunKey("resnet18", "random", 0)
    interrupt.request_stop("SIGUSR1")
    try:
        with pytest.raises(TrainingStopped, match=r"stopped at 8/64 examples \(SIGUSR1\)"):
            train_run(config, key, progress=False)
    finally:
        interrupt.clear_stop()
    run_dir = key.train_dir(config.train.runs_dir)
    state = read_state(run_dir, key)
    assert state["progress"]["examples"] == 8 and state["progress"]["batch"] == 1  # saved at the step, mid-epoch
    assert not (run_dir / "train.json").exists()
    result = train_run(config, key, progress=False)
    assert result.examples == 64 and result.steps == 8  # resumed: 1 step before the stop + 7 after it
