"""Cache + BatchLoader vs a plain JPEG Dataset + DataLoader, same images, batch size, workers and machine.

    python benchmarks/loader.py [--images 2000 --size 320 --batch 16 --workers 2]

Writes CheXpert-format JPEGs (the synthetic phantom dataset when chexops.data.synthetic is importable, else
smooth-noise JPEGs of 320 x 390 like CheXpert-small) and times the prepare stage. Then it times warm epochs of
each loader, alternating, and prints the median images/s and the ratio. Both loaders deliver the same uint8
(B, 1, S, S) batches (checked pixel for pixel); a second comparison adds the conversion to normalised float
(B, 3, S, S) on the CPU, which a GPU run does on the device instead.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from chexops.components.builtin.label_policies import u_ignore
from chexops.data.cache import load_split, prepare_split, resize_crop
from chexops.data.chexpert import read_chexpert
from chexops.data.labels import CSV_HEADER
from chexops.data.loader import BatchLoader, to_model_input

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class JpegDataset(Dataset):
    """The plain baseline: open, decode, resize and crop one JPEG per item."""

    def __init__(self, paths: list[Path], targets: np.ndarray, size: int, normalise: bool) -> None:
        self.paths, self.targets, self.size, self.normalise = paths, targets, size, normalise

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(self.paths[i]) as im:
            x = torch.from_numpy(np.asarray(resize_crop(im.convert("L"), self.size)).copy())[None]
        if self.normalise:  # what a torchvision ToTensor + Normalize pipeline does, in the worker
            x = to_model_input(x[None], "cpu", MEAN, STD)[0]
        return x, torch.from_numpy(self.targets[i])


def make_images(out: Path, n: int, noise: bool) -> Path:
    """A CheXpert-format folder with at least `n` images; returns the dataset folder."""
    try:
        from chexops.data.synthetic import write_synthetic
    except ImportError:
        noise = True
    if noise:
        return _noise_folder(out, n)
    # about 3 images per training patient; train is ~80% of patients
    return write_synthetic(out, patients=max(10, int(n / 2.4) + 10), seed=0, image_size=320, progress=True)


def _noise_folder(out: Path, n: int) -> Path:
    root = out / "CheXpert-v1.0-small"
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        rel = f"train/patient{i // 3 + 1:05d}/study{i % 3 + 1}/view1_frontal.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, size=(39, 32), dtype=np.uint8)  # smooth after upscaling, like a radiograph
        Image.fromarray(small).resize((320, 390), Image.Resampling.BICUBIC).save(root / rel, quality=90)
        rows.append([f"{root.name}/{rel}", "Female", "60", "Frontal", "AP", *rng.choice(["1.0", "0.0", ""], 14)])
    with open(root / "train.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([CSV_HEADER, *rows])
    with open(root / "valid.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([CSV_HEADER, rows[0]])
    return root


def images_per_second(batches: Callable[[], Iterable[torch.Tensor]], convert: Callable | None) -> float:
    """Images/s of one pass over `batches()`."""
    started, count = time.perf_counter(), 0
    for x in batches():
        x = convert(x) if convert else x
        count += len(x)
    return count / (time.perf_counter() - started)


def compare(ours: Callable, baseline: Callable, convert: Callable | None, repeats: int) -> tuple[float, float]:
    """Median images/s of each, after an untimed warm-up pass of each (page cache, worker start-up).

    The two alternate, so a load spike from another process on the machine hits both alike.
    """
    images_per_second(ours, convert)
    images_per_second(baseline, None)
    fast, slow = [], []
    for _ in range(repeats):
        fast.append(images_per_second(ours, convert))
        slow.append(images_per_second(baseline, None))
    return float(np.median(fast)), float(np.median(slow))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per loader (median reported)")
    parser.add_argument("--noise", action="store_true", help="smooth-noise JPEGs instead of synthetic phantoms")
    args = parser.parse_args()
    torch.set_num_threads(max(1, args.workers))
    with tempfile.TemporaryDirectory(prefix="chexops-bench-") as tmp:
        run(Path(tmp), args)


def run(tmp: Path, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    root = make_images(tmp / "data", args.images, args.noise)
    folder = read_chexpert(root)
    frames = [folder.train, folder.valid] + ([folder.test] if folder.test is not None else [])
    index = pd.concat(frames, ignore_index=True).iloc[: args.images].reset_index(drop=True)
    print(f"dataset: {len(index)} JPEGs of {Image.open(root.parent / index['path'].iat[0]).size} px "
          f"written in {time.perf_counter() - started:.0f} s")

    info = prepare_split(index, root, tmp / "cache", "bench", args.size, workers=args.workers, progress=False)
    print(f"prepare: {info.count} images in {info.seconds:.1f} s = {info.images_per_second:.0f} images/s "
          f"({args.workers} workers, size {args.size})")

    cached = load_split(tmp / "cache", "bench")
    targets, mask = u_ignore(cached.labels)
    ours = BatchLoader(cached.images, targets, mask, batch_size=args.batch, seed=0)
    paths = [root.parent / p for p in cached.index["path"]]
    cuda = torch.cuda.is_available()

    def plain(normalise: bool) -> DataLoader:
        return DataLoader(JpegDataset(paths, targets, args.size, normalise), batch_size=args.batch, shuffle=True,
                          num_workers=args.workers, pin_memory=cuda, persistent_workers=args.workers > 0)

    _same_pixels(ours, plain(False))
    results = {}
    for name, normalise in (("uint8 batches", False), ("normalised float (B,3,S,S) on CPU", True)):
        baseline = plain(normalise)
        convert = (lambda x: to_model_input(x, "cpu", MEAN, STD)) if normalise else None
        results[name] = compare(lambda: (b.x for b in ours.batches(0)),
                                lambda loader=baseline: (x for x, _ in loader), convert, args.repeats)
        del baseline  # stops its persistent workers before the next comparison
    print(f"\nloader images/s, batch {args.batch}, {args.workers} workers, {len(index)} images per epoch, "
          f"median of {args.repeats} warm epochs:")
    for name, (fast, slow) in results.items():
        print(f"  {name:36s} cache BatchLoader {fast:9.0f}   JPEG Dataset+DataLoader {slow:7.0f}   "
              f"ratio {fast / slow:5.1f}x")


def _same_pixels(ours: BatchLoader, baseline: DataLoader) -> None:
    """Both pipelines must produce identical images, or the comparison means nothing."""
    batch = ours.gather(np.arange(min(8, len(ours.images))))
    items = [baseline.dataset[int(i)][0] for i in batch.rows]
    if not torch.equal(batch.x, torch.stack(items)):
        raise SystemExit("cache and JPEG pipelines disagree on pixels; the benchmark would be meaningless")


if __name__ == "__main__":
    main()
