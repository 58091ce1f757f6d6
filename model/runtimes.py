"""Which runtime executes a model (Keras or OpenVINO), and one loaded runner per process and artifact.

Both keep an artifact's contract: uint8 (N, s, s, 3) RGB pixels in, float32 p_real (N,) out, the
preprocessing inside the model. Choosing OpenVINO with a cached IR imports no Keras at all.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from aiscan.model.errors import ModelError
from aiscan.model.metadata import RUNTIMES, ArtifactMeta, read_meta
from aiscan.model.openvino_ir import openvino_installed


class ModelRunner(Protocol):
    """What scoring needs from a loaded model, whatever runs it."""

    runtime: str
    input_size: int
    batch_size: int
    meta: ArtifactMeta | None

    @property
    def prefetch_batches(self) -> int:
        """Batches to decode ahead while the model runs (model.batching)."""
        ...

    def predict(self, pixels: np.ndarray) -> np.ndarray: ...

    def warm_up(self) -> None: ...


def check_pixels(pixels: np.ndarray, size: int) -> None:
    """The input side of the contract: uint8 (N, size, size, 3)."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, not {pixels.dtype}")
    if pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
        raise ValueError(f"pixels must have shape (N, {size}, {size}, 3), not {pixels.shape}")


def nvidia_device_present() -> bool:
    """Whether the kernel exposes an NVIDIA GPU; answered without importing any framework."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


def resolve_runtime(requested: str, meta: ArtifactMeta) -> str:
    """``keras`` or ``openvino`` for this artifact: ``auto`` is OpenVINO unless Keras sees a GPU."""
    if requested not in RUNTIMES:
        raise ModelError(f"unknown runtime {requested!r}; expected one of {', '.join(RUNTIMES)}")
    if meta.model_format == "openvino":
        if requested == "keras":
            raise ModelError(
                f"{meta.name} is an OpenVINO model (made by `aiscan model optimize`): the keras runtime "
                "cannot run it; use AISCAN_RUNTIME=openvino or auto, or the version it was made from"
            )
        requested = "openvino"
    if requested == "openvino" and not openvino_installed():
        raise ModelError(
            "AISCAN_RUNTIME=openvino, but OpenVINO is not installed: `pip install 'aiscan[cpu]'` "
            "(make setup does), or set AISCAN_RUNTIME=keras"
        )
    if requested != "auto":
        return requested
    if not openvino_installed():
        return "keras"
    if not nvidia_device_present():
        return "openvino"
    # A GPU is on the machine: Keras runs there when its backend can use it (GPU workers keep Keras).
    from aiscan.model.device import accelerator_present

    return "keras" if accelerator_present() else "openvino"


def _load(directory: Path, meta: ArtifactMeta, batch_size: int, runtime: str) -> ModelRunner:
    if runtime == "openvino":
        from aiscan.model.openvino_runner import OpenVINORunner

        return OpenVINORunner.from_directory(directory, meta, batch_size)
    from aiscan.model.artifact import Artifact
    from aiscan.model.runner import Runner

    return Runner.from_artifact(Artifact(directory, meta), batch_size)


_cache: dict[tuple[Path, str, int, str], ModelRunner] = {}
_cache_lock = threading.Lock()


def load_runner(directory: Path, batch_size: int = 32, runtime: str = "auto") -> ModelRunner:
    """A process-wide runner per (artifact directory, model sha256, batch size, runtime); loads once."""
    resolved = Path(directory).expanduser().resolve()
    meta = read_meta(resolved)
    chosen = resolve_runtime(runtime, meta)
    key = (resolved, meta.sha256, int(batch_size), chosen)
    with _cache_lock:
        runner = _cache.get(key)
        if runner is None:
            runner = _load(resolved, meta, batch_size, chosen)
            # A re-saved model in the same directory replaces the stale one instead of piling up.
            for old in [k for k in _cache if k[0] == resolved and k[2:] == key[2:]]:
                del _cache[old]
            _cache[key] = runner
        return runner
