"""Tiny Keras classifiers for tests: a convolution, pooling and a dense output, built in a second."""

from __future__ import annotations

from pathlib import Path

import keras


def tiny_classifier(size: int, units: int = 1, *, seed: int = 0, activation: str = "relu") -> keras.Model:
    """A (size, size, 3) float-input model with ``units`` sigmoid outputs."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, activation=activation)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(units, activation="sigmoid")(x))


def save_tiny_classifier(path: Path, size: int, units: int = 1, **kwargs: object) -> keras.Model:
    """Build a tiny classifier and save it to ``path`` (.keras or legacy .h5)."""
    model = tiny_classifier(size, units, **kwargs)  # type: ignore[arg-type]
    model.save(path)
    return model
