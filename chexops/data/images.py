"""A radiograph file of any PIL mode -> 8-bit grayscale: the one conversion prepare, predict and serving share.

Radiographs come as 8-bit grayscale JPEG/PNG (CheXpert), but also as 16-bit PNG exported from DICOM, as RGB or
RGBA screenshots, palette PNGs and 1-bit masks. PIL's `convert("L")` clips every 16-bit value above 255 to white,
so a 16-bit radiograph would be predicted as a white image; here each mode gets the conversion that keeps it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Modes PIL opens 16/32-bit grayscale and float images in (a 16-bit PNG is "I;16" or, in older Pillow, "I").
_WIDE_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
# Modes whose own convert("L") is right: 8-bit gray as is, colour by ITU-R 601 luma (as the cache always did),
# palette through its palette, 1-bit as 0/255. An alpha channel is dropped: gray values are the radiograph.
_PIL_GRAY = ("L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "1")


def to_gray8(image: Image.Image) -> Image.Image:
    """`image` as an 8-bit grayscale ("L") image.

    8-bit modes convert as PIL does (8-bit gray is unchanged, so caches of 8-bit data stay byte-identical).
    Wider grayscale is windowed linearly from the image's own minimum to its maximum onto 0-255: a PNG does not
    say whether its detector used 10, 12, 14 or 16 of the 16 bits, and the pixels' own range is what an 8-bit
    export of the same radiograph spans. A constant image becomes black.
    """
    if image.mode in _PIL_GRAY:
        return image.convert("L")
    if image.mode in _WIDE_GRAY:
        return Image.fromarray(window_to_uint8(np.asarray(image)), mode="L")
    return image.convert("RGB").convert("L")  # CMYK, YCbCr, LAB, HSV: through RGB, as a viewer shows them


def window_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """A 2-D array of any numeric dtype, its minimum..maximum mapped linearly onto uint8 0..255 (NaN as the
    minimum, infinities clipped to the finite range)."""
    values = pixels.astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.nan_to_num(values, nan=low, posinf=high, neginf=low) - low) * (255.0 / (high - low))
    return np.clip(np.floor(scaled + 0.5), 0, 255).astype(np.uint8)  # halves up, as exporters round
