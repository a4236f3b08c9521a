"""Packing small runs on one device: K configurations trained one after another vs all K at once.

Each configuration trains in its own process (as `chexops worker`s sharing a GPU would), on the same synthetic
data, with the same fixed budget of examples. Sequential: the processes run one at a time. Packed: all K start
together on the same device. The gain is sequential wall time / packed wall time: above 1 when one small run
leaves the device idle (kernel launches, host-side work, validation), as small models on a big GPU do.

    python benchmarks/packing.py                                   # 4 configurations on the default device
    python benchmarks/packing.py --device cuda --size 128 --examples 4096
    python benchmarks/packing.py --device cuda --streams --configs densenet121:0,resnet18:0,mobilenetv2:0

On a CPU the processes share the cores (each packed process gets cores / K threads), so expect no gain there.

--streams measures the other way of packing, several models in one process: the same K models' training steps
(no validation, no process start-up) one model after another vs interleaved, each model on its own CUDA stream.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_CONFIGS = "resnet18:0,resnet18:1,resnet18:2,resnet18:3"


def params(workdir: Path, args: argparse.Namespace, runs_dir: Path, examples: int) -> dict:
    return {
        "study": {"name": "packing"},
        "data": {"source": "synthetic", "synthetic": {"patients": args.patients, "seed": 0, "image_size": args.size},
                 "image_size": args.size, "index_dir": str(workdir / "index"), "cache_dir": str(workdir / "cache")},
        "train": {"batch_size": args.batch, "epochs": 100, "max_examples": examples, "eval_every": examples,
                  "top_k": 1, "lr": 1e-3, "device": args.device, "runs_dir": str(runs_dir)},
    }


def child(args: argparse.Namespace) -> None:
    """One configuration's training, in its own process; prints its result as one JSON line."""
    import torch

    from chexops.config import config_from_dict
    from chexops.naming import RunKey
    from chexops.train.loop import train_run

    if args.threads:
        torch.set_num_threads(args.threads)
    family, depth = args.child.split(":")
    config = config_from_dict(json.loads(args.config_json))
    started = time.time()  # wall clock, comparable across processes
    result = train_run(config, RunKey(family, "random", int(depth)), progress=False)
    print(json.dumps({"run": args.child, "examples": result.examples, "seconds": result.seconds,
                      "started": started, "ended": time.time(), "device": str(result.runtime.device)}))


def launch(config: dict, run: str, workdir: Path, threads: int) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--child", run, "--config-json", json.dumps(config), "--threads", str(threads)]
    return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a training process failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def training_span(results: list[dict], mode: str) -> float:
    """Seconds spent training, process start-up excluded: summed one after another, first start to last end packed."""
    if mode == "sequential":
        return sum(r["ended"] - r["started"] for r in results)
    return max(r["ended"] for r in results) - min(r["started"] for r in results)


