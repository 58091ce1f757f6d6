"""model/: detector, layers, artifacts, imports of the original apps' conventions, batch runner."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from aiscan.model.artifact import load_artifact, save_artifact
from aiscan.model.detector import MIN_INPUT_SIZE, build_detector
from aiscan.model.errors import ModelError
from aiscan.model.importer import import_keras_file
from aiscan.model.layers import Preprocess, RealProbability
from aiscan.model.metadata import ArtifactMeta, file_sha256
from aiscan.model.runner import Runner
from aiscan.model.runtimes import load_runner
from aiscan.model.thresholds import Thresholds

# Keras' TensorFlow backend converts tensors with an old-style np.array call under NumPy 2.


def _pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    # Per-image channel gains: global pooling would average plain noise to the same output
    # for every image, and unequal channels make a swapped channel order visible.
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (n, size, size, 3))
    gain = rng.uniform(0.2, 1.0, (n, 1, 1, 3))
    return (noise * gain).astype(np.uint8)


def _strong(model: keras.Model, seed: int) -> keras.Model:
    """Scale up random weights so outputs spread over (0, 1) instead of hugging 0.5."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.normal(0.0, 1.5, w.shape).astype("float32") for w in layer.weights])
    return model


def _tiny_cnn(size: int, units: int, seed: int, *, sequential: bool = False) -> keras.Model:
    keras.utils.set_random_seed(seed)
    layers = [
        keras.layers.Conv2D(4, 3, strides=max(1, size // 32), activation="tanh"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(units, activation="sigmoid"),
    ]
    if sequential:
        model = keras.Sequential([keras.Input((size, size, 3)), *layers])
    else:
        inputs = keras.Input((size, size, 3))
        x = inputs
        for layer in layers:
            x = layer(x)
        model = keras.Model(inputs, x)
    return _strong(model, seed)


@pytest.fixture(scope="module")
def detector() -> keras.Model:
    return build_detector(MIN_INPUT_SIZE, base_weights=None)


# --- layers and detector -------------------------------------------------------------------


def test_layers_config_round_trip() -> None:
    for layer in (Preprocess("unit", "bgr"), RealProbability("index", real_index=0)):
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(clone) is type(layer)
        assert clone.get_config() == layer.get_config()
    with pytest.raises(ModelError):
        Preprocess("bogus")
    with pytest.raises(ModelError):
        RealProbability("softmax")


def test_preprocess_scales_and_channel_order() -> None:
    px = np.array([[[[0, 127, 255]]]], np.uint8)
    np.testing.assert_allclose(np.asarray(Preprocess("raw", "rgb")(px)), [[[[0, 127, 255]]]])
    np.testing.assert_allclose(np.asarray(Preprocess("unit", "bgr")(px)), [[[[1, 127 / 255, 0]]]])
    np.testing.assert_allclose(
        np.asarray(Preprocess("symmetric", "rgb")(px)), [[[[-1, 127 / 127.5 - 1, 1]]]], atol=1e-6
    )


def test_real_probability_modes() -> None:
    one = np.array([[0.2], [0.9]], np.float32)
    two = np.array([[0.7, 1.2], [0.1, 0.3]], np.float32)
    np.testing.assert_allclose(np.asarray(RealProbability("sigmoid_real")(one)), [0.2, 0.9])
    np.testing.assert_allclose(np.asarray(RealProbability("sigmoid_fake")(one)), [0.8, 0.1], atol=1e-6)
    np.testing.assert_allclose(np.asarray(RealProbability("index", 1)(two)), [1.0, 0.3])
    np.testing.assert_allclose(np.asarray(RealProbability("index", 0)(two)), [0.7, 0.1])


def test_detector_gives_probabilities(detector: keras.Model) -> None:
    p = np.asarray(detector.predict_on_batch(_pixels(3, MIN_INPUT_SIZE)))
    assert p.reshape(-1).shape == (3,)
    assert np.all((p >= 0) & (p <= 1))
    assert detector.output.name.startswith("p_real") or detector.layers[-1].name == "p_real"
    assert not any(w.trainable for w in detector.get_layer("inception_v3").weights)


def test_detector_rejects_small_input_and_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="74"):
        build_detector(MIN_INPUT_SIZE - 1, base_weights=None)
    missing = tmp_path / "no_such_weights.h5"
    with pytest.raises(ModelError, match=r"no_such_weights\.h5"):
        build_detector(MIN_INPUT_SIZE, base_weights=str(missing))


def test_detector_loads_local_base_weights(tmp_path: Path) -> None:
    base = keras.applications.InceptionV3(
        include_top=False, weights=None, input_shape=(MIN_INPUT_SIZE, MIN_INPUT_SIZE, 3)
    )
    weights = tmp_path / "base.weights.h5"
    base.save_weights(weights)
    model = build_detector(MIN_INPUT_SIZE, base_weights=str(weights))
    # Layer names get fresh suffixes per build, so weights are matched by position.
    loaded = model.get_layer("inception_v3").weights
    assert len(loaded) == len(base.weights)
    for i in (0, len(loaded) // 2, -1):
        np.testing.assert_array_equal(np.asarray(loaded[i]), np.asarray(base.weights[i]))


# --- artifacts -------------------------------------------------------------------------------


def test_artifact_round_trip_and_tamper(detector: keras.Model, tmp_path: Path) -> None:
    meta = ArtifactMeta(name="det", input_size=MIN_INPUT_SIZE, metrics={"auc": 0.5}, source="test")
    saved = save_artifact(detector, tmp_path / "det", meta)
    assert saved.meta.sha256 == file_sha256(saved.model_path)
    assert sorted(p.name for p in saved.directory.iterdir()) == ["model.json", "model.keras"]

    loaded = load_artifact(tmp_path / "det")
    assert loaded.meta == saved.meta
    px = _pixels(4, MIN_INPUT_SIZE, seed=1)
    np.testing.assert_allclose(
        Runner.from_artifact(loaded, batch_size=4).predict(px),
        np.asarray(detector.predict_on_batch(px)).reshape(-1),
        atol=1e-6,
    )

    with open(loaded.model_path, "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ModelError, match="changed since it was saved"):
        loaded.load_model()


def test_meta_tolerates_unknown_keys_and_rejects_broken_json(tmp_path: Path) -> None:
    data = ArtifactMeta(name="m", input_size=36).to_dict() | {"training": {"epochs": 3}}
    meta = ArtifactMeta.from_dict(json.loads(json.dumps(data)))
    assert meta.extra == {"training": {"epochs": 3}}
    assert meta.to_dict()["training"] == {"epochs": 3}
    with pytest.raises(ModelError, match="lacks"):
        ArtifactMeta.from_dict({"name": "m"})
    with pytest.raises(ModelError, match=r"model\.json missing"):
        load_artifact(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        load_artifact(tmp_path)


def test_thresholds_label_edges() -> None:
    t = Thresholds()
    assert [t.label(p) for p in (0.0, 0.399, 0.4, 0.5, 0.6, 0.601, 1.0)] == [
        "fake",
        "fake",
        "uncertain",
        "uncertain",
        "uncertain",
        "real",
        "real",
    ]
    assert Thresholds.from_dict(t.to_dict() | {"future": 1}) == t
    tight = Thresholds(0.5, 0.5, 0.5)
    assert (tight.label(0.5), tight.label(0.49), tight.label(0.51)) == ("uncertain", "fake", "real")
    for bad in ((0.5, 0.6, 0.4), (0.5, 0.55, 0.6), (0.5, -0.1, 0.6), (0.5, 0.4, 1.1)):
        with pytest.raises(ModelError):
            Thresholds(*bad)
    with pytest.raises(ModelError):
        t.label(float("nan"))


# --- imports: wrapped artifact vs direct Keras predictions on the same pixels ---------------


def test_import_inceptionv3_app_like_h5(tmp_path: Path) -> None:
    """299x299 RGB scaled to 0..1, one sigmoid unit = probability real, legacy .h5."""
    orig = _tiny_cnn(299, 1, seed=1)
    src = tmp_path / "inception_app.h5"
    orig.save(src)
    art = import_keras_file(
        src,
        tmp_path / "imported",
        name="iv3app",
        channel_order="rgb",
        scale="unit",
        sigmoid_means="real",
    )
    assert art.meta.input_size == 299
    assert art.meta.output["kind"] == "sigmoid" and art.meta.output["means"] == "real"
    assert file_sha256(src) in art.meta.source

    px = _pixels(5, 299, seed=2)
    expected = orig.predict(px / 255.0, verbose=0)[:, 0]
    assert expected.std() > 0.01  # the comparison below must be able to fail
    got = Runner.from_artifact(load_artifact(tmp_path / "imported"), batch_size=4).predict(px)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_import_cifake_like_h5(tmp_path: Path) -> None:
    """36x36 BGR scaled to 0..1, two sigmoid units, index 1 = REAL, legacy .h5 Sequential."""
    orig = _tiny_cnn(36, 2, seed=3, sequential=True)
    src = tmp_path / "cifake.h5"
    orig.save(src)
    art = import_keras_file(
        src, tmp_path / "imported", name="cifake", channel_order="bgr", scale="unit", real_index=1
    )
    assert art.meta.output["kind"] == "two_unit" and art.meta.output["real_index"] == 1
    assert (art.meta.channel_order, art.meta.scale, art.meta.input_size) == ("bgr", "unit", 36)

    px = _pixels(9, 36, seed=4)
    expected = orig.predict(px[..., ::-1] / 255.0, verbose=0)[:, 1]
    wrong_order = orig.predict(px / 255.0, verbose=0)[:, 1]
    assert np.abs(expected - wrong_order).max() > 1e-3  # the test can tell BGR from RGB
    got = Runner.from_artifact(art, batch_size=4).predict(px)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_import_keras_symmetric_sigmoid_fake(tmp_path: Path) -> None:
    orig = _tiny_cnn(48, 1, seed=5)
    src = tmp_path / "fake_score.keras"
    orig.save(src)
    art = import_keras_file(
        src, tmp_path / "imported", name="fakescore", scale="symmetric", sigmoid_means="fake"
    )
    px = _pixels(6, 48, seed=6)
    expected = 1.0 - orig.predict(px / 127.5 - 1.0, verbose=0)[:, 0]
    got = Runner.from_artifact(art, batch_size=4).predict(px)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_import_rejects_bad_models(tmp_path: Path) -> None:
    two = tmp_path / "two.h5"
    _tiny_cnn(16, 2, seed=7).save(two)
    with pytest.raises(ModelError, match="--real-index"):
        import_keras_file(two, tmp_path / "a", name="two")

    three = tmp_path / "three.keras"
    _tiny_cnn(16, 3, seed=8).save(three)
    with pytest.raises(ModelError, match="3 output units"):
        import_keras_file(three, tmp_path / "b", name="three", real_index=1)

    text = tmp_path / "notes.h5"
    text.write_text("this is not a model\n")
    with pytest.raises(ModelError, match="not a loadable Keras model"):
        import_keras_file(text, tmp_path / "c", name="text")

    with pytest.raises(ModelError, match="not found"):
        import_keras_file(tmp_path / "missing.h5", tmp_path / "d", name="missing")

    logits = tmp_path / "logits.keras"
    inputs = keras.Input((16, 16, 3))
    keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs))).save(logits)
    with pytest.raises(ModelError, match="logits"):
        import_keras_file(logits, tmp_path / "f", name="logits")

    inputs = keras.Input((16, 24, 3))
    oblong = tmp_path / "oblong.keras"
    keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs))).save(oblong)
    with pytest.raises(ModelError, match="square"):
        import_keras_file(oblong, tmp_path / "e", name="oblong")
    assert not any((tmp_path / d).exists() for d in "abcdef")


