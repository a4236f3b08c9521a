"""Batches straight from the uint8 memory map: one fancy-indexed gather per batch, no per-item Dataset calls.

An epoch's order is a permutation drawn from `np.random.default_rng([seed, epoch])`, so batch k of epoch e is
the same whenever it is asked for: training resumes mid-epoch with `batches(epoch, start=k)`. Images leave
the loader as uint8 and become float only on the device (`to_model_input`), which keeps the copy to the GPU
four times smaller and puts the normalisation arithmetic there.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from chexops.errors import ConfigError

_DONE = object()


@dataclass
class Batch:
    """x: uint8 (B, 1, S, S); targets and mask: float32 (B, K); rows: int64 (B,) positions in the split."""

    x: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    rows: np.ndarray


class BatchLoader:
    """Deterministic, resumable batches over an (N, S, S) uint8 array (typically a read-only memmap)."""

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        mask: np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        pin_memory: bool | None = None,
        prefetch: int = 2,
        rows: np.ndarray | None = None,
    ) -> None:
        """`rows`: train on these rows of `images` only (a label fraction); epochs permute them."""
        _check_arrays(images, targets, mask)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if prefetch < 0:
            raise ConfigError(f"prefetch must be 0 (off) or more batches, got {prefetch}.")
        cuda = torch.cuda.is_available()
        if pin_memory and not cuda:
            raise ConfigError("pin_memory=True needs a CUDA device and none is available; leave it unset (auto).")
        self.images = images
        self.targets = np.ascontiguousarray(targets, dtype=np.float32)
        self.mask = np.ascontiguousarray(mask, dtype=np.float32)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.pin_memory = cuda if pin_memory is None else bool(pin_memory)
        self.prefetch = prefetch
        self.rows = None if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
        if self.rows is not None and (len(self.rows) == 0 or self.rows[0] < 0 or self.rows[-1] >= len(images)):
            raise ConfigError(f"rows must be a non-empty selection of the {len(images)} images.")

    @property
    def size(self) -> int:
        """How many images an epoch covers."""
        return len(self.images) if self.rows is None else len(self.rows)

    def __len__(self) -> int:
        return self.num_batches

    @property
    def num_batches(self) -> int:
        n = self.size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The row order of `epoch`: a seeded permutation, or 0..N-1 without shuffling (of `rows` when given)."""
        base = np.arange(len(self.images), dtype=np.int64) if self.rows is None else self.rows
        if not self.shuffle:
            return base
        return base[np.random.default_rng([self.seed, epoch]).permutation(len(base))]

    def batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """The batches of `epoch` from batch index `start` on (resume: the same batches a full epoch yields)."""
        if epoch < 0:
            raise ConfigError(f"epoch must be 0 or more, got {epoch}.")
        return self._iterate(self.order(epoch), self.num_batches, start)

    def eval_batches(self, start: int = 0) -> Iterator[Batch]:
        """Every row once, in order, with the last batch possibly short: for validation and test."""
        n = len(self.images)
        return self._iterate(np.arange(n, dtype=np.int64), -(-n // self.batch_size), start)

    def _iterate(self, order: np.ndarray, count: int, start: int) -> Iterator[Batch]:
        if not 0 <= start <= count:
            raise ConfigError(f"start batch must be between 0 and {count} (batches in an epoch), got {start}.")
        chunks = (order[b * self.batch_size:(b + 1) * self.batch_size] for b in range(start, count))
        gathered = (self.gather(idx) for idx in chunks)
        return prefetched(gathered, self.prefetch) if self.prefetch else gathered

    def gather(self, rows: np.ndarray) -> Batch:
        """One batch: rows sorted (sequential memmap reads), copied once into (pinned) tensors."""
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        size = self.images.shape[1:]
        x = torch.empty((len(rows), 1, *size), dtype=torch.uint8, pin_memory=self.pin_memory)
        np.take(self.images, rows, axis=0, out=x.numpy()[:, 0])
        targets = torch.empty((len(rows), self.targets.shape[1]), dtype=torch.float32, pin_memory=self.pin_memory)
        mask = torch.empty(targets.shape, dtype=torch.float32, pin_memory=self.pin_memory)
        np.take(self.targets, rows, axis=0, out=targets.numpy())
        np.take(self.mask, rows, axis=0, out=mask.numpy())
        return Batch(x, targets, mask, rows)


def _check_arrays(images: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> None:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ConfigError(f"images must be a uint8 (N, S, S) array, got {images.dtype} {images.shape}.")
    if targets.ndim != 2 or targets.shape != mask.shape or len(targets) != len(images):
        raise ConfigError(
            f"targets {targets.shape} and mask {mask.shape} must both be (N, K) with N = {len(images)} images."
        )


def prefetched(batches: Iterator[Batch], depth: int) -> Iterator[Batch]:
    """Run `batches` in a background thread, `depth` batches ahead; stops when the consumer does."""
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        """Queue `item` unless the consumer has gone; polling so a full queue never blocks forever."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, who re-raises it in the training thread
            put(exc)

    worker = threading.Thread(target=produce, name="chexops-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


def on_device_ahead(batches: Iterator[Batch], device: torch.device | str) -> Iterator[Batch]:
    """`batches` with each one's tensors already on `device`: the next batch is copied on a side CUDA stream
    while the current one trains, so a step never waits on its host-to-device copy. Identity off CUDA.

    The copies read pinned host memory (BatchLoader pins on CUDA), so they are asynchronous. The training stream
    waits on an event recorded after each batch's own copies (not on the whole side stream, which already holds
    the next batch's copy), and each copied tensor is recorded on the training stream, so the caching allocator
    never hands its memory to a later copy while a step still reads it.
    """
    device = torch.device(device)
    if device.type != "cuda":
        yield from batches
        return
    side, main = torch.cuda.Stream(device), torch.cuda.current_stream(device)

    def copy(batch: Batch) -> tuple[Batch, torch.cuda.Event]:
        with torch.cuda.stream(side):
            x, targets, mask = (t.to(device, non_blocking=True) for t in (batch.x, batch.targets, batch.mask))
            copied = torch.cuda.Event()
            copied.record(side)
        return replace(batch, x=x, targets=targets, mask=mask), copied

    def ready(batch: Batch, copied: torch.cuda.Event) -> Batch:
        main.wait_event(copied)
        for t in (batch.x, batch.targets, batch.mask):
            t.record_stream(main)
        return batch

    ahead = None
    try:
        for batch in batches:
            nxt = copy(batch)
            if ahead is not None:
                yield ready(*ahead)
            ahead = nxt
        if ahead is not None:
            yield ready(*ahead)
    finally:  # a loop that stops early (an evaluation, the budget) also stops the host-side prefetch thread
        close = getattr(batches, "close", None)
        if close:
            close()


def to_model_input(
    x_uint8: torch.Tensor,
    device: torch.device | str,
    mean: Sequence[float],
    std: Sequence[float],
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 (B, 1, S, S) -> normalised (B, 3, S, S) on `device`: copied as uint8 first, converted there.

    ((x / 255) - mean) / std is computed per channel as x * (1 / (255 std)) + (-mean / std) with Python-float
    constants (no host-to-device copies), written into one output tensor, which also replicates the grey channel.
    """
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"mean and std must have 3 values each (RGB), got {tuple(mean)} and {tuple(std)}.")
    if any(s <= 0 for s in std):
        raise ConfigError(f"std values must be positive, got {tuple(std)}.")
    if x_uint8.dim() != 4 or x_uint8.shape[1] != 1:
        raise ConfigError(f"expected a (B, 1, S, S) batch, got shape {tuple(x_uint8.shape)}.")
    grey = x_uint8.to(device, non_blocking=True)[:, 0].to(dtype)
    b, h, w = grey.shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((b, 3, h, w), dtype=dtype, device=grey.device, memory_format=fmt)
    # one broadcasting op over (B, 1) -> (B, 3) is ~3x slower on CPU than three per-channel ops
    for c in range(3):
        torch.mul(grey, 1.0 / (255.0 * float(std[c])), out=out[:, c]).add_(-float(mean[c]) / float(std[c]))
    return out
