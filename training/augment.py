"""Training-time augmentations, so a detector learns image content and not file-format shortcuts."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from aiscan.model.decode import decode_image

# Decode a little larger than the input so a random crop still covers most of the image.
CROP_MARGIN = 1.15


@dataclass(frozen=True)
class Augment:
    """Probabilities and ranges of each augmentation."""

    flip: float = 0.5
    jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (60, 95)
    rescale: float = 0.3
    rescale_range: tuple[float, float] = (0.5, 0.9)

    def apply(self, data: bytes, size: int, rng: np.random.Generator) -> np.ndarray:
        """Bytes -> augmented uint8 (size, size, 3): JPEG re-compression, down-up scaling, crop, flip."""
        big = round(size * CROP_MARGIN)
        pixels = decode_image(data, big).pixels
        image = Image.fromarray(pixels)
        # Both classes get re-compressed at random, so "is it a JPEG" stops telling real from fake.
        if rng.random() < self.jpeg:
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=int(rng.integers(*self.jpeg_quality, endpoint=True)))
            image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        if rng.random() < self.rescale:
            factor = rng.uniform(*self.rescale_range)
            small = max(8, int(big * factor))
            image = image.resize((small, small), Image.Resampling.BILINEAR).resize(
                (big, big), Image.Resampling.BILINEAR
            )
        x, y = (int(v) for v in rng.integers(0, big - size, size=2, endpoint=True))
        out = np.asarray(image, dtype=np.uint8)[y : y + size, x : x + size]
        if rng.random() < self.flip:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)
