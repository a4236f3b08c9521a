from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from chexops.data import cache
from chexops.data.cache import load_split, prepare_split, resize_crop
from chexops.data.chexpert import read_chexpert
from chexops.data.labels import OBSERVATIONS
from chexops.errors import DataError


def _train(make_chexpert):
    folder = read_chexpert(make_chexpert())
    return folder.root, folder.train


def test_round_trip(make_chexpert, tmp_path):
    root, train = _train(make_chexpert)
    info = prepare_split(train, root, tmp_path / "cache", "train", 32, workers=2, progress=False)
    assert info.count == len(train) == 11 and info.skipped == []
    cached = load_split(tmp_path / "cache", "train", verify=True)
    assert cached.images.shape == (11, 32, 32) and cached.images.dtype == np.uint8
    assert isinstance(cached.images, np.memmap)
    assert list(cached.index["path"]) == list(train["path"])
    np.testing.assert_array_equal(cached.labels, train[list(OBSERVATIONS)].to_numpy(), strict=False)
    assert cached.labels.shape == (11, 14)
    # row i <-> image i: image 4 is the decode of index row 4
    expected = np.asarray(resize_crop(Image.open(root.parent / train["path"].iat[4]).convert("L"), 32))
    np.testing.assert_array_equal(cached.images[4], expected)
    stack = cached.images.astype(np.float64) / 255.0
    assert info.mean == pytest.approx(stack.mean()) and info.std == pytest.approx(stack.std())
    assert cached.info["count"] == 11 and cached.info["sha256"] == info.sha256


def test_resize_and_crop_on_a_known_image():
    # 90 wide x 30 high, white in columns 20-69. Shorter side -> 10 gives 30 x 10; the centre crop keeps output
    # columns 10-19, i.e. source columns 30-59: all white, and at least 10 source pixels (more than the 3-pixel
    # antialiasing support of a 3x bilinear reduction) away from a band edge.
    pixels = np.zeros((30, 90), dtype=np.uint8)
    pixels[:, 20:70] = 255
    out = np.asarray(resize_crop(Image.fromarray(pixels), 10))
    assert out.shape == (10, 10)
    assert out.min() == 255
    tall = np.asarray(resize_crop(Image.fromarray(pixels.T.copy()), 10))
    assert tall.shape == (10, 10) and tall.min() == 255
    # white only in source columns 0-19 is cropped away entirely
    left = np.zeros((30, 90), dtype=np.uint8)
    left[:, :20] = 255
    assert np.asarray(resize_crop(Image.fromarray(left), 10)).max() == 0
    # a square image of the right size is left untouched
    square = np.random.default_rng(0).integers(0, 256, (10, 10), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(resize_crop(Image.fromarray(square), 10)), square)


def test_hash_stable_across_runs_and_worker_counts(make_chexpert, tmp_path):
    root, train = _train(make_chexpert)
    a = prepare_split(train, root, tmp_path / "a", "train", 24, workers=0, progress=False)
    b = prepare_split(train, root, tmp_path / "b", "train", 24, workers=2, progress=False)
    assert a.sha256 == b.sha256
    assert (tmp_path / "a/train.json").read_bytes() == (tmp_path / "b/train.json").read_bytes()
    c = prepare_split(train.iloc[1:], root, tmp_path / "c", "train", 24, workers=0, progress=False)
    assert c.sha256["npy"] != a.sha256["npy"] and c.sha256["csv"] != a.sha256["csv"]


def _break(root, train, row, content: bytes | None) -> str:
    path = root.parent / train["path"].iat[row]
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    return train["path"].iat[row]


@pytest.mark.parametrize("what, reason", [
    ("missing", "file not found"), ("corrupt", "corrupt or truncated"), ("text", "not an image"),
])
def test_bad_image_error_names_file_and_row(make_chexpert, tmp_path, what, reason):
    root, train = _train(make_chexpert)
    good = (root.parent / train["path"].iat[3]).read_bytes()
    content = {"missing": None, "corrupt": good[: len(good) // 2], "text": b"hello, not a jpeg"}[what]
    path = _break(root, train, 3, content)
    with pytest.raises(DataError, match=rf"{path} \(train\.csv row 5\): {reason}"):
        prepare_split(train, root, tmp_path / "cache", "train", 16, workers=2, progress=False)
    assert not (tmp_path / "cache/train.json").exists()
    assert list((tmp_path / "cache").iterdir()) == []


def test_skip_mode_counts_and_reports(make_chexpert, tmp_path, caplog):
    root, train = _train(make_chexpert)
    _break(root, train, 0, None)
    path = _break(root, train, 5, b"\xff\xd8\xff garbage")
    info = prepare_split(train, root, tmp_path / "cache", "train", 16, on_bad_image="skip", workers=2,
                         progress=False)
    assert info.count == 9 and len(info.skipped) == 2
    assert info.skipped[1]["path"] == path and info.skipped[1]["source"] == "train.csv row 7"
    meta = json.loads((tmp_path / "cache/train.json").read_text())
    assert meta["skipped_count"] == 2 and meta["count"] == 9
    assert "skipped 2 of 11 train images" in caplog.text
    cached = load_split(tmp_path / "cache", "train", verify=True)
    assert cached.images.shape == (9, 16, 16)
    assert list(cached.index["path"]) == list(train["path"].drop(index=[0, 5]))
    expected = np.asarray(resize_crop(Image.open(root.parent / train["path"].iat[6]).convert("L"), 16))
    np.testing.assert_array_equal(cached.images[4], expected)  # row 6 moved up to position 4


def test_oversized_image_refused_before_decoding(make_chexpert, tmp_path, monkeypatch):
    root, train = _train(make_chexpert)
    monkeypatch.setattr(cache, "MAX_PIXELS", 40 * 48 - 1)  # every fixture image is 40 x 48
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self) or None)
    with pytest.raises(DataError, match=r"40 x 48 pixels is over the 1,919-pixel limit"):
        prepare_split(train, root, tmp_path / "cache", "train", 16, workers=0, progress=False)
    assert decoded == []


def test_path_outside_folder_is_an_error_even_when_skipping(make_chexpert, tmp_path):
    root, train = _train(make_chexpert)
    train = train.copy()
    train.loc[2, "path"] = "CheXpert-v1.0-small/../outside.jpg"
    with pytest.raises(DataError, match=r"train\.csv row 4.*escapes the dataset folder"):
        prepare_split(train, root, tmp_path / "cache", "train", 16, on_bad_image="skip", workers=0,
                      progress=False)


def test_load_split_detects_tampering_and_absence(make_chexpert, tmp_path):
    root, train = _train(make_chexpert)
    with pytest.raises(DataError, match="run the prepare stage first"):
        load_split(tmp_path / "cache", "train")
    prepare_split(train, root, tmp_path / "cache", "train", 16, workers=0, progress=False)
    with open(tmp_path / "cache/train.npy", "r+b") as fh:
        fh.seek(-1, 2)
        fh.write(b"\x01" if fh.read(1) != b"\x01" else b"\x02")
    load_split(tmp_path / "cache", "train")  # no verify: does not read every byte
    with pytest.raises(DataError, match="do not match the hashes"):
        load_split(tmp_path / "cache", "train", verify=True)
