"""Model artifacts: a directory holding ``model.keras`` and ``model.json`` (metadata, sha256)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from aiscan.model.errors import ModelError
from aiscan.model.framework import keras
from aiscan.model.layers import Preprocess, RealProbability
from aiscan.model.metadata import (
    META_FILE,
    MODEL_FILE,
    ArtifactMeta,
    file_sha256,
    read_meta,
    verify_model,
)

_CUSTOM_OBJECTS = {"aiscan>Preprocess": Preprocess, "aiscan>RealProbability": RealProbability}


@dataclass
class Artifact:
    """A saved model directory and its metadata."""

    directory: Path
    meta: ArtifactMeta

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL_FILE

    @property
    def meta_path(self) -> Path:
        return self.directory / META_FILE

    def verify(self) -> None:
        """Check the model's files against the sha256 in the metadata."""
        verify_model(self.directory, self.meta)

    def load_model(self) -> keras.Model:
        """Load model.keras after checking its sha256 against the metadata."""
        if self.meta.model_format != "keras":
            raise ModelError(
                f"{self.meta.name} in {self.directory} is an OpenVINO model ({self.meta.model_format}); "
                "only the OpenVINO runtime runs it: set AISCAN_RUNTIME=openvino (or auto on a machine "
                "without a GPU), or use the version it was optimized from"
            )
        self.verify()
        try:
            return keras.saving.load_model(self.model_path, custom_objects=_CUSTOM_OBJECTS, compile=False)
        except Exception as exc:  # Keras raises many types for corrupt or foreign files
            raise ModelError(f"cannot load {self.model_path}: {exc}") from exc


def save_artifact(model: keras.Model, directory: Path, meta: ArtifactMeta) -> Artifact:
    """Write model.keras and model.json (sha256 and keras_version filled in) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / MODEL_FILE
    meta_path = directory / META_FILE
    # Keras insists on a .keras suffix, so the temporary name keeps it.
    tmp_model = directory / f".{MODEL_FILE}.{os.getpid()}.tmp.keras"
    tmp_meta = directory / f".{META_FILE}.{os.getpid()}.tmp"
    try:
        model.save(tmp_model)
        meta = replace(meta, sha256=file_sha256(tmp_model), keras_version=keras.__version__)
        tmp_meta.write_text(meta.to_json())
        # model first: a crash in between leaves a sha256 mismatch, which load refuses loudly.
        os.replace(tmp_model, model_path)
        os.replace(tmp_meta, meta_path)
    finally:
        tmp_model.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
    return Artifact(directory=directory, meta=meta)


def load_artifact(directory: Path) -> Artifact:
    """Read an artifact's metadata; the model itself loads lazily via ``Artifact.load_model``."""
    directory = Path(directory)
    return Artifact(directory=directory, meta=read_meta(directory))
