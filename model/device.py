"""Which device the Keras backend computes on."""

from __future__ import annotations

from functools import lru_cache

from aiscan.model.framework import keras


@lru_cache(maxsize=1)
def accelerator_present() -> bool:
    """True when the active Keras backend sees a GPU."""
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False
