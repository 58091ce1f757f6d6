"""Training on synthetic labelled folders: a detector that loads, beats chance on held-out images,
carries its metrics, thresholds, preprocess, augmentation policy and data fingerprint, and, trained on
native-resolution tiles, finds traces that a resize erases."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest

from aiscan.model.detector import build_detector
from aiscan.model.metadata import PreprocessSpec
from aiscan.training.synth import write_labelled_set
from aiscan.training.train import TrainConfig, train, unfreeze_top_blocks


def test_train_and_evaluate_from_scratch(tmp_path: Path, invoke: Callable[..., str]) -> None:
    data = tmp_path / "data"
    write_labelled_set(data, 80, 80, size=(72, 72), layout="cifake", seed=5)
    out = invoke(
        "train",
        str(data),
        "--name",
        "synthetic",
        "--input-size",
        "75",
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--base-weights",
        "none",
        "--max-real-flagged",
        "0.05",
    )
    assert "registered synthetic:1" in out

    shown = json.loads(invoke("model", "show", "synthetic", "--json"))
    meta = shown["meta"]
    assert meta["training"]["epochs"] == 3 and meta["training"]["base_weights"] is None
    # The recommended mode and CNNDetection-style augmentation are the defaults, recorded as such.
    assert meta["preprocess"] == {"mode": "tiles", "max_tiles": 16, "aggregate": "fake-quartile"}
    assert meta["augment"] == {
        "blur": 0.1,
        "jpeg": 0.1,
        "flip": 0.5,
        "blur_sigma": [0.0, 3.0],
        "jpeg_quality": [30, 100],
    }
    assert "preprocess" not in meta["training"] and "augment" not in meta["training"]
    assert meta["data"]["counts"] == {"real": 64, "fake": 64}
    assert len(meta["data"]["fingerprint"]) == 64
    assert meta["code_version"]["keras"] == keras.__version__
    assert meta["metrics"]["val_size"] + meta["metrics"]["train_size"] == 128
    t = meta["thresholds"]
    assert t["uncertain_low"] <= t["decision"] <= t["uncertain_high"]
    assert [h["phase"] for h in meta["history"]] == ["train"] * len(meta["history"])

    report = tmp_path / "report"
    metrics = json.loads(invoke("evaluate", "synthetic", str(data), "--json", "-o", str(report)))
    assert metrics["n"] == 32  # the test/ split: 16 + 16 images the model never saw
    assert metrics["roc_auc"] > 0.8, metrics["roc_auc"]
    assert metrics["accuracy"] > 0.7
    for key in ("per_class", "average_precision", "confusion_matrix", "ece", "histogram", "reliability"):
        assert metrics[key] is not None
    assert {p.name for p in report.iterdir()} >= {
        "index.html",
        "metrics.json",
        "roc.png",
        "histogram.png",
        "reliability.png",
    }
    # The trained model scans like any other.
    summary = json.loads(invoke("scan", str(data / "test"), "--json"))
    assert summary["counts"]["done"] == 32 and summary["counts"]["errors"] == 0


def test_frozen_base_from_a_local_weights_file_then_fine_tuning(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    weights = tmp_path / "notop.weights.h5"
    keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(75, 75, 3)).save_weights(
        weights
    )
    data = tmp_path / "data"
    write_labelled_set(data, 24, 24, size=(64, 64), seed=2)
    (data / "REAL" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    config = TrainConfig(
        input_size=75,
        epochs=1,
        fine_tune_blocks=1,
        fine_tune_epochs=1,
        batch_size=16,
        base_weights=str(weights),
        preprocess=PreprocessSpec(mode="resize"),
        augment=None,
        seed=1,
    )
    result = train(data, config)
    assert [h.phase for h in result.history] == ["train", "fine-tune"]
    assert result.skipped_files == 1
    assert result.counts == {"real": 25, "fake": 24}
    meta = result.artifact_meta("local", "test")
    assert meta.preprocess.mode == "resize" and meta.extra["augment"] is None
    p = np.asarray(result.model.predict_on_batch(np.zeros((2, 75, 75, 3), np.uint8)))
    assert p.shape[0] == 2 and np.all((p >= 0) & (p <= 1))


def test_unfreeze_top_blocks_keeps_batchnorm_frozen() -> None:
    model = build_detector(75, None)
    base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    assert not any(layer.trainable for layer in base.layers)
    one = unfreeze_top_blocks(model, 1)
    names = [layer.name for layer in base.layers]
    after_mixed9 = base.layers[names.index("mixed9") + 1 :]
    assert one == sum(not isinstance(layer, keras.layers.BatchNormalization) for layer in after_mixed9)
    assert all(not layer.trainable for layer in base.layers[: names.index("mixed9") + 1])
    assert unfreeze_top_blocks(model, 11) > one
    assert not any(
        layer.trainable for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)
    )


def test_too_small_input_is_a_clear_error(tmp_path: Path) -> None:
    from aiscan.model.errors import ModelError

    write_labelled_set(tmp_path, 4, 4, size=(32, 32))
    with pytest.raises(ModelError, match="InceptionV3 needs >= 75"):
        train(tmp_path, TrainConfig(input_size=32))


# Small enough for two CPU cores: 75-px views, 192 training images, a few epochs.
TRACE_TRAINING = ("--input-size", "75", "--batch-size", "32", "--base-weights", "none", "--epochs", "8")


@pytest.fixture(scope="module")
def trace_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240-400 px images whose classes differ only in high-frequency traces; 30 + 30 held out in test/."""
    root = tmp_path_factory.mktemp("traces")
    write_labelled_set(
        root, 150, 150, size=(320, 320), vary_size=True, layout="cifake", style="traces", seed=1
    )
    return root


