"""Round-3 fault audit, #6: a cache file changed after prepare is noticed on load, not trained/evaluated on."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from chexops.config import config_from_dict
from chexops.data import cache
from chexops.data.cache import load_split
from chexops.errors import DataError


def _config(root: Path):
    return config_from_dict({
        "study": {"name": "r3-cache"},
        "data": {"source": "synthetic", "synthetic": {"patients": 30, "seed": 1, "image_size": 40},
                 "image_size": 32, "index_dir": str(root / "index"), "cache_dir": str(root / "cache"), "workers": 1},
        "grid": {"families": ["resnet18"], "initializers": ["random"]},
    })


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from fixtures.training import prepare_study

    root = tmp_path_factory.mktemp("r3cache")
    return prepare_study(root, _config(root)) / "cache"


@pytest.fixture
def cache_dir(prepared, tmp_path):
    return Path(shutil.copytree(prepared, tmp_path / "cache"))


def _one_line_error(cache_dir: Path, split: str = "valid") -> str:
    with pytest.raises(DataError) as info:
        load_split(cache_dir, split)
    text = str(info.value)
    assert "\n" not in text and "prepare" in text
    return text


def test_an_untouched_cache_loads(cache_dir):
    split = load_split(cache_dir, "valid")
    assert split.images.dtype == np.uint8 and len(split.images) == len(split.index) > 0


def test_a_cache_overwritten_in_place_with_the_same_size_is_refused(cache_dir):
    npy = cache_dir / "valid.npy"
    size = npy.stat().st_size
    images = np.load(npy)
    np.save(npy, 255 - images)  # same shape, same size, other pixels
    assert npy.stat().st_size == size
    assert "overwritten" in _one_line_error(cache_dir)


def test_a_truncated_cache_is_one_error_not_an_mmap_traceback(cache_dir):
    npy = cache_dir / "valid.npy"
    with open(npy, "r+b") as fh:
        fh.truncate(npy.stat().st_size // 2)
    assert "bytes" in _one_line_error(cache_dir)


def test_a_large_cache_is_checked_by_samples_that_reach_its_end(tmp_path, monkeypatch):
    """Past SAMPLE_BLOCKS x SAMPLE_BLOCK bytes only samples are read; the last block is one of them."""
    monkeypatch.setattr(cache, "SAMPLE_BLOCK", 16)
    monkeypatch.setattr(cache, "SAMPLE_BLOCKS", 4)
    path = tmp_path / "x.bin"
    path.write_bytes(bytes(1000))
    before = cache.sample_sha256(path)
    data = bytearray(path.read_bytes())
    data[-1] = 1
    path.write_bytes(bytes(data))
    assert cache.sample_sha256(path) != before
