from __future__ import annotations

import numpy as np
import pytest
import torch

from chexops.data.loader import BatchLoader, on_device_ahead, to_model_input
from chexops.errors import ConfigError


@pytest.fixture
def arrays(tmp_path):
    n, s, k = 37, 8, 3
    images = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(n, s, s))
    images[:] = (np.arange(n)[:, None, None] + np.zeros((1, s, s), dtype=np.int64)).astype(np.uint8)
    images.flush()
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    targets = np.tile(np.arange(n, dtype=np.float32)[:, None], (1, k))
    mask = (np.arange(n * k).reshape(n, k) % 2).astype(np.float32)
    return mapped, targets, mask


def _rows(batches) -> list[list[int]]:
    return [b.rows.tolist() for b in batches]


def test_batch_contents_match_rows(arrays):
    images, targets, mask = arrays
    loader = BatchLoader(images, targets, mask, batch_size=8, seed=1)
    batches = list(loader.batches(0))
    assert loader.num_batches == len(batches) == 5
    assert [len(b.rows) for b in batches] == [8, 8, 8, 8, 5]
    seen = np.concatenate([b.rows for b in batches])
    assert sorted(seen.tolist()) == list(range(37))
    for b in batches:
        assert b.x.dtype == torch.uint8 and b.x.shape == (len(b.rows), 1, 8, 8)
        assert torch.equal(b.x[:, 0, 0, 0], torch.from_numpy(b.rows.astype(np.uint8)))
        assert torch.equal(b.targets[:, 0], torch.from_numpy(b.rows.astype(np.float32)))
        assert torch.equal(b.mask, torch.from_numpy(mask[b.rows]))
        assert list(b.rows) == sorted(b.rows)


def test_epoch_order_is_seeded_and_differs_between_epochs(arrays):
    loader = BatchLoader(*arrays, batch_size=8, seed=1)
    again = BatchLoader(*arrays, batch_size=8, seed=1, prefetch=0)
    assert _rows(loader.batches(0)) == _rows(again.batches(0))
    assert _rows(loader.batches(0)) != _rows(loader.batches(1))
    assert _rows(loader.batches(0)) != _rows(BatchLoader(*arrays, batch_size=8, seed=2).batches(0))
    expected = np.random.default_rng([1, 3]).permutation(37)[:8]
    assert next(iter(loader.batches(3))).rows.tolist() == sorted(expected.tolist())


@pytest.mark.parametrize("start", [0, 1, 3, 4, 5])
def test_resume_mid_epoch_gives_the_tail(arrays, start):
    loader = BatchLoader(*arrays, batch_size=8, seed=7)
    full = list(loader.batches(2))
    resumed = list(loader.batches(2, start=start))
    assert _rows(resumed) == _rows(full[start:])
    for a, b in zip(resumed, full[start:], strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.targets, b.targets)


def test_drop_last_and_eval_order(arrays):
    loader = BatchLoader(*arrays, batch_size=8, drop_last=True)
    assert loader.num_batches == 4
    assert [len(b.rows) for b in loader.batches(0)] == [8, 8, 8, 8]
    assert np.concatenate([b.rows for b in loader.eval_batches()]).tolist() == list(range(37))
    assert _rows(loader.eval_batches(start=4)) == [list(range(32, 37))]
    unshuffled = BatchLoader(*arrays, batch_size=10, shuffle=False)
    assert _rows(unshuffled.batches(5))[0] == list(range(10))


def test_bad_arguments(arrays):
    images, targets, mask = arrays
    with pytest.raises(ConfigError, match="start batch must be between 0 and 5"):
        BatchLoader(images, targets, mask, batch_size=8).batches(0, start=6)
    with pytest.raises(ConfigError, match="batch_size"):
        BatchLoader(images, targets, mask, batch_size=0)
    with pytest.raises(ConfigError, match="must both be"):
        BatchLoader(images, targets[:-1], mask[:-1], batch_size=4)


def test_stopping_early_ends_the_prefetch_thread(arrays):
    import threading

    loader = BatchLoader(*arrays, batch_size=2, prefetch=1)
    it = loader.batches(0)
    next(it)
    it.close()
    assert not any(t.name == "chexops-prefetch" for t in threading.enumerate())


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_on_device_ahead_yields_the_same_batches_on_the_device(arrays, device):
    loader = BatchLoader(*arrays, batch_size=8, seed=3)
    plain = list(loader.batches(1, start=1))
    ahead = list(on_device_ahead(loader.batches(1, start=1), device))
    assert _rows(ahead) == _rows(plain) and len(ahead) == loader.num_batches - 1
    for got, want in zip(ahead, plain, strict=True):
        for name in ("x", "targets", "mask"):
            moved = getattr(got, name)
            assert moved.device.type == device
            torch.testing.assert_close(moved.cpu(), getattr(want, name), rtol=0, atol=0)


def test_on_device_ahead_stopped_early_ends_the_prefetch_thread(arrays):
    import threading

    it = on_device_ahead(BatchLoader(*arrays, batch_size=2, prefetch=1).batches(0), "cpu")
    next(it)
    it.close()
    assert not any(t.name == "chexops-prefetch" for t in threading.enumerate())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_pin_memory_auto_is_off_without_cuda(arrays):
    loader = BatchLoader(*arrays, batch_size=8)
    assert loader.pin_memory is False
    assert not next(iter(loader.batches(0))).x.is_pinned()
    with pytest.raises(ConfigError, match="pin_memory=True needs a CUDA device"):
        BatchLoader(*arrays, batch_size=8, pin_memory=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pin_memory_auto_is_on_with_cuda(arrays):
    loader = BatchLoader(*arrays, batch_size=8)
    assert loader.pin_memory is True
    batch = next(iter(loader.batches(0)))
    assert batch.x.is_pinned() and batch.targets.is_pinned() and batch.mask.is_pinned()
    assert not next(iter(BatchLoader(*arrays, batch_size=8, pin_memory=False).batches(0))).x.is_pinned()
    out = to_model_input(batch.x, "cuda", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert out.device.type == "cuda"
    expected = (batch.x.float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(out.cpu(), expected.expand(-1, 3, -1, -1), rtol=0, atol=1e-5)


def test_to_model_input_normalises_per_channel():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = to_model_input(x, "cpu", mean, std)
    assert out.shape == (3, 3, 2, 2) and out.dtype == torch.float32
    for c in range(3):
        for i, v in enumerate((0, 51, 255)):
            expected = (v / 255.0 - mean[c]) / std[c]
            assert out[i, c].flatten().tolist() == pytest.approx([expected] * 4, abs=1e-6)
    last = to_model_input(x, "cpu", mean, std, channels_last=True, dtype=torch.float64)
    assert last.is_contiguous(memory_format=torch.channels_last) and last.dtype == torch.float64
    torch.testing.assert_close(last.float(), out)
    with pytest.raises(ConfigError, match="3 values each"):
        to_model_input(x, "cpu", (0.5,), (0.5,))
