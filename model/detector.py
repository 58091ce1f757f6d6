"""The detector: frozen InceptionV3 + a small dense head, as in the original InceptionV3 app."""

from __future__ import annotations

from pathlib import Path

from aiscan.model.errors import ModelError
from aiscan.model.framework import keras
from aiscan.model.layers import Preprocess, RealProbability

# keras.applications.InceptionV3 refuses smaller inputs.
MIN_INPUT_SIZE = 75


def build_detector(
    input_size: int = 299,
    base_weights: str | None = "imagenet",
    *,
    head_units: int = 256,
    dropout: float = 0.3,
    scale: str = "symmetric",
    train_base: bool = False,
) -> keras.Model:
    """uint8 RGB (s, s, 3) -> Preprocess -> InceptionV3 -> GAP -> Dense -> Dropout -> p_real (N,).

    base_weights: "imagenet" (Keras downloads them once), a local weights file, or None (random).
    """
    if int(input_size) < MIN_INPUT_SIZE:
        raise ModelError(f"input size {input_size} is too small; InceptionV3 needs >= {MIN_INPUT_SIZE}")
    if head_units < 1:
        raise ModelError(f"head_units must be >= 1, not {head_units}")
    if not 0.0 <= dropout < 1.0:
        raise ModelError(f"dropout must be in [0, 1), not {dropout}")
    if base_weights not in (None, "imagenet"):
        weights_path = Path(base_weights).expanduser()
        if not weights_path.is_file():
            raise ModelError(f"base weights file not found: {weights_path}")
        base_weights = str(weights_path)

    s = int(input_size)
    inputs = keras.Input(shape=(s, s, 3), dtype="uint8", name="pixels")
    x = Preprocess(scale=scale, channel_order="rgb", name="preprocess")(inputs)
    try:
        base = keras.applications.InceptionV3(include_top=False, weights=base_weights, input_shape=(s, s, 3))
    except (ValueError, OSError) as exc:
        raise ModelError(f"cannot build InceptionV3 with weights {base_weights!r}: {exc}") from exc
    base.trainable = train_base
    # training=False keeps BatchNorm in inference mode while the base is frozen, so fine-tuning
    # the head does not drift the base's statistics.
    x = base(x, training=None if train_base else False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(head_units, activation="relu", name="head")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    # float32 whatever the global policy: under mixed precision a float16 sigmoid saturates early.
    x = keras.layers.Dense(1, activation="sigmoid", name="score", dtype="float32")(x)
    outputs = RealProbability("sigmoid_real", name="p_real", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="aiscan_detector")
