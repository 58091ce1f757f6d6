"""Decode + batch inference + thresholds behind one object: what a chunk of a job needs from a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aiscan.model.batching import MemoryBudget, shared_budget
from aiscan.model.decode import RGB_BYTES, open_image
from aiscan.model.errors import ModelError
from aiscan.model.metadata import PreprocessSpec
from aiscan.model.runtimes import ModelRunner, load_runner
from aiscan.model.thresholds import Thresholds
from aiscan.model.thumbnails import thumbnail
from aiscan.model.views import Box, aggregate, make_views

# Memory all decodes of one process may hold at once, and the most one image may need.
DEFAULT_DECODE_MEMORY = 1024 * 1024 * 1024
# A squashed view resizes a Pillow copy of the RGB pixels (four bytes a pixel) while they are held.
_SQUASH_BYTES = 4
_SQUASHING_MODES = frozenset({"resize", "tiles+global"})


@dataclass(frozen=True)
class ImageViews:
    """One image as its model sees it: ``views`` (n, s, s, 3) uint8 and their boxes; the original size;
    a small JPEG for display (model.thumbnails)."""

    views: np.ndarray
    boxes: list[Box]
    width: int
    height: int
    format: str
    thumbnail: bytes | None = None


@dataclass
class ImageClassifier:
    """Scores image bytes with one model artifact, applying its views (preprocess) and thresholds."""

    runner: ModelRunner
    thresholds: Thresholds
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    max_bytes: int | None = None
    max_pixels: int | None = None
    max_decode_memory: int = DEFAULT_DECODE_MEMORY
    # Scans keep a small JPEG of each image for pages and reports; evaluation and benches need none.
    make_thumbnails: bool = True

    @property
    def decode_budget(self) -> MemoryBudget:
        return shared_budget(self.max_decode_memory)

    @property
    def batch_size(self) -> int:
        return self.runner.batch_size

    @property
    def prefetch_batches(self) -> int:
        return self.runner.prefetch_batches

    @property
    def runtime(self) -> str:
        """What executes the model: keras or openvino (model.runtimes)."""
        return self.runner.runtime

    def decode(self, data: bytes) -> ImageViews:
        """The views the artifact asks for; the native-resolution pixels are dropped once cut.

        Decoding waits for its peak memory in the process's decode budget; an image whose peak alone
        exceeds the budget is refused from its header (``DecodeMemoryExceeded``).
        """
        budget = self.decode_budget
        with open_image(data, max_bytes=self.max_bytes, max_pixels=self.max_pixels) as opened:
            need = opened.cost
            if self.preprocess.mode in _SQUASHING_MODES:
                need = max(need, opened.result_bytes * (RGB_BYTES + _SQUASH_BYTES) // RGB_BYTES)
            if need > budget.capacity:
                raise opened.over_budget(need, budget.capacity)
            with budget.reserve(need):
                full = opened.decode()
                views = make_views(full.pixels, self.preprocess, self.runner.input_size)
                # Made from the native pixels while they are here, so pages never need the image again.
                small = thumbnail(full.pixels) if self.make_thumbnails else None
                width, height, fmt = full.width, full.height, full.format
                del full  # the native pixels leave before the memory they held is handed on
        return ImageViews(views.pixels, views.boxes, width, height, fmt, small)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return self.runner.predict(pixels)

    def aggregate(self, scores: np.ndarray) -> tuple[float, int]:
        """An image's p_real from its views' scores, and the index of its most fake view."""
        return aggregate(scores, self.preprocess.aggregate)

    def label(self, p_real: float) -> str:
        return self.thresholds.label(p_real)

    def warm_up(self) -> None:
        self.runner.warm_up()


def load_classifier(
    directory: Path,
    *,
    batch_size: int,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    max_decode_memory: int = DEFAULT_DECODE_MEMORY,
    expected_sha256: str | None = None,
    make_thumbnails: bool = True,
    runtime: str = "auto",
) -> ImageClassifier:
    """The classifier of the artifact in ``directory``; the model is loaded once per process by the
    ``runtime`` (model.runtimes) that suits it."""
    runner = load_runner(directory, batch_size, runtime)
    assert runner.meta is not None
    if expected_sha256 is not None and runner.meta.sha256 != expected_sha256:
        raise ModelError(
            f"the model in {directory} (sha256 {runner.meta.sha256[:12]}) is not the registered one "
            f"(sha256 {expected_sha256[:12]}): re-import it with `aiscan model import`"
        )
    return ImageClassifier(
        runner,
        runner.meta.thresholds,
        runner.meta.preprocess,
        max_bytes,
        max_pixels,
        max_decode_memory,
        make_thumbnails,
    )
