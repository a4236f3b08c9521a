"""Training examples/s: the chexops step against a plain fp32 eager timm loop, same family and device.

chexops: cached uint8 batches (pinned), normalised on the device, bf16 autocast and channels_last on CUDA.
plain:   a torch Dataset that normalises float32 images on the CPU, a DataLoader, fp32 eager, NCHW.
Both train the same architecture with a 14-output head at the same batch size on the same images.

    python benchmarks/train_step.py --family densenet121 --size 320 --batch 16
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import timm
import torch
import torch.nn.functional as F

from chexops.components.registry import get_registry
from chexops.data.loader import BatchLoader
from chexops.models.build import build_model
from chexops.train.loop import train_step
from chexops.train.runtime import select_runtime


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def chexops_rate(args, images, targets, mask) -> float:
    rt = select_runtime(args.device, "auto")
    model, report = build_model(args.family, "random")
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    model = model.to(rt.device, memory_format=fmt).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loader = BatchLoader(images, targets, mask, args.batch, seed=0)
    mean, std = report.normalization["mean"], report.normalization["std"]
    batches = loader.batches(0)
    for _ in range(args.warmup):
        train_step(model, opt, rt, next(batches), mean, std)
    sync(rt.device)
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, opt, rt, next(batches), mean, std)
    sync(rt.device)
    print(f"chexops: device {rt.device}, precision {rt.precision}, channels_last {rt.channels_last}")
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


def plain_rate(args, images, targets) -> float:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    family = get_registry().family(args.family)
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
    p.add_argument("--family", default="densenet121")
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    n = args.batch * (args.steps + args.warmup + 1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, args.size, args.size), dtype=np.uint8)
    targets = (rng.random((n, 14)) < 0.3).astype(np.float32)
    mask = np.ones_like(targets)
    fast = chexops_rate(args, images, targets, mask)
    plain = plain_rate(args, images, targets)
    print(f"{args.family} {args.size}px batch {args.batch}: chexops {fast:.1f} img/s, plain {plain:.1f} img/s, "
          f"ratio {fast / plain:.2f}x")


if __name__ == "__main__":
    main()