def scan_accuracy(invoke: Callable[..., str], model: str, directory: Path) -> float:
    """Share of the images under ``directory`` that a plain scan puts on their folder's side of the
    model's decision threshold: what `aiscan evaluate` calls accuracy (its uncertain band aside)."""
    truth = {str(p): p.parent.name == "REAL" for p in directory.rglob("*.*")}
    decision = json.loads(invoke("model", "show", model, "--json"))["meta"]["thresholds"]["decision"]
    summary = json.loads(invoke("scan", str(directory), "--model", model, "--json"))
    report = invoke("report", str(summary["job_id"]), "--format", "jsonl").splitlines()
    rows = [json.loads(line) for line in report]
    assert sorted(r["image_uri"] for r in rows) == sorted(truth)
    return sum((r["p_real"] >= decision) == truth[r["image_uri"]] for r in rows) / len(rows)


def test_tiles_find_the_traces_with_default_augmentation(
    trace_data: Path, invoke: Callable[..., str]
) -> None:
    invoke("train", str(trace_data), "--name", "tiles", *TRACE_TRAINING)
    meta = json.loads(invoke("model", "show", "tiles", "--json"))["meta"]
    assert meta["preprocess"]["mode"] == "tiles" and meta["augment"]["blur"] > 0

    metrics = json.loads(invoke("evaluate", "tiles", str(trace_data), "--json"))
    accuracy = scan_accuracy(invoke, "tiles", trace_data / "test")
    print(
        f"tiles: evaluate {metrics['accuracy']:.3f} (ROC AUC {metrics['roc_auc']:.3f}), scan {accuracy:.3f}"
    )
    assert metrics["n"] == 60
    assert metrics["accuracy"] >= 0.9
    # A scan of the held-out folder decides each image as the evaluation did: the same views, model
    # and threshold, whichever runtime scores them.
    assert accuracy == pytest.approx(metrics["accuracy"])


def test_resize_cannot_see_the_traces(trace_data: Path, invoke: Callable[..., str]) -> None:
    invoke("train", str(trace_data), "--name", "resized", "--preprocess", "resize", *TRACE_TRAINING)
    metrics = json.loads(invoke("evaluate", "resized", str(trace_data), "--json"))
    print(f"resize: evaluate {metrics['accuracy']:.3f} (ROC AUC {metrics['roc_auc']:.3f})")
    assert metrics["n"] == 60
    assert metrics["accuracy"] < 0.7
