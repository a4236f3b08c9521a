"""Every PIL mode a radiograph comes in decodes to the gray values it shows, the same in prepare, predict, serving.

The bug this guards: PIL's convert("L") clips 16-bit values to 255, so a real 16-bit radiograph was cached and
predicted as a white image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.registry import chexops
from PIL import Image

from chexops.data.cache import load_image, prepare_split, resize_crop
from chexops.data.chexpert import read_chexpert
from chexops.data.images import to_gray8, window_to_uint8

pytestmark = pytest.mark.usefixtures("one_thread")


def radiograph12(h: int = 48, w: int = 40, seed: int = 0) -> np.ndarray:
    """A smooth 12-bit image (values 300-3800 of 0-4095), as a detector's DICOM exported to 16-bit PNG holds."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 300 + 3500 * (0.5 + 0.5 * np.sin(x / 5.0) * np.cos(y / 7.0))
    return np.clip(base + rng.normal(0, 40, size=(h, w)), 300, 3800).astype(np.uint16)


def rescale8(pixels: np.ndarray) -> np.ndarray:
    """The 8-bit export of the same radiograph: its range mapped linearly onto 0-255 (computed independently)."""
    lo, hi = int(pixels.min()), int(pixels.max())
    return np.floor((pixels.astype(np.float64) - lo) * 255.0 / (hi - lo) + 0.5).astype(np.uint8)


def save16(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I")  # what PIL really opens a 16-bit PNG as: the mode the bug lived in
    return path


def test_a_16_bit_png_decodes_like_its_8_bit_rescale_not_white(tmp_path: Path) -> None:
    wide = radiograph12()
    p16 = save16(tmp_path / "x16.png", wide)
    p8 = tmp_path / "x8.png"
    Image.fromarray(rescale8(wide)).save(p8)
    got16, got8 = load_image(p16, 32), load_image(p8, 32)
    assert np.array_equal(got16, got8)
    assert got16.min() < 64 and got16.max() > 192  # the range survives: not clipped to white


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "1", "I", "F", "CMYK"])
def test_every_mode_decodes_to_the_gray_it_shows(tmp_path: Path, mode: str) -> None:
    gray = np.random.default_rng(1).integers(0, 256, size=(20, 24), dtype=np.uint8)
    base = Image.fromarray(gray)
    if mode == "1":
        image, expected = base.convert("1", dither=Image.Dither.NONE), np.where(gray >= 128, 255, 0)
    elif mode in ("RGB", "RGBA", "LA", "CMYK"):
        image, expected = base.convert(mode), gray  # gray in colour: luma of equal channels is the gray itself
    elif mode == "P":
        image, expected = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=256), None
    elif mode == "I":
        image, expected = Image.fromarray(gray.astype(np.int32) * 1000 - 50_000), window_to_uint8(gray)
    elif mode == "F":
        image, expected = Image.fromarray(gray.astype(np.float32) / 255.0), window_to_uint8(gray)
    else:
        image, expected = base, gray
    out = np.asarray(to_gray8(image))
    assert out.dtype == np.uint8 and out.shape == gray.shape
    if expected is None:  # a palette quantises: within the palette's step of the original
        assert np.abs(out.astype(int) - gray).max() <= 8
    else:
        assert np.array_equal(out, expected)
    if mode not in ("I", "F", "CMYK", "LA"):  # modes PNG stores: the file route gives the same pixels
        image.save(tmp_path / "x.png")
        assert np.array_equal(load_image(tmp_path / "x.png", 16), np.asarray(resize_crop(to_gray8(image), 16)))


def test_a_constant_or_non_finite_wide_image_is_black_not_an_error() -> None:
    assert not window_to_uint8(np.full((4, 4), 1234, dtype=np.uint16)).any()
    values = np.array([[np.nan, 0.0], [np.inf, 2.0]])
    assert window_to_uint8(values).tolist() == [[0, 0], [255, 255]]


def test_prepare_caches_a_16_bit_radiograph_like_its_8_bit_rescale(make_chexpert, tmp_path: Path) -> None:
    caches = []
    for bits in (16, 8):
        root = make_chexpert(name=f"CheXpert-{bits}")
        folder = read_chexpert(root)
        for i, rel in enumerate(folder.train["path"]):  # the JPEG names stay: PIL reads a file by its content
            wide, path = radiograph12(seed=i), root.parent / rel
            save16(path, wide) if bits == 16 else Image.fromarray(rescale8(wide)).save(path, format="PNG")
        info = prepare_split(folder.train, root, tmp_path / f"cache{bits}", "train", 32, workers=1, progress=False)
        caches.append(np.load(info.npy_path))
    assert np.array_equal(caches[0], caches[1])




def test_predict_gives_a_16_bit_png_the_probabilities_of_its_8_bit_rescale(model_dir: Path, tmp_path: Path,
                                                                         capsys, monkeypatch) -> None:
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    wide = radiograph12(64, 56)
    save16(tmp_path / "in" / "a16.png", wide)
    Image.fromarray(rescale8(wide)).save(tmp_path / "in" / "b8.png")
    Image.fromarray(np.full(wide.shape, 255, np.uint8)).save(tmp_path / "in" / "c_white.png")
    code, _, err = chexops(capsys, "predict", str(model_dir), "in", "--out", "preds.csv", "--quiet")
    assert code == 0, err
    probs = pd.read_csv(tmp_path / "preds.csv").set_index("path")
    a16, b8, white = (probs.loc[f"in/{n}.png"].to_numpy() for n in ("a16", "b8", "c_white"))
    assert np.abs(a16 - b8).max() < 1e-3
    assert np.abs(a16 - white).max() > 1e-3  # what the clipped decoding gave is told apart by this model
