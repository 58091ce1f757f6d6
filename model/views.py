"""How a model looks at an image, as its artifact declares: squashed whole, one native-resolution crop,
native-resolution tiles, or tiles plus a squashed view; and how the views' scores become one p_real.

Generation traces live in high frequencies: every mode but ``resize`` keeps native pixels, and an image
smaller than the input is repeated to fill it, never upscaled (upscaling adds interpolation traces).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from aiscan.model.metadata import PreprocessSpec

# (x, y, width, height) of a view in the image, in native pixels after EXIF orientation.
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Views:
    """What the model scores for one image: ``pixels`` (n, s, s, 3) uint8, each view's box, and how many
    of the views are native-resolution crops."""

    pixels: np.ndarray
    boxes: list[Box]
    tiles: int


def squash(pixels: np.ndarray, size: int) -> np.ndarray:
    """The whole image resized to ``size`` x ``size``: one reduction chain for every file format."""
    if pixels.shape[:2] == (size, size):
        return pixels
    # reducing_gap: an integer box reduction first, then bilinear; both see the pixels, not the format.
    im = Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(im, dtype=np.uint8)


def pad_to(pixels: np.ndarray, size: int) -> np.ndarray:
    """``pixels`` repeated (wrapped) right and down until both sides are at least ``size``."""
    height, width = pixels.shape[:2]
    if height >= size and width >= size:
        return pixels
    return np.pad(pixels, ((0, max(0, size - height)), (0, max(0, size - width)), (0, 0)), mode="wrap")


def _crop(pixels: np.ndarray, x: int, y: int, size: int) -> np.ndarray:
    return np.ascontiguousarray(pixels[y : y + size, x : x + size])


def _box(x: int, y: int, size: int, width: int, height: int) -> Box:
    return (x, y, min(size, width - x), min(size, height - y))


def center_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` crop at the centre, at native resolution."""
    padded = pad_to(pixels, size)
    height, width = padded.shape[:2]
    return _crop(padded, (width - size) // 2, (height - size) // 2, size)


def random_crop(pixels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size`` x ``size`` crop at a random place, at native resolution."""
    padded = pad_to(pixels, size)
    height, width = padded.shape[:2]
    x, y = (int(rng.integers(0, limit - size, endpoint=True)) for limit in (width, height))
    return _crop(padded, x, y, size)


def _starts(length: int, count: int, size: int) -> list[int]:
    """``count`` crop offsets spread evenly over ``length`` (first and last flush with the edges)."""
    span = max(0, length - size)
    if count == 1:
        return [span // 2]
    return [round(i * span / (count - 1)) for i in range(count)]


def tile_boxes(width: int, height: int, size: int, max_tiles: int) -> list[Box]:
    """A grid of ``size`` crops covering the image, thinned evenly to at most ``max_tiles``."""
    cols, rows = max(1, math.ceil(width / size)), max(1, math.ceil(height / size))
    while cols * rows > max_tiles:
        # Thin the longer side first, so the kept tiles stay spread over the whole image.
        if cols / width >= rows / height and cols > 1:
            cols -= 1
        else:
            rows -= 1
    return [
        _box(x, y, size, width, height)
        for y in _starts(height, rows, size)
        for x in _starts(width, cols, size)
    ]


def make_views(pixels: np.ndarray, spec: PreprocessSpec, size: int) -> Views:
    """The views ``spec`` asks for of a native-resolution image (height, width, 3)."""
    height, width = pixels.shape[:2]
    whole: Box = (0, 0, width, height)
    if spec.mode == "resize":
        return Views(squash(pixels, size)[None], [whole], 0)
    if spec.mode == "center-crop":
        x, y = (max(0, (width - size) // 2), max(0, (height - size) // 2))
        return Views(center_crop(pixels, size)[None], [_box(x, y, size, width, height)], 1)
    padded = pad_to(pixels, size)
    boxes = tile_boxes(width, height, size, spec.max_tiles)
    crops = [_crop(padded, x, y, size) for x, y, _w, _h in boxes]
    if spec.mode == "tiles+global":
        crops.append(squash(pixels, size))
        return Views(np.stack(crops), [*boxes, whole], len(boxes))
    return Views(np.stack(crops), boxes, len(boxes))


def aggregate(scores: np.ndarray, rule: str) -> tuple[float, int]:
    """An image's p_real from its views' scores under ``rule``, and the index of its most fake view.

    ``fake-quartile``: the mean of the most fake quarter of the views (at least one); an image is as
    fake as its most fake parts, and averaging a few of them keeps one odd tile from deciding alone.
    """
    if len(scores) == 0:
        raise ValueError("an image needs at least one scored view")
    scores = np.asarray(scores, dtype=np.float64)
    worst = int(np.argmin(scores))
    if rule == "mean":
        return float(scores.mean()), worst
    if rule == "min":
        return float(scores[worst]), worst
    if rule == "fake-quartile":
        k = max(1, math.ceil(len(scores) / 4))
        return float(np.sort(scores)[:k].mean()), worst
    raise ValueError(f"unknown aggregate rule {rule!r}")
