"""Robustness conditions: the everyday edits real photographs go through (re-compression, downscaling,
a format change), applied to a file's bytes, and how a model's metrics move under each."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

from aiscan.model.decode import FullImage, decode_full
from aiscan.model.errors import Unsupported
from aiscan.model.thresholds import Thresholds
from aiscan.training.metrics import binary_metrics

# The metrics each condition reports, with their change against the same files scored clean.
REPORTED = ("roc_auc", "accuracy", "real_flag_rate")
SWAP_JPEG_QUALITY = 95


def _encode(pixels: np.ndarray, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **params)
    return buf.getvalue()


def _recompress(image: FullImage, *, quality: int) -> bytes:
    return _encode(image.pixels, "JPEG", quality=quality)


def _downscale(image: FullImage, *, factor: float) -> bytes:
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    small = Image.fromarray(image.pixels).resize(size, Image.Resampling.LANCZOS)
    # Saved losslessly, so the condition measures the downscale alone.
    return _encode(np.asarray(small), "PNG", compress_level=1)


def _swap_format(image: FullImage) -> bytes:
    if image.format in ("JPEG", "MPO"):
        return _encode(image.pixels, "PNG", compress_level=1)
    return _encode(image.pixels, "JPEG", quality=SWAP_JPEG_QUALITY)


@dataclass(frozen=True)
class Condition:
    """One edit: ``name`` for JSON and tables, ``description`` for a person, ``transform`` on full pixels."""

    name: str
    description: str
    transform: Callable[[FullImage], bytes]

    def apply(self, data: bytes, *, max_bytes: int | None = None, max_pixels: int | None = None) -> bytes:
        """``data`` decoded at full resolution, edited and re-encoded; a DecodeError if either fails."""
        image = decode_full(data, max_bytes=max_bytes, max_pixels=max_pixels)
        try:
            return self.transform(image)
        except (OSError, ValueError) as e:
            # Pillow's encoders refuse some images (JPEG caps each side at 65,535 px); the file is
            # then skipped for this condition alone, and counted.
            raise Unsupported(f"cannot apply {self.name}: {e}") from e


CONDITIONS: tuple[Condition, ...] = (
    *(
        Condition(f"jpeg-q{q}", f"re-saved as JPEG at quality {q}", partial(_recompress, quality=q))
        for q in (95, 75, 50)
    ),
    *(
        Condition(
            f"downscale-{f:g}",
            f"downscaled to {f:.0%} of each side (Lanczos), saved as PNG",
            partial(_downscale, factor=f),
        )
        for f in (0.75, 0.5)
    ),
    Condition(
        "format-swap",
        f"JPEG saved as PNG; PNG and other formats saved as JPEG at quality {SWAP_JPEG_QUALITY}",
        _swap_format,
    ),
)


def condition_metrics(
    clean: np.ndarray, edited: np.ndarray, labels: np.ndarray, thresholds: Thresholds
) -> dict[str, Any]:
    """The ``REPORTED`` metrics of the ``edited`` scores and their ``delta`` (edited - clean).

    ``clean`` and ``edited`` score the same files in the same order, so the delta is the edit's effect
    alone. A value or delta is None where it is undefined (ROC AUC with one class, no files at all).
    """
    if len(edited) == 0:
        return {key: None for key in REPORTED} | {"delta": dict.fromkeys(REPORTED)}
    before = binary_metrics(clean, labels, thresholds)
    after = binary_metrics(edited, labels, thresholds)
    out: dict[str, Any] = {key: after[key] for key in REPORTED}
    out["delta"] = {
        key: None if after[key] is None or before[key] is None else after[key] - before[key]
        for key in REPORTED
    }
    return out
