"""Train a detector of the InceptionV3 architecture on labelled folders, in two phases.

Phase 1 trains the head on a frozen base (or the whole network when there are no base weights);
phase 2, optional, fine-tunes the top inception blocks at a lower learning rate. Both phases stop
early on the validation loss and keep the best weights. The model learns from the views its
preprocess will show it (one native-resolution crop per image and epoch in crop and tile modes), and
its thresholds are chosen on validation scores made the way inference makes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.model.classifier import ImageClassifier
from aiscan.model.detector import build_detector
from aiscan.model.device import accelerator_present
from aiscan.model.errors import ModelError
from aiscan.model.framework import keras
from aiscan.model.metadata import ArtifactMeta, PreprocessSpec
from aiscan.model.runner import Runner
from aiscan.model.thresholds import Thresholds
from aiscan.training.augment import Augment
from aiscan.training.dataset import ImageBatches, LabelledFiles, find_labelled, stratified_split
from aiscan.training.evaluate import score_files
from aiscan.training.metrics import binary_metrics, choose_thresholds

# The 11 blocks of keras.applications.InceptionV3 end in layers named mixed0 .. mixed10.
INCEPTION_BLOCKS = 11
# What an artifact keeps of the validation metrics; curves and histograms belong in reports.
SUMMARY_METRICS = (
    "n",
    "counts",
    "accuracy",
    "roc_auc",
    "average_precision",
    "ece",
    "real_flag_rate",
    "confusion_matrix",
    "per_class",
    "thresholds",
)


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run."""

    input_size: int = 299
    epochs: int = 10
    fine_tune_blocks: int = 0
    fine_tune_epochs: int | None = None
    batch_size: int = 32
    base_weights: str | None = "imagenet"
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-5
    val_fraction: float = 0.2
    patience: int = 3
    # Native-resolution tiles keep the traces a resize erases: what new detectors should use.
    preprocess: PreprocessSpec = field(default_factory=lambda: PreprocessSpec(mode="tiles"))
    augment: Augment | None = field(default_factory=Augment)
    max_real_flagged: float | None = None
    uncertain_band: float = 0.2
    seed: int = 0
    workers: int = 2


@dataclass
class EpochLog:
    phase: str
    epoch: int
    logs: dict[str, float]


def format_epoch(entry: EpochLog, epochs: int) -> str:
    """One line per epoch for a person watching."""
    logs = entry.logs
    return (
        f"  {entry.phase} epoch {entry.epoch}/{epochs}: loss {logs.get('loss', float('nan')):.3f}, "
        f"val loss {logs.get('val_loss', float('nan')):.3f}, "
        f"val accuracy {logs.get('val_accuracy', float('nan')):.3f}"
    )


@dataclass
class TrainResult:
    model: keras.Model
    metrics: dict[str, Any]
    thresholds: Thresholds
    counts: dict[str, int]
    fingerprint: str
    config: TrainConfig
    history: list[EpochLog] = field(default_factory=list)
    skipped_files: int = 0

    def artifact_meta(self, name: str, source: str) -> ArtifactMeta:
        """Metadata for the artifact: preprocess, metrics, thresholds, data fingerprint, parameters,
        augmentation policy, code version."""
        config = self.config
        parameters = {
            f.name: getattr(config, f.name) for f in fields(config) if f.name not in ("preprocess", "augment")
        }
        return ArtifactMeta(
            name=name,
            input_size=config.input_size,
            scale="symmetric",
            thresholds=self.thresholds,
            preprocess=config.preprocess,
            metrics=self.metrics,
            source=source,
            extra={
                "training": parameters,
                "augment": None if config.augment is None else config.augment.to_dict(),
                "data": {
                    "counts": self.counts,
                    "fingerprint": self.fingerprint,
                    "skipped_files": self.skipped_files,
                },
                "code_version": code_version(),
                "history": [asdict(h) for h in self.history],
            },
        )


def code_version() -> dict[str, str]:
    try:
        aiscan = version("aiscan")
    except PackageNotFoundError:
        aiscan = "unknown"
    return {"aiscan": aiscan, "keras": keras.__version__, "backend": keras.config.backend()}