def timed(workdir: Path, args: argparse.Namespace, runs: list[str], mode: str) -> tuple[float, list[dict]]:
    """Wall time of training every configuration in `runs`, one at a time or all at once."""
    config = params(workdir, args, workdir / f"runs-{mode}", args.examples)
    cores = os.cpu_count() or 1
    start = time.perf_counter()
    if mode == "sequential":
        results = [finish(launch(config, run, workdir, cores)) for run in runs]
    else:
        procs = [launch(config, run, workdir, max(1, cores // len(runs))) for run in runs]
        results = [finish(p) for p in procs]
    return time.perf_counter() - start, results


def prepare_data(workdir: Path, args: argparse.Namespace) -> None:
    from chexops.config import config_from_dict
    from chexops.stages import ingest, prepare
    from chexops.stages.context import StageContext

    cwd = os.getcwd()
    os.chdir(workdir)  # the synthetic folder is written relative to the working directory
    try:
        config = config_from_dict(params(workdir, args, workdir / "runs", args.examples))
        ingest.run(StageContext(config, progress=False))
        prepare.run(StageContext(config, progress=False))
    finally:
        os.chdir(cwd)


def streams(args: argparse.Namespace, runs: list[str]) -> dict:
    """Step throughput of K models in one process: one after another vs interleaved on K CUDA streams."""
    import numpy as np
    import torch

    from chexops.data.loader import BatchLoader
    from chexops.models.build import build_model
    from chexops.train.runtime import select_runtime
    from chexops.train.step import train_step

    rt = select_runtime(args.device, "auto")
    if rt.device.type != "cuda":
        raise SystemExit("--streams needs a CUDA device: streams do not run concurrently on a CPU.")
    steps = max(1, args.examples // args.batch)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.batch * 8, args.size, args.size), dtype=np.uint8)
    targets = (rng.random((len(images), 14)) < 0.3).astype(np.float32)
    batches = list(BatchLoader(images, targets, np.ones_like(targets), args.batch, shuffle=False).batches(0))
    models = []
    for run in runs:
        family, depth = run.split(":")
        model = build_model(family, "random", int(depth))[0].to(rt.device, memory_format=torch.channels_last)
        models.append((model, torch.optim.Adam(model.parameters(), lr=1e-4), torch.cuda.Stream()))
    mean, std = [0.5] * 3, [0.25] * 3

    def run_steps(order: list[int], count: int, on_streams: bool) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        for step in range(count):
            for k in order:
                model, opt, stream = models[k]
                with torch.cuda.stream(stream if on_streams else torch.cuda.current_stream()):
                    train_step(model, opt, rt, batches[step % len(batches)], mean, std)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    everyone = list(range(len(models)))
    run_steps(everyone, 3, True)  # warm-up: cuDNN's choices, the allocator's pools
    sequential = sum(run_steps([k], steps, False) for k in everyone)
    interleaved = run_steps(everyone, steps, True)
    total = steps * args.batch * len(models)
    return {"device": torch.cuda.get_device_name(rt.device), "configs": runs, "steps": steps,
            "sequential_img_s": total / sequential, "streams_img_s": total / interleaved,
            "gain": sequential / interleaved}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help="family:truncation, comma-separated")
    p.add_argument("--examples", type=int, default=1024, help="training budget of each configuration")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patients", type=int, default=300)
    p.add_argument("--device", default="auto")
    p.add_argument("--streams", action="store_true", help="several models in one process on CUDA streams instead")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--workdir", type=Path, help="keep data and runs here (default: a temporary folder)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--config-json", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    runs = args.configs.split(",")
    if len(set(runs)) != len(runs) and not args.streams:
        raise SystemExit(f"--configs {args.configs}: each configuration must be distinct (one run folder each; "
                         "a repeated one would resume the first's finished run).")
    if args.streams:
        result = streams(args, runs)
        print(f"device {result['device']}, {len(runs)} models ({args.configs}), {result['steps']} steps each, "
              f"{args.size} px, batch {args.batch}, synthetic images: one after another "
              f"{result['sequential_img_s']:.1f} img/s, on {len(runs)} streams {result['streams_img_s']:.1f} img/s, "
              f"gain {result['gain']:.2f}x")
    else:
        result = processes(args, runs)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def processes(args: argparse.Namespace, runs: list[str]) -> dict:
    """Wall and training-only time of the configurations trained in one process each, sequential vs packed."""
    with tempfile.TemporaryDirectory(prefix="chexops-packing-") as tmp:
        workdir = (args.workdir or Path(tmp)).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        prepare_data(workdir, args)
        warm = params(workdir, args, workdir / "runs-warmup", args.batch)
        finish(launch(warm, runs[0], workdir, os.cpu_count() or 1))  # page cache and imports warm for both modes
        seq_s, seq = timed(workdir, args, runs, "sequential")
        packed_s, packed = timed(workdir, args, runs, "packed")
    total = sum(r["examples"] for r in seq)
    print(f"device {seq[0]['device']}, {len(runs)} configurations ({args.configs}), {args.examples} examples each, "
          f"{args.size} px, batch {args.batch}, {os.cpu_count()} CPU cores, synthetic phantoms")
    for name, wall, results in (("sequential", seq_s, seq), ("packed", packed_s, packed)):
        each = ", ".join(f"{r['run']} {r['seconds']:.1f} s" for r in results)
        span = training_span(results, name)
        print(f"{name:>10}: wall {wall:6.1f} s ({total / wall:6.1f} img/s), training only {span:6.1f} s "
              f"({total / span:6.1f} img/s); per run: {each}")
    seq_train, packed_train = training_span(seq, "sequential"), training_span(packed, "packed")
    print(f"packing gain, wall (process start-up included): {seq_s / packed_s:.2f}x; "
          f"training only: {seq_train / packed_train:.2f}x")
    return {"device": seq[0]["device"], "configs": runs, "examples": args.examples, "sequential_wall_s": seq_s,
            "packed_wall_s": packed_s, "gain_wall": seq_s / packed_s, "gain_training": seq_train / packed_train}


if __name__ == "__main__":
    main()
