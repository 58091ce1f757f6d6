"""Per-process worker state: device set-up, the model cache and warm-up."""

from __future__ import annotations

import logging
import os

from aiscan.jobs.artifacts import classifier_factory
from aiscan.jobs.settings import Settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.queries import resolve_model

log = logging.getLogger("aiscan.worker")


def pin_gpu(process_index: int, gpus: int) -> None:
    """Give each pool process one GPU, before the ML framework is imported in that process."""
    if gpus > 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(process_index % gpus)
    # JAX would otherwise take most of the GPU's memory at start; TensorFlow is told below.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def enable_memory_growth() -> None:
    """Let TensorFlow allocate GPU memory as needed instead of all of it at start."""
    from aiscan.model.runtimes import nvidia_device_present

    if not nvidia_device_present():
        return  # no GPU: nothing to set, and an OpenVINO worker never needs to import TensorFlow
    from aiscan.model.framework import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def warm_up(settings: Settings) -> None:
    """Load the default model and run one batch, so the first chunk does not pay for tracing."""
    try:
        with open_database(settings.database_url).session() as s:
            row = resolve_model(s, None)
            s.expunge(row)
        classifier = classifier_factory(settings, settings.batch_size)(row)
        classifier.warm_up()
        log.info("warmed up model %s on %s", row.ref, classifier.runtime)
    except Exception as exc:  # a worker with no default model yet still serves jobs
        log.warning("no warm-up: %s", exc)
