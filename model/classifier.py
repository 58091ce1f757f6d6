"""Decode + batch inference + thresholds behind one object: what a chunk of a job needs from a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aiscan.model.decode import decode_full
from aiscan.model.device import accelerator_present
from aiscan.model.errors import ModelError
from aiscan.model.metadata import PreprocessSpec
from aiscan.model.runner import Runner, load_runner
from aiscan.model.thresholds import Thresholds
from aiscan.model.views import Box, aggregate, make_views


@dataclass(frozen=True)
class ImageViews:
    """One image as its model sees it: ``views`` (n, s, s, 3) uint8 and their boxes; the original size."""

    views: np.ndarray
    boxes: list[Box]
    width: int
    height: int
    format: str


@dataclass
class ImageClassifier:
    """Scores image bytes with one model artifact, applying its views (preprocess) and thresholds."""

    runner: Runner
    thresholds: Thresholds
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    max_bytes: int | None = None
    max_pixels: int | None = None

    @property
    def batch_size(self) -> int:
        return self.runner.batch_size

    @property
    def prefetch_batches(self) -> int:
        # With a GPU, decoding two batches ahead keeps it busy; on a CPU the two compete for cores.
        return 2 if accelerator_present() else 0

    def decode(self, data: bytes) -> ImageViews:
        """The views the artifact asks for; the native-resolution pixels are dropped once cut."""
        full = decode_full(data, max_bytes=self.max_bytes, max_pixels=self.max_pixels)
        views = make_views(full.pixels, self.preprocess, self.runner.input_size)
        return ImageViews(views.pixels, views.boxes, full.width, full.height, full.format)

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
    expected_sha256: str | None = None,
) -> ImageClassifier:
    """The classifier of the artifact in ``directory``; the model is loaded once per process."""
    runner = load_runner(directory, batch_size)
    assert runner.meta is not None
    if expected_sha256 is not None and runner.meta.sha256 != expected_sha256:
        raise ModelError(
            f"the model in {directory} (sha256 {runner.meta.sha256[:12]}) is not the registered one "
            f"(sha256 {expected_sha256[:12]}): re-import it with `aiscan model import`"
        )
    return ImageClassifier(runner, runner.meta.thresholds, runner.meta.preprocess, max_bytes, max_pixels)
