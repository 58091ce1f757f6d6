"""The OpenVINO runtime against Keras on the same pixels, its IR cache, and how AISCAN_RUNTIME chooses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from aiscan.jobs.errors import ConfigError
from aiscan.jobs.settings import Settings, get_settings
from aiscan.model.artifact import load_artifact, save_artifact
from aiscan.model.classifier import load_classifier
from aiscan.model.errors import ModelError
from aiscan.model.importer import import_keras_file
from aiscan.model.metadata import META_FILE, PreprocessSpec, read_meta
from aiscan.model.openvino_ir import CACHE_DIR, cache_entry, decline_telemetry, ir_files
from aiscan.model.openvino_runner import OpenVINORunner
from aiscan.model.runner import Runner
from aiscan.model.runtimes import load_runner, resolve_runtime
from aiscan.training.synth import write_labelled_set
from aiscan.training.train import TrainConfig, train
from tests.tinymodels import tiny_classifier

# The bound: OpenVINO's float32 CPU kernels sum in another order than TensorFlow's.
AGREEMENT = 1e-4


def _pixels(n: int, size: int, seed: int) -> np.ndarray:
    # Per-image channel gains, so that pooled outputs differ from image to image.
    rng = np.random.default_rng(seed)
    gain = rng.uniform(0.2, 1.0, (n, 1, 1, 3))
    return (rng.integers(0, 256, (n, size, size, 3)) * gain).astype(np.uint8)


def _strong(model: keras.Model, seed: int) -> keras.Model:
    """Scale up random weights so outputs spread over (0, 1) and a disagreement would show."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([w * rng.uniform(2.0, 4.0) for w in layer.get_weights()])
    return model


def _agree(directory: Path, pixels: np.ndarray, batch_size: int = 4) -> np.ndarray:
    """Both runtimes' p_real on ``pixels``, asserted within AGREEMENT; the Keras scores."""
    keras_scores = load_runner(directory, batch_size, "keras").predict(pixels)
    ov = load_runner(directory, batch_size, "openvino")
    assert isinstance(ov, OpenVINORunner)
    ov_scores = ov.predict(pixels)
    assert ov_scores.dtype == np.float32 and ov_scores.shape == (len(pixels),)
    np.testing.assert_allclose(ov_scores, keras_scores, atol=AGREEMENT, rtol=0)
    return keras_scores


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real detector (InceptionV3 at 75 px) trained for one epoch on synthetic images, as an artifact."""
    root = tmp_path_factory.mktemp("trained")
    write_labelled_set(root / "data", 24, 24, size=(96, 96), layout="cifake", seed=3)
    config = TrainConfig(
        input_size=75,
        epochs=1,
        batch_size=8,
        base_weights=None,
        preprocess=PreprocessSpec("resize"),
        augment=None,
        workers=1,
    )
    result = train(root / "data", config)
    return save_artifact(result.model, root / "artifact", result.artifact_meta("trained", "test")).directory


def test_trained_detector_agrees(trained: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_labelled_set(images, 6, 6, size=(120, 90), seed=9)
    classifier = load_classifier(trained, batch_size=4, make_thumbnails=False, runtime="keras")
    views = np.concatenate([classifier.decode(p.read_bytes()).views for p in sorted(images.rglob("*.*"))])
    scores = _agree(trained, views)
    assert scores.std() > 1e-4  # the images get different scores, so the comparison can fail
    # A tail shorter than a request runs at its own size: 5 = one full request of 4 and one of 1.
    np.testing.assert_allclose(
        load_runner(trained, 4, "openvino").predict(views[:5]), scores[:5], atol=AGREEMENT
    )


def test_inceptionv3_app_convention_agrees(tmp_path: Path) -> None:
    """The Streamlit app's convention: 0..1 RGB floats, one sigmoid unit meaning real, legacy .h5."""
    src = tmp_path / "app.h5"
    _strong(tiny_classifier(64, 1, seed=1), seed=1).save(src)
    art = import_keras_file(src, tmp_path / "imported", name="app", scale="unit", sigmoid_means="real")
    scores = _agree(art.directory, _pixels(10, 64, seed=2))
    assert scores.std() > 0.01


def test_cifake_convention_agrees(tmp_path: Path) -> None:
    """The CIFAKE app's convention: 36x36 BGR 0..1, two sigmoid units, index 1 = REAL, legacy .h5."""
    src = tmp_path / "cifake.h5"
    _strong(tiny_classifier(36, 2, seed=3), seed=3).save(src)
    art = import_keras_file(src, tmp_path / "imported", name="cifake", channel_order="bgr", real_index=1)
    pixels = _pixels(9, 36, seed=4)
    scores = _agree(art.directory, pixels)
    # Channel order lives inside the IR too: RGB pixels would score differently.
    swapped = load_runner(art.directory, 4, "openvino").predict(np.ascontiguousarray(pixels[..., ::-1]))
    assert np.abs(swapped - scores).max() > 1e-3


