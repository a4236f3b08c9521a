"""Training examples/s: the chexops step against a plain fp32 eager timm loop, same family and device.

chexops: cached uint8 batches (pinned), copied ahead on a side stream, normalised on the device, bf16 autocast
         and channels_last on CUDA, the step run as `train.compile` says (off, compile, cudagraphs), the loss
         summed on the device (no host sync per step).
plain:   a torch Dataset that normalises float32 images on the CPU, a DataLoader, fp32 eager, NCHW.
Both train the same architecture with a 14-output head at the same batch size on the same images; each family's
ratio comes from one run of this script.

    python benchmarks/train_step.py --family densenet121 --size 320 --batch 16
    python benchmarks/train_step.py --family all --compile off,compile,cudagraphs --json out.json   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F

from chexops.components.registry import get_registry
from chexops.data.loader import BatchLoader, on_device_ahead
from chexops.models.build import build_model
from chexops.train import compile as step_compile
from chexops.train.runtime import select_runtime
from chexops.train.step import train_step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def chexops_rate(args, family: str, mode: str, images, targets, mask) -> float:
    rt = select_runtime(args.device, "auto")
    model, report = build_model(family, "random")
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    model = model.to(rt.device, memory_format=fmt).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    mode = step_compile.resolve(mode, family, rt.device.type)
    net = step_compile.compile_model(model, mode)
    loader = BatchLoader(images, targets, mask, args.batch, seed=0)
    mean, std = report.normalization["mean"], report.normalization["std"]
    batches = on_device_ahead(loader.batches(0), rt.device)
    loss = torch.zeros((), device=rt.device)

    def steps(count: int) -> None:
        nonlocal loss
        for _ in range(count):
            step_compile.step_begins(mode)
            loss += train_step(net, opt, rt, next(batches), mean, std)

    steps(args.warmup)
    sync(rt.device)
    start = time.perf_counter()
    steps(args.steps)
    float(loss)  # the one host sync, as the training loop makes it once per validation
    return args.steps * args.batch / (time.perf_counter() - start)


class PlainDataset(torch.utils.data.Dataset):
    def __init__(self, images, targets, mean, std):
        self.images, self.targets = images, targets
        self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = torch.from_numpy(self.images[i].astype(np.float32) / 255.0)[None].expand(3, -1, -1)
        return (x - self.mean) / self.std, torch.from_numpy(self.targets[i])


def plain_rate(args, family_name: str, images, targets) -> float:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    family = get_registry().family(family_name)
    model = timm.create_model(family.timm_name, num_classes=14).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    mean, std = family.normalization
    loader = torch.utils.data.DataLoader(PlainDataset(images, targets, mean, std), batch_size=args.batch,
                                         shuffle=True, num_workers=args.workers)
    it = iter(loader)

    def step():
        x, y = next(it)
        x, y = x.to(device), y.to(device)
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    return args.steps * args.batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="densenet121", help="comma-separated families, or all (the registered ones)")
    p.add_argument("--compile", default="off", help="comma-separated train.compile modes to time for chexops")
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    families = ([e.spec.name for e in get_registry().entries("families")] if args.family == "all" else
                args.family.split(","))
    modes = args.compile.split(",")
    n = args.batch * (args.steps + args.warmup + 1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, args.size, args.size), dtype=np.uint8)
    targets = (rng.random((n, 14)) < 0.3).astype(np.float32)
    mask = np.ones_like(targets)
    rt = select_runtime(args.device, "auto")
    device = (torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else
              f"cpu ({torch.get_num_threads()} threads)")
    print(f"device {device}, chexops precision {rt.precision}, channels_last {rt.channels_last}; "
          f"{args.size} px, batch {args.batch}, {args.steps} timed steps after {args.warmup}; synthetic images")
    rows = []
    for family in families:
        plain = plain_rate(args, family, images, targets)
        row = {"family": family, "plain": plain}
        for mode in modes:
            try:
                row[mode] = chexops_rate(args, family, mode, images, targets, mask)
            except Exception as exc:  # noqa: BLE001 - one mode failing on one family is a result to report
                row[mode] = None
                row[f"{mode}_error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(row)
        figures = ", ".join(f"{m} {row[m]:.1f} img/s ({row[m] / plain:.2f}x)" if row[m] else f"{m} failed "
                            f"({row[m + '_error']})" for m in modes)
        print(f"{family}: plain {plain:.1f} img/s; chexops {figures}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": device, "precision": rt.precision, "size": args.size,
                                         "batch": args.batch, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
