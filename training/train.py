"""Train a detector of the InceptionV3 architecture on labelled folders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from model.detector import build_detector
from training.dataset import ImageBatches, find_labelled, stratified_split


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run."""

    input_size: int = 299
    epochs: int = 10
    batch_size: int = 32
    base_weights: str | None = "imagenet"
    learning_rate: float = 1e-3
    val_fraction: float = 0.2
    seed: int = 0


@dataclass
class TrainResult:
    model: keras.Model
    metrics: dict[str, Any]
    counts: dict[str, int]
    config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)

    def params(self) -> dict[str, Any]:
        return asdict(self.config)


class _EpochReporter(keras.callbacks.Callback):
    def __init__(self, report: Callable[[int, dict[str, float]], None]) -> None:
        super().__init__()
        self.report = report

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.report(epoch + 1, dict(logs or {}))


def train(
    data_dir: Path,
    config: TrainConfig,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train on ``data_dir`` (REAL/ and FAKE/ folders) and return the model with validation metrics."""
    keras.utils.set_random_seed(config.seed)
    files = find_labelled(Path(data_dir), split="train")
    train_files, val_files = stratified_split(files, config.val_fraction, config.seed)
    train_data = ImageBatches(
        train_files, config.input_size, config.batch_size, shuffle=True, seed=config.seed
    )
    val_data = ImageBatches(val_files, config.input_size, config.batch_size)

    from_scratch = config.base_weights is None
    model = build_detector(config.input_size, config.base_weights, train_base=from_scratch)
    if from_scratch:
        # With a few hundred steps, the default momentum (0.99) leaves BatchNorm's moving statistics
        # far from the data's, and inference-mode predictions collapse to one class.
        for layer in _nested_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9

    # Balanced classes by weighting, so a skewed archive does not teach "always real".
    counts = train_files.counts()
    total = counts["real"] + counts["fake"]
    class_weight = {1: total / (2 * counts["real"]), 0: total / (2 * counts["fake"])}

    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    callbacks: list[keras.callbacks.Callback] = []
    if on_epoch is not None:
        callbacks.append(_EpochReporter(on_epoch))
    fit = model.fit(
        train_data,
        validation_data=val_data,
        epochs=config.epochs,
        class_weight=class_weight,
        callbacks=callbacks,
        verbose=0,
    )
    history = [
        {k: float(v[i]) for k, v in fit.history.items()} for i in range(len(fit.history["loss"]))
    ]
    p_val, y_val = _predict(model, val_data)
    metrics = {
        "val_accuracy": float(np.mean((p_val > 0.5) == (y_val == 1))) if len(p_val) else None,
        "val_size": len(val_files),
        "train_size": len(train_files),
        "skipped_files": len(train_data.skipped | val_data.skipped),
        "epochs_run": len(history),
    }
    return TrainResult(model, metrics, files.counts(), config, history)


def _nested_layers(model: keras.Model) -> list[keras.layers.Layer]:
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += _nested_layers(layer)
        out.append(layer)
    return out


def _predict(model: keras.Model, data: ImageBatches) -> tuple[np.ndarray, np.ndarray]:
    """p_real and labels over ``data`` (files that failed to decode drop out of both)."""
    scores, labels = [np.zeros(0)], [np.zeros(0)]
    for x, y in data:
        if len(x):
            scores.append(np.asarray(model.predict_on_batch(x)).reshape(-1))
            labels.append(y)
    return np.concatenate(scores), np.concatenate(labels)
