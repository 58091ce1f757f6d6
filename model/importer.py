"""Import a foreign Keras classifier (.keras or legacy .h5) as an aiscan artifact, with its conventions."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from aiscan.model.artifact import Artifact, save_artifact
from aiscan.model.errors import ModelError
from aiscan.model.framework import keras
from aiscan.model.layers import Preprocess, RealProbability
from aiscan.model.metadata import CHANNEL_ORDERS, SCALES, ArtifactMeta, PreprocessSpec, file_sha256


def _load_foreign_model(src: Path) -> keras.Model:
    if not src.exists():
        raise ModelError(f"model file not found: {src}")
    if src.is_dir():
        raise ModelError(
            f"{src} is a directory; only .keras and legacy .h5 model files can be imported "
            "(re-save a SavedModel with Keras as .keras)"
        )
    suffix = src.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelError(f"{src}: expected a .keras or .h5 model file, not {suffix or 'no suffix'}")
    if suffix == ".keras" and not zipfile.is_zipfile(src):
        raise ModelError(f"{src} is not a Keras model file (not a .keras zip archive)")
    try:
        model = keras.saving.load_model(src, compile=False)
    except Exception as exc:  # h5py, zipfile and Keras raise many unrelated types
        raise ModelError(
            f"{src} is not a loadable Keras model file ({type(exc).__name__}: {exc}); "
            "a weights-only file cannot be imported, it needs the full model"
        ) from exc
    if not isinstance(model, keras.Model):
        raise ModelError(f"{src} does not hold a Keras model")
    return model


def _input_size(model: keras.Model, src: Path) -> int:
    if len(model.inputs) != 1:
        raise ModelError(f"{src}: the model has {len(model.inputs)} inputs; expected one image input")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[1] != shape[2]:
        raise ModelError(f"{src}: input shape {shape} is not a square (batch, s, s, 3) image")
    return int(shape[1])


def _output_units(model: keras.Model, src: Path) -> int:
    if len(model.outputs) != 1:
        raise ModelError(f"{src}: the model has {len(model.outputs)} outputs; expected one")
    shape = tuple(model.outputs[0].shape)
    if len(shape) == 1:
        return 1
    if len(shape) != 2 or shape[1] is None:
        raise ModelError(f"{src}: output shape {shape} is not (batch, units)")
    return int(shape[1])


def _output_activation(model: keras.Model) -> str | None:
    activation = getattr(model.layers[-1], "activation", None) if model.layers else None
    return getattr(activation, "__name__", None)


def import_keras_file(
    src: Path,
    directory: Path,
    *,
    name: str,
    channel_order: str = "rgb",
    scale: str = "unit",
    real_index: int | None = None,
    sigmoid_means: str = "real",
    preprocess: PreprocessSpec | None = None,
) -> Artifact:
    """Wrap an existing .keras/.h5 classifier as uint8 RGB -> its preprocessing -> it -> p_real.

    channel_order and scale describe what the ORIGINAL model expects; one sigmoid unit means
    ``sigmoid_means`` ("real" or "fake"); a two-unit output needs ``real_index``. ``preprocess``
    says how it looks at images (default: resize, the original apps' convention).
    """
    src = Path(src).expanduser()
    if channel_order not in CHANNEL_ORDERS:
        raise ModelError(f"unknown channel order {channel_order!r}; expected rgb or bgr")
    if scale not in SCALES:
        raise ModelError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    if sigmoid_means not in ("real", "fake"):
        raise ModelError(f"sigmoid_means must be 'real' or 'fake', not {sigmoid_means!r}")

    original = _load_foreign_model(src)
    size = _input_size(original, src)
    units = _output_units(original, src)
    activation = _output_activation(original)
    if activation == "linear":
        # Logits would be stored as p-scores outside [0, 1]; refuse rather than guess a squash.
        raise ModelError(
            f"{src} ends in a linear layer (logits); only models whose output is a probability "
            "(sigmoid or softmax) can be imported"
        )
    if units == 1:
        if real_index is not None:
            raise ModelError(
                f"{src} has a single output unit; --real-index applies to two-unit models "
                "(use --sigmoid-means real|fake)"
            )
        mode = "sigmoid_real" if sigmoid_means == "real" else "sigmoid_fake"
        output: dict[str, Any] = {"kind": "sigmoid", "means": sigmoid_means}
        head = RealProbability(mode, name="p_real")
    elif units == 2:
        if real_index is None:
            raise ModelError(
                f"{src} has two output units; pass --real-index 0 or 1 to say which one means "
                "'real' (the CIFAKE app used 1)"
            )
        if real_index not in (0, 1):
            raise ModelError(f"real_index must be 0 or 1 for a two-unit output, not {real_index}")
        output = {"kind": "two_unit", "real_index": int(real_index)}
        head = RealProbability("index", real_index=int(real_index), name="p_real")
    else:
        raise ModelError(
            f"{src} has {units} output units; only binary classifiers (1 sigmoid unit or "
            "2 units) can be imported"
        )
    if activation:
        output["activation"] = activation

    inputs = keras.Input(shape=(size, size, 3), dtype="uint8", name="pixels")
    x = Preprocess(scale=scale, channel_order=channel_order, name="preprocess")(inputs)
    x = original(x)
    wrapped = keras.Model(inputs, head(x), name=f"aiscan_{original.name}")

    meta = ArtifactMeta(
        name=name,
        input_size=size,
        channel_order=channel_order,
        scale=scale,
        output=output,
        preprocess=preprocess or PreprocessSpec(),
        source=f"import:{src.resolve()} sha256={file_sha256(src)}",
    )
    return save_artifact(wrapped, Path(directory), meta)