def data_fingerprint(data_dir: Path, files: LabelledFiles) -> str:
    """sha256 over the sorted (relative path, size, label) list: the same folders give the same value."""
    digest = hashlib.sha256()
    for path, label in sorted(zip(files.paths, files.labels.tolist(), strict=True)):
        digest.update(f"{path.relative_to(data_dir)}\t{path.stat().st_size}\t{label}\n".encode())
    return digest.hexdigest()


class _Reporter(keras.callbacks.Callback):
    def __init__(
        self,
        phase: str,
        history: list[EpochLog],
        on_epoch: Callable[[EpochLog], None] | None,
        on_batch: Callable[[str, int, int], None] | None,
        steps: int,
    ) -> None:
        super().__init__()
        self.phase, self.history, self.on_epoch, self.on_batch, self.steps = (
            phase,
            history,
            on_epoch,
            on_batch,
            steps,
        )

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        if self.on_batch is not None:
            self.on_batch(self.phase, batch + 1, self.steps)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        entry = EpochLog(self.phase, epoch + 1, {k: float(v) for k, v in (logs or {}).items()})
        self.history.append(entry)
        if self.on_epoch is not None:
            self.on_epoch(entry)


class PreciseBatchNorm(keras.callbacks.Callback):
    """Re-estimates BatchNorm's moving statistics on training batches before each validation.

    A network trained from scratch for a few hundred steps has moving averages that lag far behind
    its weights; inference-mode predictions then collapse to one class and early stopping judges the
    wrong epoch. The average over ``batches`` forward passes with the final weights fixes both.
    """

    def __init__(self, data: ImageBatches, batches: int = 16) -> None:
        super().__init__()
        self.data, self.batches = data, batches

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        if batch + 1 == len(self.data):
            recalibrate_batchnorm(self.model, self.data, self.batches)


