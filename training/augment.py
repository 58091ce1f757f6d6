"""Training-time degradations, each applied with its own probability to both classes alike.

CNNDetection's recipe (Wang et al., 2020): Gaussian blur and JPEG re-compression, each to a fraction
of the images, so a detector survives them without learning that every image is degraded. There is
no down-up rescaling: it erases the high-frequency traces the detector is meant to find.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter


@dataclass(frozen=True)
class Augment:
    """Probability of each degradation and the range its strength is drawn from."""

    blur: float = 0.1
    jpeg: float = 0.1
    flip: float = 0.5
    blur_sigma: tuple[float, float] = (0.0, 3.0)
    jpeg_quality: tuple[int, int] = (30, 100)

    def to_dict(self) -> dict[str, Any]:
        """The policy as the artifact's metadata records it."""
        return asdict(self)

    def apply(self, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A degraded copy of one view (s, s, 3) uint8: blur, then JPEG, then a horizontal flip."""
        image = Image.fromarray(pixels)
        if rng.random() < self.blur:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*self.blur_sigma)))
        if rng.random() < self.jpeg:
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=int(rng.integers(*self.jpeg_quality, endpoint=True)))
            image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        out = np.asarray(image, dtype=np.uint8)
        if rng.random() < self.flip:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)
