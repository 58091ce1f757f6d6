"""OpenVINO's CPU plugin behind the runner interface: uint8 pixels in, p_real out, no Keras import."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.model.errors import ModelError
from aiscan.model.metadata import ArtifactMeta
from aiscan.model.openvino_ir import IRFiles, ir_files, rebuild
from aiscan.model.runtimes import check_pixels

# Decoding runs this many batches ahead of OpenVINO. Measured on two cores (docs/PERFORMANCE.md): 0
# ahead 12.4 images/s, 1 ahead 12.7, 2 ahead 11.9; more only makes decode threads preempt its streams.
PREFETCH_BATCHES = 1


class OpenVINORunner:
    """Scores batches with async infer requests: a batch is split over the plugin's streams.

    The IR keeps a dynamic batch axis, so a short tail runs at its own size without padding.
    """

    runtime = "openvino"

    def __init__(
        self, files: IRFiles, input_size: int, batch_size: int = 32, *, meta: ArtifactMeta | None = None
    ) -> None:
        import openvino as ov

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.input_size = int(input_size)
        self.batch_size = int(batch_size)
        self.meta = meta
        core = ov.Core()
        if files.compiled is not None:
            core.set_property({"CACHE_DIR": str(files.compiled)})
        model = core.read_model(files.xml)
        _check_signature(model, ov.Type.u8, self.input_size, files.xml)
        compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
        streams = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        if self.batch_size < streams:
            # Fewer images than streams (a single web check): one request using every core is faster.
            compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
            streams = 1
        self.streams = streams
        # Each request scores its share of a batch; together they keep every stream busy.
        self.request_size = math.ceil(self.batch_size / streams)
        self._queue = ov.AsyncInferQueue(compiled, streams)
        self._queue.set_callback(self._done)
        self._out: np.ndarray = np.empty(0, np.float32)
        self._lock = threading.Lock()

    @classmethod
    def from_directory(cls, directory: Path, meta: ArtifactMeta, batch_size: int = 32) -> OpenVINORunner:
        """The runner of an artifact, through its IR cache; a cache that cannot be read is rebuilt once."""
        try:
            return cls(ir_files(directory, meta), meta.input_size, batch_size, meta=meta)
        except RuntimeError:  # OpenVINO's error for an unreadable or truncated IR
            return cls(rebuild(directory, meta), meta.input_size, batch_size, meta=meta)

    @property
    def prefetch_batches(self) -> int:
        return PREFETCH_BATCHES

    def _done(self, request: Any, start: int) -> None:
        scores = request.get_output_tensor(0).data
        self._out[start : start + len(scores)] = scores.reshape(-1)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, s, s, 3) RGB -> float32 p_real (N,)."""
        check_pixels(pixels, self.input_size)
        pixels = np.ascontiguousarray(pixels)
        with self._lock:
            self._out = result = np.empty(len(pixels), np.float32)
            for start in range(0, len(pixels), self.request_size):
                part = pixels[start : start + self.request_size]
                # share_inputs: the request reads the caller's array, which outlives wait_all below.
                self._queue.start_async({0: part}, start, share_inputs=True)
            self._queue.wait_all()
        return result

    def warm_up(self) -> None:
        """One batch of zeros through every request."""
        self.predict(np.zeros((self.batch_size, self.input_size, self.input_size, 3), np.uint8))


def _check_signature(model: Any, uint8: Any, size: int, xml: Path) -> None:
    """The artifact's contract: one uint8 (N, s, s, 3) input and one p_real per image out."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(
            f"{xml}: expected one input and one output, not {len(model.inputs)} and {len(model.outputs)}"
        )
    port = model.inputs[0]
    shape = port.get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else []
    if port.get_element_type() != uint8 or dims[1:] != [size, size, 3]:
        raise ModelError(f"{xml}: the input is {port.get_element_type()} {shape}, not u8 [?,{size},{size},3]")
