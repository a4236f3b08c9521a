"""One copy of each checkpoint byte: a logged artifact identical to its source is a link to it, a finished run's
state keeps no model or optimizer, files in DVC-linked folders are replaced rather than written through."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from chexops import records
from chexops.naming import KEEP_STATE_ENV, STATE_FILE
from chexops.tracking.store import link_copies
from chexops.train.checkpoints import TopKKeeper
from chexops.train.loop import Progress, _save_state


def test_a_logged_copy_becomes_a_link_to_its_source(tmp_path: Path) -> None:
    source, other = tmp_path / "run" / "ckpt.pt", tmp_path / "run" / "other.pt"
    source.parent.mkdir()
    source.write_bytes(os.urandom(4096))
    other.write_bytes(os.urandom(4096))
    artifacts = tmp_path / "mlartifacts" / "1" / "models" / "m-1" / "artifacts"
    artifacts.mkdir(parents=True)
    shutil.copy(source, artifacts / "ckpt.pt")
    (artifacts / "changed.pt").write_bytes(os.urandom(4096))  # same size, other bytes: stays a copy
    assert link_copies(artifacts.parent.as_uri(), [source, other]) == 4096
    assert os.path.samefile(artifacts / "ckpt.pt", source)
    assert not os.path.samefile(artifacts / "changed.pt", other)
    assert link_copies(artifacts.parent.as_uri(), [source]) == 0  # already one file
    assert link_copies("s3://bucket/artifacts", [source]) == 0  # a remote store is left alone


@pytest.mark.parametrize("keep", [False, True])
def test_a_finished_run_keeps_no_optimizer_state_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              keep: bool) -> None:
    if keep:
        monkeypatch.setenv(KEEP_STATE_ENV, "1")
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    keeper = TopKKeeper(tmp_path, 1, {})
    _save_state(tmp_path, "f", model, optimizer, keeper, Progress(done=False))
    running = torch.load(tmp_path / STATE_FILE, weights_only=False)
    assert running["optimizer"] is not None and running["model"] is not None
    _save_state(tmp_path, "f", model, optimizer, keeper, Progress(done=True))
    finished = torch.load(tmp_path / STATE_FILE, weights_only=False)
    assert (finished["optimizer"] is not None) == keep and (finished["model"] is not None) == keep
    assert finished["progress"]["done"] and finished["fingerprint"] == "f"


def test_records_replace_a_read_only_linked_file(tmp_path: Path) -> None:
    cached = tmp_path / "cache"
    cached.write_text('{"run_id": "old"}')
    cached.chmod(0o444)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.link(cached, run_dir / "mlflow_run.json")  # as DVC's hardlink cache leaves an output
    records.save_run_record(run_dir, run_id="new")
    assert records.read_run_record(run_dir)["run_id"] == "new"
    assert cached.read_text() == '{"run_id": "old"}'  # DVC's copy untouched


def test_plan_states_the_disk_a_grid_needs() -> None:
    from chexops.config import config_from_dict
    from chexops.scaleout import plan

    config = config_from_dict({"data": {"image_size": 64}, "train": {"top_k": 3}, "grid": {
        "families": ["resnet18"], "initializers": ["random"], "label_fractions": [1.0],
        "truncated": [{"family": "resnet18", "depth": 1, "init": "random"}]}})
    full = plan.ModelTiming("resnet18", 0, "drop-last-k", 1e-3, 1e-4, 0.5, 0.1, None, 45_000_000, 135_000_000)
    cut = plan.ModelTiming("resnet18", 1, "drop-last-k", 1e-3, 1e-4, 0.5, 0.1, None, 11_000_000, 33_000_000)
    profile = plan.Profile("cpu", "fp32", "off", 64, 16, 256, {full.model: full, cut.model: cut}, pack=2)
    result = plan.plan(config, profile, plan.ImageCounts(1000, 100, 100))
    disk = result["disk"]
    assert disk["image_cache"] == 1200 * 64 * 64
    assert disk["checkpoints"] == 3 * (45_000_000 + 11_000_000)  # top-K of each configuration, once
    assert disk["total"] == disk["image_cache"] + disk["checkpoints"] + disk["backbones"]
    assert disk["while_training"] == 2 * 135_000_000 and disk["not_measured"] == []
    assert "disk: 172.9 MB kept" in plan.describe(result)


def test_plan_counts_each_grid_seeds_repeat_as_another_training_of_its_model() -> None:
    from chexops.config import config_from_dict
    from chexops.scaleout import plan

    grid = {"families": ["resnet18"], "initializers": ["random"], "label_fractions": [1.0]}
    timing = plan.ModelTiming("resnet18", 0, "drop-last-k", 1e-3, 1e-4, 0.5, 0.1, None, 45_000_000, 135_000_000)
    profile = plan.Profile("cpu", "fp32", "off", 64, 16, 256, {timing.model: timing})
    once, thrice = (plan.plan(config_from_dict({"grid": grid | {"seeds": seeds}}), profile,
                              plan.ImageCounts(1000, 100, 100)) for seeds in ([], [1, 2]))
    assert [r["run"] for r in thrice["configurations"]] == [
        "resnet18/random/full", "resnet18/random/full/seed-1", "resnet18/random/full/seed-2"]
    assert thrice["sequential_seconds"] == pytest.approx(3 * once["sequential_seconds"])
    assert thrice["disk"]["checkpoints"] == 3 * once["disk"]["checkpoints"]
