"""The real detector with random weights, saved as an artifact: what the bench and tests score with."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiscan.model.artifact import Artifact
    from aiscan.model.metadata import PreprocessSpec


def untrained_detector(directory: Path, input_size: int, *, name: str, seed: int, source: str) -> Artifact:
    """InceptionV3 with random weights (nothing downloaded) as an aiscan artifact in ``directory``."""
    import keras

    from aiscan.model.artifact import save_artifact
    from aiscan.model.detector import build_detector
    from aiscan.model.metadata import ArtifactMeta

    keras.utils.set_random_seed(seed)
    model = build_detector(input_size=input_size, base_weights=None)
    return save_artifact(model, directory, ArtifactMeta(name=name, input_size=input_size, source=source))


def with_preprocess(artifact: Artifact, directory: Path, preprocess: PreprocessSpec) -> Artifact:
    """A copy of ``artifact`` in ``directory`` that differs only in ``preprocess``: the same model file."""
    from aiscan.model.artifact import load_artifact
    from aiscan.model.metadata import META_FILE, MODEL_FILE

    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy2(artifact.model_path, directory / MODEL_FILE)
    meta = replace(artifact.meta, preprocess=preprocess)
    (directory / META_FILE).write_text(meta.to_json())
    return load_artifact(directory)