# --- runner ------------------------------------------------------------------------------------


def test_runner_pads_partial_batches(tmp_path: Path) -> None:
    src = tmp_path / "m.keras"
    _tiny_cnn(32, 1, seed=9).save(src)
    art = import_keras_file(src, tmp_path / "art", name="m")
    runner = Runner.from_artifact(art, batch_size=4)
    runner.warm_up()
    px = _pixels(10, 32, seed=10)
    batched = runner.predict(px)
    single = np.concatenate([runner.predict(px[i : i + 1]) for i in range(len(px))])
    assert batched.dtype == np.float32 and batched.shape == (10,)
    np.testing.assert_allclose(batched, single, atol=1e-6)
    assert runner.predict(px[:0]).shape == (0,)
    with pytest.raises(ValueError, match="uint8"):
        runner.predict(px.astype(np.float32))


def test_load_runner_caches(tmp_path: Path) -> None:
    src = tmp_path / "m.keras"
    _tiny_cnn(32, 1, seed=11).save(src)
    import_keras_file(src, tmp_path / "art", name="m")
    first = load_runner(tmp_path / "art", batch_size=4)
    assert load_runner(tmp_path / "art" / ".." / "art", batch_size=4) is first
    assert load_runner(tmp_path / "art", batch_size=8) is not first
