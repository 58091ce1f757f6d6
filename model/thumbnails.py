"""A small JPEG of an image for pages and HTML reports: display only, never seen by the model."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

DEFAULT_SIZE = 96
QUALITY = 70
# Pixels are first picked on a grid down to this many times the target, so the copy Pillow makes stays
# small whatever the image's size; the integer reduce and the resample then smooth the result.
_PICK_FACTOR = 4
_REDUCE_FACTOR = 2


def thumbnail(pixels: np.ndarray, size: int = DEFAULT_SIZE) -> bytes:
    """A JPEG (quality 70) of (height, width, 3) RGB uint8 ``pixels``, its longest side ``size`` at most."""
    if size < 1:
        raise ValueError(f"thumbnail size must be at least 1, got {size}")
    height, width = pixels.shape[:2]
    step = max(1, max(height, width) // (size * _PICK_FACTOR))
    small = np.ascontiguousarray(pixels[::step, ::step])
    image = Image.fromarray(small, "RGB")
    factor = max(1, max(image.size) // (size * _REDUCE_FACTOR))
    if factor > 1:
        image = image.reduce(factor)
    image.thumbnail((size, size), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=QUALITY)
    return out.getvalue()