def test_ir_cache_is_reused_and_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_home = tmp_path / "user"
    user_home.mkdir()
    monkeypatch.setenv("HOME", str(user_home))
    src = tmp_path / "m.keras"
    tiny_classifier(32, 1, seed=5).save(src)
    art = import_keras_file(src, tmp_path / "art", name="m")
    first = ir_files(art.directory)
    # Converting declined OpenVINO's usage statistics for this user, who had not chosen.
    assert (user_home / "intel" / "openvino_telemetry").read_text() == "0"
    assert first.xml.parent == cache_entry(art.directory, art.meta)
    stamp = first.xml.stat().st_mtime_ns
    os.utime(first.xml, ns=(stamp - 10**9, stamp - 10**9))
    again = ir_files(art.directory)
    assert again == first and again.xml.stat().st_mtime_ns == stamp - 10**9  # not converted again

    # A new model in the same directory: a new entry, converted from the new file; the old one goes.
    src2 = tmp_path / "m2.keras"
    _strong(tiny_classifier(32, 1, seed=6), seed=6).save(src2)
    saved = import_keras_file(src2, art.directory, name="m")
    rebuilt = ir_files(art.directory)
    assert rebuilt.xml.parent == cache_entry(art.directory, saved.meta) != first.xml.parent
    assert not first.xml.parent.exists()
    assert [p.name for p in (art.directory / CACHE_DIR).iterdir() if p.is_dir()] == [rebuilt.xml.parent.name]
    pixels = _pixels(4, 32, seed=7)
    expected = Runner.from_artifact(load_artifact(art.directory), 4).predict(pixels)
    np.testing.assert_allclose(OpenVINORunner(rebuilt, 32, 4).predict(pixels), expected, atol=AGREEMENT)


def test_unreadable_cache_is_rebuilt(tmp_path: Path) -> None:
    src = tmp_path / "m.keras"
    tiny_classifier(32, 1, seed=8).save(src)
    art = import_keras_file(src, tmp_path / "art", name="m")
    files = ir_files(art.directory)
    files.xml.write_text("<not an IR")
    runner = OpenVINORunner.from_directory(art.directory, art.meta, 4)
    pixels = _pixels(3, 32, seed=9)
    expected = Runner.from_artifact(load_artifact(art.directory), 4).predict(pixels)
    np.testing.assert_allclose(runner.predict(pixels), expected, atol=AGREEMENT)


def test_a_changed_model_file_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "m.keras"
    tiny_classifier(32, 1, seed=10).save(src)
    art = import_keras_file(src, tmp_path / "art", name="m")
    ir_files(art.directory)
    tiny_classifier(32, 1, seed=11).save(art.model_path)  # swapped behind the metadata's back
    with pytest.raises(ModelError, match="changed since it was saved"):
        ir_files(art.directory)


def test_runtime_choice(tmp_path: Path) -> None:
    meta = read_meta(_tiny_artifact(tmp_path))
    assert resolve_runtime("keras", meta) == "keras"
    assert resolve_runtime("openvino", meta) == "openvino"
    # This machine has no GPU and OpenVINO is installed (make setup), so auto means OpenVINO.
    assert resolve_runtime("auto", meta) == "openvino"
    with pytest.raises(ModelError, match="unknown runtime"):
        resolve_runtime("onnx", meta)
    ir_meta = replace(meta, model_format="openvino")
    assert resolve_runtime("auto", ir_meta) == "openvino"
    with pytest.raises(ModelError, match="keras runtime cannot run it"):
        resolve_runtime("keras", ir_meta)


def test_runtime_setting() -> None:
    env = {"AISCAN_HOME": "/tmp/x"}
    assert Settings.from_env(env).runtime == "auto"
    assert Settings.from_env(env | {"AISCAN_RUNTIME": "OpenVINO"}).runtime == "openvino"
    with pytest.raises(ConfigError, match="AISCAN_RUNTIME='tensorrt' must be one of auto, keras, openvino"):
        Settings.from_env(env | {"AISCAN_RUNTIME": "tensorrt"})


def _tiny_artifact(tmp_path: Path) -> Path:
    src = tmp_path / "t.keras"
    tiny_classifier(32, 1, seed=12).save(src)
    return import_keras_file(src, tmp_path / "tiny", name="tiny").directory


def test_scans_agree_across_runtimes(
    tmp_path: Path, invoke: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same job on both runtimes: the same rows, p-scores within the bound."""
    src = tmp_path / "s.keras"
    _strong(tiny_classifier(48, 1, seed=13), seed=13).save(src)
    invoke("model", "import", str(src), "--name", "s")
    images = tmp_path / "images"
    write_labelled_set(images, 5, 5, size=(80, 64), seed=14)
    scores = {}
    for runtime in ("keras", "openvino"):
        monkeypatch.setenv("AISCAN_RUNTIME", runtime)
        get_settings.cache_clear()
        job = json.loads(invoke("scan", str(images), "--json"))["job_id"]
        rows = [json.loads(line) for line in invoke("report", str(job), "--format", "jsonl").splitlines()]
        scores[runtime] = {r["image_uri"]: r["p_real"] for r in rows}
    assert scores["keras"].keys() == scores["openvino"].keys() and len(scores["keras"]) == 10
    for uri, p in scores["keras"].items():
        assert abs(p - scores["openvino"][uri]) <= AGREEMENT
    assert np.std(list(scores["keras"].values())) > 1e-3
    # The OpenVINO scan converted the registered artifact once, into its own directory.
    path = Path(json.loads(invoke("model", "show", "s", "--json"))["path"])
    assert (path / CACHE_DIR).is_dir() and (path / META_FILE).is_file()


def test_telemetry_choice_of_the_user_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    consent = tmp_path / "intel" / "openvino_telemetry"
    decline_telemetry()
    assert consent.read_text() == "0"
    consent.write_text("1")  # `opt_in_out --opt_in`
    decline_telemetry()
    assert consent.read_text() == "1"


def test_a_cached_model_loads_without_tensorflow(tmp_path: Path) -> None:
    """With the IR cached, an OpenVINO process never imports Keras or TensorFlow (time and memory)."""
    art = _tiny_artifact(tmp_path)
    ir_files(art)
    code = (
        "import sys, numpy as np\n"
        "from aiscan.model.classifier import load_classifier\n"
        f"c = load_classifier({str(art)!r}, batch_size=4, runtime='openvino')\n"
        "print(c.runtime, c.predict(np.zeros((2, 32, 32, 3), np.uint8)).shape)\n"
        "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["openvino (2,)", "[]"]
