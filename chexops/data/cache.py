"""Decode every image once into a uint8 memory-mapped array, so training never touches a JPEG.

`prepare_split` writes `<split>.npy` (N, S, S) uint8, `<split>.csv` (the index rows cached, row i <-> image i)
and `<split>.json` (count, size, skipped images with reasons, sha256 of both files, pixel mean/std in [0, 1]).
The JSON is written last, so its presence marks a complete cache. Outputs are byte-stable across runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from chexops.data.chexpert import INDEX_COLUMNS, read_index, resolve_image, write_index
from chexops.data.images import to_gray8
from chexops.data.labels import OBSERVATIONS
from chexops.data.processes import clean_context
from chexops.errors import BadImage, ConfigError, DataError
from chexops.records import file_sha256

log = logging.getLogger(__name__)

# Refused before decoding: a CheXpert radiograph is at most ~3000 x 3000 (9 MP); 50 MP is a corrupt or hostile file.
MAX_PIXELS = 50_000_000
_HASH_CHUNK = 8 << 20
# The check every load makes of <split>.npy: its size and the sha256 of SAMPLE_BLOCKS evenly spaced blocks (the
# whole file when smaller), ~4 MiB read whatever the cache's size; `verify=True` re-hashes every byte.
SAMPLE_BLOCKS, SAMPLE_BLOCK = 64, 64 << 10


@dataclass
class CacheInfo:
    """What prepare_split wrote."""

    split: str
    count: int
    image_size: int
    skipped: list[dict[str, str]]
    npy_path: Path
    csv_path: Path
    json_path: Path
    sha256: dict[str, str]
    mean: float
    std: float
    seconds: float = 0.0
    npy_check: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return (self.count + len(self.skipped)) / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class CachedSplit:
    """A prepared split: images memory-mapped read-only, the index, its labels (N, 14) with NaN, and the JSON."""

    images: np.ndarray
    index: pd.DataFrame
    labels: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def resize_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (antialiased bilinear), then centre-crop `size` x `size`."""
    w, h = image.size
    if w <= h:
        new = (size, max(size, round(h * size / w)))
    else:
        new = (max(size, round(w * size / h)), size)
    if new != (w, h):
        image = image.resize(new, Image.Resampling.BILINEAR)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def load_image(path: Path, size: int | None, max_pixels: int | None = None) -> np.ndarray | None:
    """The grayscale image at `path` (any PIL mode, see chexops.data.images), resized and cropped to `size`
    (None: decode only, to validate).

    Raises BadImage for a missing, unreadable, corrupt or oversized file; size is checked before decoding.
    """
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > limit:
                    raise BadImage(f"{w} x {h} pixels is over the {limit:,}-pixel limit; not decoded")
                gray = to_gray8(im)
    except FileNotFoundError:
        raise BadImage("file not found") from None
    except IsADirectoryError:
        raise BadImage("is a folder, not an image") from None
    except UnidentifiedImageError:
        raise BadImage("not an image file PIL can read") from None
    except Image.DecompressionBombError as exc:
        raise BadImage(f"over the pixel limit; not decoded ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"corrupt or truncated image ({exc})") from None
    return None if size is None else np.asarray(resize_crop(gray, size), dtype=np.uint8)


# A worker's answer: (position, image or None, reason or None, sum of pixels, sum of squared pixels).
_Result = tuple[int, np.ndarray | None, str | None, int, int]
_OUTSIDE = "outside the dataset folder: "


def _decode_task(task: tuple[int, str, str, int | None, int | None]) -> _Result:
    pos, rel_path, root, size, max_pixels = task
    try:
        path = resolve_image(Path(root), rel_path)
    except DataError as exc:
        return pos, None, _OUTSIDE + str(exc), 0, 0
    try:
        arr = load_image(path, size, max_pixels)
    except BadImage as exc:
        return pos, None, str(exc), 0, 0
    if arr is None:
        return pos, None, None, 0, 0
    wide = arr.astype(np.int64)
    return pos, arr, None, int(wide.sum()), int((wide * wide).sum())


def _decode_all(
    paths: list[str], root: Path, size: int | None, workers: int | None, desc: str, progress: bool
) -> Iterator[_Result]:
    """Decode in order, in parallel chunks when workers > 1, with a progress bar."""
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    if n_workers < 0:
        raise ConfigError(f"workers must be 0 or more (0 or 1 decodes in this process), got {workers}.")
    # MAX_PIXELS is read here, in the parent, so a changed limit reaches the workers, which import their own copy.
    tasks = [(i, p, str(root), size, MAX_PIXELS) for i, p in enumerate(paths)]
    bar = tqdm(total=len(tasks), desc=desc, unit="img", disable=not progress, mininterval=1.0)
    try:
        if n_workers <= 1 or len(tasks) < 2:
            for result in map(_decode_task, tasks):
                bar.update()
                yield result
            return
        chunk = max(1, min(64, len(tasks) // (n_workers * 8)))
        with clean_context([__name__]).Pool(n_workers) as pool:
            for result in pool.imap(_decode_task, tasks, chunksize=chunk):
                bar.update()
                yield result
    finally:
        bar.close()


def prepare_split(
    index: pd.DataFrame,
    root: Path,
    out_dir: Path,
    split: str,
    image_size: int,
    on_bad_image: Literal["error", "skip"] = "error",
    workers: int | None = None,
    progress: bool = True,
) -> CacheInfo:
    """Decode every image of `index` (paths relative to root's parent) into `out_dir/<split>.{npy,csv,json}`."""
    _check_args(index, on_bad_image, image_size)
    root, out_dir = Path(root).resolve(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    npy, csv, meta = (out_dir / f"{split}.{ext}" for ext in ("npy", "csv", "json"))
    meta.unlink(missing_ok=True)  # no JSON means no complete cache, should anything below fail
    tmp_npy, tmp_csv = out_dir / f".{split}.npy.partial", out_dir / f".{split}.csv.partial"
    started = time.perf_counter()
    try:
        kept, skipped, s1, s2 = _fill(index, root, tmp_npy, split, image_size, on_bad_image, workers, progress)
        if not kept:
            raise DataError(f"none of the {len(index)} {split} images could be read; first: {skipped[0]}.")
        _shrink_npy(tmp_npy, len(kept), image_size)
        write_index(index.iloc[kept], tmp_csv)
        os.replace(tmp_npy, npy)
        os.replace(tmp_csv, csv)
    finally:
        tmp_npy.unlink(missing_ok=True)
        tmp_csv.unlink(missing_ok=True)
    n_pixels = len(kept) * image_size * image_size
    mean = s1 / n_pixels
    std = max(0.0, s2 / n_pixels - mean * mean) ** 0.5
    info = CacheInfo(split, len(kept), image_size, skipped, npy, csv, meta,
                     {"npy": file_sha256(npy), "csv": file_sha256(csv)}, mean / 255.0, std / 255.0,
                     npy_check={"bytes": npy.stat().st_size, "sample_sha256": sample_sha256(npy)})
    meta.write_text(json.dumps(_info_json(info), indent=2, sort_keys=True) + "\n")
    info.seconds = time.perf_counter() - started
    if skipped:
        log.warning(f"skipped {len(skipped)} of {len(index)} {split} images that could not be read "
              f"(listed in {meta}); first: {skipped[0]['path']}: {skipped[0]['reason']}")
    return info


def _check_args(index: pd.DataFrame, on_bad_image: str, image_size: int) -> None:
    if on_bad_image not in ("error", "skip"):
        raise ConfigError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}.")
    if not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}.")
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise DataError(f"the index to prepare lacks columns {missing}; build it with read_chexpert/make_splits.")
    if index.empty:
        raise DataError("the index to prepare has no rows; nothing to cache.")


def _fill(
    index: pd.DataFrame, root: Path, tmp_npy: Path, split: str, size: int, on_bad: str,
    workers: int | None, progress: bool,
) -> tuple[list[int], list[dict[str, str]], int, int]:
    """Decode into a memmap, compacting out skipped images; returns (kept positions, skipped, sums)."""
    images = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=np.uint8, shape=(len(index), size, size))
    kept: list[int] = []
    skipped: list[dict[str, str]] = []
    s1 = s2 = 0
    sources = index["source"].astype(str).tolist()
    decoded = _decode_all(index["path"].astype(str).tolist(), root, size, workers, f"prepare {split}", progress)
    # closing() stops the worker pool at once when a bad image aborts the loop.
    with closing(decoded) as results:
        for pos, arr, reason, a, b in results:
            if reason is not None:
                where = f"{index['path'].iat[pos]} ({sources[pos]})"
                if reason.startswith(_OUTSIDE):  # never skipped: it is a hostile or broken folder, not a bad image
                    raise DataError(f"{split} image {where}: {reason} Replace the link with the file, or remove "
                                    "its row; on_bad_image='skip' does not skip paths leading outside the folder.")
                if on_bad == "error":
                    raise DataError(f"{split} image {where}: {reason}. Fix or remove it, or prepare with "
                                    "on_bad_image='skip' to leave unreadable images out.")
                skipped.append({"path": index["path"].iat[pos], "source": sources[pos], "reason": reason})
                continue
            images[len(kept)] = arr
            kept.append(pos)
            s1, s2 = s1 + a, s2 + b
    images.flush()
    del images
    return kept, skipped, s1, s2


def _shrink_npy(path: Path, n: int, size: int) -> None:
    """Make the .npy say (n, size, size) and drop the unused tail left by skipped images."""
    header = _npy_header((n, size, size))
    with open(path, "r+b") as fh:
        if np.lib.format.read_magic(fh) == (1, 0):
            np.lib.format.read_array_header_1_0(fh)
        else:
            np.lib.format.read_array_header_2_0(fh)
        offset = fh.tell()
        if len(header) == offset:  # always so in practice: shape digits only shrink within the padded header
            fh.seek(0)
            fh.write(header)
            fh.truncate(offset + n * size * size)
            return
    old = np.load(path, mmap_mode="r")
    new = np.lib.format.open_memmap(f"{path}.shrink", mode="w+", dtype=np.uint8, shape=(n, size, size))
    for start in range(0, n, 1024):
        new[start:start + 1024] = old[start:min(n, start + 1024)]
    new.flush()
    del old, new
    os.replace(f"{path}.shrink", path)


def _npy_header(shape: tuple[int, ...]) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _info_json(info: CacheInfo) -> dict[str, Any]:
    return {
        "split": info.split, "count": info.count, "image_size": info.image_size, "dtype": "uint8",
        "skipped_count": len(info.skipped), "skipped": info.skipped, "sha256": info.sha256,
        "mean": info.mean, "std": info.std, "max_pixels": MAX_PIXELS, "npy_check": info.npy_check,
    }


def sample_sha256(path: Path) -> str:
    """sha256 of `path`'s size and SAMPLE_BLOCKS evenly spaced blocks of SAMPLE_BLOCK bytes (first and last
    included; the whole file when it is smaller than that): cheap enough to check on every load."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        if size <= SAMPLE_BLOCKS * SAMPLE_BLOCK:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
            return digest.hexdigest()
        last = size - SAMPLE_BLOCK
        for i in range(SAMPLE_BLOCKS):
            fh.seek(i * last // (SAMPLE_BLOCKS - 1))
            digest.update(fh.read(SAMPLE_BLOCK))
    return digest.hexdigest()


def _check_files(cache_dir: Path, split: str, npy: Path, csv: Path, meta: Path, info: dict[str, Any],
                 verify: bool) -> None:
    """The split's files are the ones prepare wrote: every byte when `verify`, else the .npy's size and sampled
    hash (caches prepared before the sample was recorded: its size against its header) and the .csv's hash."""
    again = "run the prepare stage again (`dvc repro prepare`, or restore the files with `dvc checkout`)"
    if verify:
        actual = {"npy": file_sha256(npy), "csv": file_sha256(csv)}
        if actual != info.get("sha256"):
            raise DataError(f"cache files for {split!r} in {cache_dir} do not match the hashes in {meta.name}; "
                            f"they changed after prepare; {again}.")
        return
    check = info.get("npy_check") or {}
    size, want = npy.stat().st_size, check.get("bytes")
    if want is None and info.get("count") is not None and info.get("image_size") is not None:
        n, s = int(info["count"]), int(info["image_size"])
        want = len(_npy_header((n, s, s))) + n * s * s
    if want is not None and size != want:
        raise DataError(f"cache file {npy} is {size} bytes but {meta.name} describes {want} (truncated or replaced "
                        f"after prepare); {again}.")
    if check.get("sample_sha256") and sample_sha256(npy) != check["sample_sha256"]:
        raise DataError(f"cache file {npy} differs from what prepare wrote (its sampled hash does not match "
                        f"{meta.name}: the file was overwritten after prepare); {again}.")
    if (info.get("sha256") or {}).get("csv") and file_sha256(csv) != info["sha256"]["csv"]:
        raise DataError(f"cache file {csv} differs from what prepare wrote (its sha256 does not match "
                        f"{meta.name}); {again}.")


def load_split(cache_dir: Path, split: str, verify: bool = False) -> CachedSplit:
    """Open a prepared split, checked against what prepare recorded in `<split>.json` (see `_check_files`);
    `verify` re-hashes both files in full (reads every byte)."""
    cache_dir = Path(cache_dir)
    npy, csv, meta = (cache_dir / f"{split}.{ext}" for ext in ("npy", "csv", "json"))
    if not meta.is_file() or not npy.is_file() or not csv.is_file():
        raise DataError(f"no complete cache for split {split!r} in {cache_dir} (needs {split}.npy, .csv and .json); "
                        "run the prepare stage first.")
    try:
        info = json.loads(meta.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{meta} is not valid JSON ({exc}); run the prepare stage again.") from None
    _check_files(cache_dir, split, npy, csv, meta, info, verify)
    try:
        images = np.load(npy, mmap_mode="r")
    except (ValueError, OSError) as exc:  # e.g. "mmap length is greater than file size" for a truncated file
        raise DataError(f"cache file {npy} cannot be read ({type(exc).__name__}: {exc}); run the prepare stage "
                        "again.") from None
    index = read_index(csv)
    size = info.get("image_size")
    if images.dtype != np.uint8 or images.shape != (len(index), size, size) or info.get("count") != len(index):
        raise DataError(f"cache for {split!r} in {cache_dir} is inconsistent: {npy.name} holds {images.shape} "
                        f"{images.dtype}, {csv.name} {len(index)} rows, {meta.name} says {info.get('count')} "
                        f"x {size}px; run the prepare stage again.")
    labels = index[list(OBSERVATIONS)].to_numpy(dtype=np.float64)
    return CachedSplit(images, index, labels, info)


def is_outside(reason: str) -> bool:
    """Whether a bad image's reason is a path leading outside the dataset folder (never skippable)."""
    return reason.startswith(_OUTSIDE)


def find_bad_images(
    index: pd.DataFrame, root: Path, workers: int | None = None, progress: bool = True
) -> list[dict[str, str]]:
    """Decode every image of `index` without keeping it; each bad one as {path, source, reason}."""
    bad = []
    sources = index["source"].astype(str).tolist() if "source" in index.columns else None
    for pos, _, reason, _, _ in _decode_all(index["path"].astype(str).tolist(), Path(root).resolve(), None,
                                            workers, "decode", progress):
        if reason is not None:
            bad.append({"path": index["path"].iat[pos],
                        "source": sources[pos] if sources else f"index row {pos}", "reason": reason})
    return bad