def recalibrate_batchnorm(model: keras.Model, data: ImageBatches, batches: int) -> None:
    """Set every BatchNorm's moving mean and variance to the average over up to ``batches`` batches."""
    layers = [layer for layer in _nested_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    done = 0
    for index in range(len(data)):
        x, _ = data.decode_batch(index)
        if not len(x):
            continue
        done += 1
        # momentum (k-1)/k turns the exponential average into a plain mean of the k batches so far.
        for layer in layers:
            layer.momentum = (done - 1) / done
        model(x, training=True)
        if done == batches:
            break
    for layer, momentum in zip(layers, saved, strict=True):
        layer.momentum = momentum


def _nested_layers(model: keras.Model) -> list[keras.layers.Layer]:
    out: list[keras.layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += _nested_layers(layer)
        out.append(layer)
    return out


def _base(model: keras.Model) -> keras.Model:
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name.startswith("inception_v3"):
            return layer
    raise ModelError("the detector has no InceptionV3 base")


def unfreeze_top_blocks(model: keras.Model, blocks: int) -> int:
    """Make the top ``blocks`` inception blocks trainable (BatchNorm stays frozen); returns layer count."""
    base = _base(model)
    base.trainable = True
    names = [layer.name for layer in base.layers]
    last_frozen = INCEPTION_BLOCKS - 1 - blocks
    start = 0 if last_frozen < 0 else names.index(f"mixed{last_frozen}") + 1
    count = 0
    for i, layer in enumerate(base.layers):
        # BatchNorm statistics stay as they were: a small fine-tuning set would wreck them.
        layer.trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)
        count += layer.trainable
    return count


def _fit(
    model: keras.Model,
    train: ImageBatches,
    val: ImageBatches,
    *,
    epochs: int,
    lr: float,
    class_weight: dict[int, float],
    patience: int,
    reporter: _Reporter,
    precise_bn: bool,
) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    # Order matters: statistics are re-estimated before Keras validates the epoch.
    callbacks = [PreciseBatchNorm(train)] if precise_bn else []
    model.fit(
        train,
        validation_data=val,
        epochs=epochs,
        class_weight=class_weight,
        callbacks=[*callbacks, stop, reporter],
        verbose=0,
    )


def train(
    data_dir: Path,
    config: TrainConfig,
    *,
    on_epoch: Callable[[EpochLog], None] | None = None,
    on_batch: Callable[[str, int, int], None] | None = None,
) -> TrainResult:
    """Train on ``data_dir`` (REAL/ and FAKE/, or their train/ split) and score the validation split."""
    data_dir = Path(data_dir)
    if config.input_size < 75:
        raise ModelError(f"input size {config.input_size} is too small; InceptionV3 needs >= 75")
    keras.utils.set_random_seed(config.seed)
    files = find_labelled(data_dir, split="train")
    train_files, val_files = stratified_split(files, config.val_fraction, config.seed)
    native = config.preprocess.native
    train_data = ImageBatches(
        train_files,
        config.input_size,
        config.batch_size,
        native=native,
        shuffle=True,
        seed=config.seed,
        augment=config.augment,
        workers=config.workers,
    )
    # Early stopping watches one fixed view per validation image: cheap, and the same kind of view
    # the model learns from. The metrics and thresholds below score every view, as inference does.
    val_data = ImageBatches(
        val_files,
        config.input_size,
        config.batch_size,
        native=native,
        seed=config.seed,
        workers=config.workers,
    )

    if accelerator_present():
        keras.mixed_precision.set_global_policy("mixed_float16")
    from_scratch = config.base_weights is None
    model = build_detector(config.input_size, config.base_weights, train_base=from_scratch)

    # Balanced classes by weighting, so a skewed archive does not teach "always real".
    counts = train_files.counts()
    total = counts["real"] + counts["fake"]
    class_weight = {1: total / (2 * counts["real"]), 0: total / (2 * counts["fake"])}
    history: list[EpochLog] = []
    steps = len(train_data)

    _fit(
        model,
        train_data,
        val_data,
        epochs=config.epochs,
        lr=config.learning_rate,
        class_weight=class_weight,
        patience=config.patience,
        reporter=_Reporter("train", history, on_epoch, on_batch, steps),
        precise_bn=from_scratch,
    )
    if config.fine_tune_blocks > 0 and not from_scratch:
        unfreeze_top_blocks(model, config.fine_tune_blocks)
        _fit(
            model,
            train_data,
            val_data,
            epochs=config.fine_tune_epochs or max(1, config.epochs // 2),
            lr=config.fine_tune_learning_rate,
            class_weight=class_weight,
            patience=config.patience,
            reporter=_Reporter("fine-tune", history, on_epoch, on_batch, steps),
            precise_bn=False,
        )
    keras.mixed_precision.set_global_policy("float32")

    p_val, y_val = inference_scores(model, val_files, config)
    thresholds = Thresholds()
    if config.max_real_flagged is not None:
        thresholds = choose_thresholds(
            p_val, y_val, max_real_flagged=config.max_real_flagged, band=config.uncertain_band
        )
    full = binary_metrics(p_val, y_val, thresholds)
    metrics = {k: full[k] for k in SUMMARY_METRICS if k in full}
    metrics.update(split="validation", train_size=len(train_files), val_size=len(val_files))
    skipped = len(train_data.skipped | val_data.skipped)
    return TrainResult(
        model,
        metrics,
        thresholds,
        files.counts(),
        data_fingerprint(data_dir, files),
        config,
        history,
        skipped,
    )


def inference_scores(
    model: keras.Model, files: LabelledFiles, config: TrainConfig
) -> tuple[np.ndarray, np.ndarray]:
    """p_real and labels of ``files`` as a scan would score them with ``config.preprocess``: every view,
    batched across images, then aggregated; files that cannot be decoded drop out of both."""
    classifier = ImageClassifier(
        Runner(model, config.input_size, config.batch_size), Thresholds(), config.preprocess
    )
    scores, _skipped = score_files(classifier, files.paths, None)
    kept = sorted(scores)
    return np.array([scores[i] for i in kept], dtype=np.float64), files.labels[kept].astype(np.int32)
