"""DDP: two gloo processes train what one process trains (same metrics, same weights), resume, shard and refuse
bad set-ups; `torchrun -m chexops train` runs the whole command with rank 0 alone writing and logging."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml
from fixtures.training import prepare_study

from chexops.config import config_from_dict
from chexops.data.loader import BatchLoader
from chexops.errors import ConfigError
from chexops.evaluate.ensemble import read_manifest
from chexops.evaluate.metrics import headline_key
from chexops.naming import RunKey
from chexops.train import distributed, loop
from chexops.train.distributed import DistContext, GlobalBatchNorm, ShardedLoader, sync_batchnorm
from chexops.train.loop import train_run

KEY = RunKey("resnet18", "random", 3)
WORLD = 2
TIMEOUT_S = 300


def params(root: Path, **train) -> dict:
    return {
        "study": {"name": "ddp"},
        "data": {"source": "synthetic", "synthetic": {"patients": 60, "seed": 1, "image_size": 48},
                 "image_size": 32, "index_dir": str(root / "index"), "cache_dir": str(root / "cache"), "workers": 1},
        "train": {"batch_size": 8, "epochs": 2, "eval_every": 64, "top_k": 3, "lr": 1e-3, "device": "cpu",
                  "runs_dir": str(root / "runs")} | train,
        "eval": {"bootstrap": 50},
        "grid": {"families": ["resnet18"], "initializers": ["random"]},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join_env(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)  # two processes on a small CI machine


def _train_rank(rank: int, port: int, root: str, runs_dir: str, fail_at: int) -> None:
    """One DDP rank (spawned): train KEY; with fail_at, every rank dies at that step, like a killed job."""
    _join_env(rank, port)
    ctx = distributed.init_from_env("cpu")
    assert ctx is not None and ctx.rank == rank and ctx.backend == "gloo"
    if fail_at:
        real_step, calls = loop.Trainer._step, {"n": 0}

        def dying_step(self, batch):
            calls["n"] += 1
            if calls["n"] == fail_at:
                raise RuntimeError("simulated kill")
            return real_step(self, batch)

        loop.Trainer._step = dying_step
    try:
        train_run(config_from_dict(params(Path(root), runs_dir=runs_dir)), KEY, progress=False)
    finally:
        distributed.shutdown()


def _batchnorm_rank(rank: int, port: int, out: str) -> None:
    """One rank of the batch-norm check: its half of a fixed batch through GlobalBatchNorm, forward and backward."""
    _join_env(rank, port)
    distributed.init_from_env("cpu")
    try:
        x, w = _bn_inputs()
        bn = sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))[0]
        assert isinstance(bn, GlobalBatchNorm)
        mine = x[rank * 3:(rank + 1) * 3].clone().requires_grad_(True)
        y = bn(mine)
        (y * w[rank * 3:(rank + 1) * 3]).sum().backward()
        torch.save({"y": y.detach(), "dx": mine.grad, "dweight": bn.weight.grad,
                    "running_var": bn.running_var.clone()}, Path(out) / f"rank{rank}.pt")
    finally:
        distributed.shutdown()


def _bn_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 3, 4, 4, generator=g) * 3 + 1, torch.randn(6, 3, 4, 4, generator=g)


def spawn(fn, *args) -> None:
    """fn(rank, *args) in WORLD processes; fails (rather than hangs) if they do not finish in time."""
    context = mp.start_processes(fn, args=args, nprocs=WORLD, join=False, start_method="spawn")
    deadline = TIMEOUT_S
    while not context.join(timeout=5):
        deadline -= 5
        if deadline <= 0:
            for p in context.processes:
                p.kill()
            pytest.fail(f"DDP processes did not finish within {TIMEOUT_S} s")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    return prepare_study(root, config_from_dict(params(root)))


@pytest.fixture(scope="module")
def reference(prepared):
    """The single-process run every DDP run must reproduce."""
    result = train_run(config_from_dict(params(prepared, runs_dir=str(prepared / "single"))), KEY, progress=False)
    return result.run_dir


def assert_same_run(got_dir: Path, ref_dir: Path) -> None:
    got, ref = read_manifest(got_dir / "manifest.json"), read_manifest(ref_dir / "manifest.json")
    assert got["examples"] == ref["examples"] and got["steps"] == ref["steps"]
    gc, rc = got["checkpoints"], ref["checkpoints"]
    assert [(c["file"], c["step"], c["examples"], c["epoch"]) for c in gc] == \
        [(c["file"], c["step"], c["examples"], c["epoch"]) for c in rc]
    for g, r in zip(gc, rc, strict=True):
        assert g["val_score"] == pytest.approx(r["val_score"], abs=1e-4)
        assert g["metrics"].keys() == r["metrics"].keys()
        for name, value in r["metrics"].items():
            assert g["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-4), name
    # Weights: the earliest kept checkpoint, tightly. Two processes sum gradients in another order than one, and
    # Adam divides by sqrt(v), which magnifies those last-bit differences for parameters whose gradients are near 0,
    # so over a whole run weights drift apart by up to ~1e-3 (one Adam step at this lr) while every validation
    # metric above still agrees within 1e-4.
    first = min(range(len(gc)), key=lambda i: rc[i]["step"])
    got, ref = (torch.load(d / c[first]["file"], map_location="cpu") for d, c in ((got_dir, gc), (ref_dir, rc)))
    assert got.keys() == ref.keys()  # plain batch-norm keys: DDP checkpoints load anywhere
    for name, tensor in ref.items():
        assert torch.allclose(got[name].float(), tensor.float(), rtol=1e-3, atol=1e-4), name


def test_two_processes_train_what_one_trains(prepared, reference, tmp_path):
    spawn(_train_rank, free_port(), str(prepared), str(tmp_path), 0)
    run_dir = KEY.train_dir(tmp_path)
    assert_same_run(run_dir, reference)
    assert json.loads((run_dir / "train.json").read_text())["examples"] == read_manifest(
        reference / "manifest.json")["examples"]


@pytest.mark.slow
def test_killed_ddp_run_resumes_on_every_rank(prepared, reference, tmp_path):
    with pytest.raises(mp.ProcessRaisedException, match="simulated kill"):
        spawn(_train_rank, free_port(), str(prepared), str(tmp_path), 13)  # mid-epoch, between evaluations
    state = torch.load(KEY.train_dir(tmp_path) / "state.pt", map_location="cpu", weights_only=False)
    assert 0 < state["progress"]["step"] < 13 and not state["progress"]["done"]
    spawn(_train_rank, free_port(), str(prepared), str(tmp_path), 0)
    assert_same_run(KEY.train_dir(tmp_path), reference)


def test_global_batch_norm_matches_one_batch(tmp_path):
    spawn(_batchnorm_rank, free_port(), str(tmp_path))
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    x, w = _bn_inputs()
    x.requires_grad_(True)
    bn = torch.nn.BatchNorm2d(3)
    y = bn(x)
    (y * w).sum().backward()
    assert torch.allclose(torch.cat([p["y"] for p in parts]), y.detach(), atol=1e-5)
    assert torch.allclose(torch.cat([p["dx"] for p in parts]), x.grad, atol=1e-5)
    # each rank holds its share of the weight gradient; DDP's all-reduce adds them up
    assert torch.allclose(sum(p["dweight"] for p in parts), bn.weight.grad, atol=1e-4)
    assert all(torch.allclose(p["running_var"], bn.running_var, atol=1e-6) for p in parts)


def test_ranks_take_disjoint_slices_of_every_global_batch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (23, 4, 4), dtype=np.uint8)
    targets = rng.random((23, 5)).astype(np.float32)
    mask = (rng.random((23, 5)) > 0.3).astype(np.float32)
    single = BatchLoader(images, targets, mask, 6, seed=3, prefetch=0)
    shards = [ShardedLoader(BatchLoader(images, targets, mask, 6, seed=3, prefetch=0), DistContext(r, 3, r, "gloo"))
              for r in range(3)]
    for epoch in (0, 1):
        for b, whole in enumerate(single.batches(epoch)):
            parts = [list(s.batches(epoch, start=b))[0] for s in shards]
            rows = np.concatenate([p.rows for p in parts])
            assert sorted(rows.tolist()) == sorted(whole.rows.tolist()) and len(set(rows.tolist())) == len(rows)
            assert {p.examples for p in parts} == {len(whole.rows)}
            assert all(p.loss_norm * 3 == pytest.approx(float(whole.mask.sum())) for p in parts)
            assert max(len(p.rows) for p in parts) - min(len(p.rows) for p in parts) <= 1
            assert torch.equal(torch.cat([p.x for p in parts])[np.argsort(rows)], whole.x)


def test_batch_size_must_split_over_the_processes():
    loader = BatchLoader(np.zeros((8, 4, 4), np.uint8), np.zeros((8, 2), np.float32), np.ones((8, 2), np.float32), 6)
    with pytest.raises(ConfigError, match="train.batch_size is 6.*multiple of 4"):
        ShardedLoader(loader, DistContext(0, 4, 0, "gloo"))


def test_bad_launch_environments_are_explained(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="MASTER_ADDR.*torchrun --nproc-per-node"):
        distributed.init_from_env("cpu")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    with pytest.raises(ConfigError, match="train.device is 'cuda:1'.*LOCAL_RANK"):
        distributed.init_from_env("cuda:1")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_from_env("cpu") is None and distributed.is_main()


@pytest.mark.slow
def test_torchrun_chexops_train(prepared, reference, tmp_path):
    """The real command under torchrun: one MLflow run, written by rank 0, with the single-process metrics."""
    from mlflow import MlflowClient

    raw = params(prepared, runs_dir=str(tmp_path / "runs"))
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifacts": str(tmp_path / "mlartifacts")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", f"--nproc-per-node={WORLD}",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "chexops", "train",
           "--family", KEY.family, "--init", KEY.initializer, "--truncate", str(KEY.depth),
           "--params", str(tmp_path / "params.yaml"), "--quiet"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = KEY.train_dir(tmp_path / "runs")
    assert_same_run(run_dir, reference)
    client = MlflowClient(tracking_uri=raw["tracking"]["uri"])
    experiment = client.get_experiment_by_name("ddp")
    # the configuration's run; the study's parent run (tag chexops.stage = study) holds it
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("chexops.stage") != "study"]
    assert [(r.info.run_name, r.info.status) for r in runs] == [(KEY.name, "FINISHED")]
    history = client.get_metric_history(runs[0].info.run_id, headline_key(runs[0].data.metrics, "val"))
    assert len({m.step for m in history}) == len(history)  # each evaluation logged once, not once per rank
    assert headline_key(runs[0].data.metrics) in runs[0].data.metrics
    record = json.loads(KEY.registry_file(tmp_path / "runs").read_text())
    assert record["run_id"] == runs[0].info.run_id and record["version"] == 1
