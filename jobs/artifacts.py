"""Model artifacts under AISCAN_HOME/models/NAME/VERSION, registered in the database."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiscan.jobs.settings import Settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.models import DetectorModel
from aiscan.jobs.store.queries import next_model_version, register_model


def classifier_factory(settings: Settings, batch_size: int) -> Callable[[DetectorModel], Any]:
    """Loads a registered model's classifier (once per process); Keras is imported on first use."""
    from aiscan.model.classifier import load_classifier

    def classifier_for(row: DetectorModel) -> Any:
        return load_classifier(
            Path(row.path),
            batch_size=batch_size,
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_pixels,
            max_decode_memory=settings.decode_memory_mb * 1024 * 1024,
            expected_sha256=row.sha256,
            runtime=settings.runtime,
        )

    return classifier_for


def register_artifact(settings: Settings, name: str, build: Callable[[Path], Any]) -> DetectorModel:
    """Save the next version of ``name`` (``build(directory)`` writes it), then register it."""
    db = open_database(settings.database_url)
    with db.session() as s:
        version = next_model_version(s, name)
    directory = settings.models_dir / name / str(version)
    if directory.exists():
        shutil.rmtree(directory)
    try:
        artifact = build(directory)
        with db.session() as s:
            row = register_model(
                s,
                name=name,
                path=str(directory),
                sha256=artifact.meta.sha256,
                meta=artifact.meta.to_dict(),
            )
            s.expunge(row)
            return row
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
