"""Batch inference with Keras: uint8 RGB pixels -> p_real, in fixed-size batches."""

from __future__ import annotations

import threading

import numpy as np

from aiscan.model.artifact import Artifact
from aiscan.model.device import accelerator_present
from aiscan.model.framework import keras
from aiscan.model.metadata import ArtifactMeta
from aiscan.model.runtimes import check_pixels


class Runner:
    """Runs a p_real model on fixed-size batches so its compiled predict function never retraces."""

    runtime = "keras"

    def __init__(
        self,
        model: keras.Model,
        input_size: int,
        batch_size: int = 32,
        *,
        meta: ArtifactMeta | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.model = model
        self.input_size = int(input_size)
        self.batch_size = int(batch_size)
        self.meta = meta
        self._buffer = np.zeros((self.batch_size, self.input_size, self.input_size, 3), np.uint8)
        # One model call at a time: the padding buffer is shared and TF graphs gain nothing
        # from concurrent callers on the same device.
        self._lock = threading.Lock()

    @classmethod
    def from_artifact(cls, artifact: Artifact, batch_size: int = 32) -> Runner:
        """Load (and sha256-verify) the artifact's model."""
        return cls(artifact.load_model(), artifact.meta.input_size, batch_size, meta=artifact.meta)

    @property
    def prefetch_batches(self) -> int:
        # With a GPU, decoding two batches ahead keeps it busy; on a CPU the two compete for cores.
        return 2 if accelerator_present() else 0

    def _run_batch(self, batch: np.ndarray) -> np.ndarray:
        # predict_on_batch reuses one compiled function; on CPU it measured ~2.4x faster than
        # predict() and ~5x faster than an eager call (InceptionV3, 75 px, batch 32).
        out = np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)
        if out.size != len(batch):
            raise ValueError(
                f"model returned shape {out.shape} for a batch of {len(batch)}; expected one p_real per image"
            )
        return out.reshape(len(batch))

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, s, s, 3) RGB -> float32 p_real (N,)."""
        check_pixels(pixels, self.input_size)
        n = len(pixels)
        result = np.empty(n, np.float32)
        with self._lock:
            for start in range(0, n, self.batch_size):
                stop = min(start + self.batch_size, n)
                if stop - start == self.batch_size:
                    result[start:stop] = self._run_batch(pixels[start:stop])
                else:
                    # Pad the tail to a full batch: a new batch shape would retrace the graph.
                    self._buffer[: stop - start] = pixels[start:stop]
                    self._buffer[stop - start :] = 0
                    result[start:stop] = self._run_batch(self._buffer)[: stop - start]
        return result

    def warm_up(self) -> None:
        """Trace and run the predict function once on a zero batch."""
        with self._lock:
            self._buffer[:] = 0
            self._run_batch(self._buffer)
