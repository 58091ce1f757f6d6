"""The real detector with random weights, saved as an artifact: what the bench and tests score with."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiscan.model.artifact import Artifact


def untrained_detector(directory: Path, input_size: int, *, name: str, seed: int, source: str) -> Artifact:
    """InceptionV3 with random weights (nothing downloaded) as an aiscan artifact in ``directory``."""
    import keras

    from aiscan.model.artifact import save_artifact
    from aiscan.model.detector import build_detector
    from aiscan.model.metadata import ArtifactMeta

    keras.utils.set_random_seed(seed)
    model = build_detector(input_size=input_size, base_weights=None)
    return save_artifact(model, directory, ArtifactMeta(name=name, input_size=input_size, source=source))
