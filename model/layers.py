"""Serializable Keras layers that put preprocessing and output conventions inside the saved model."""

from __future__ import annotations

from typing import Any

from aiscan.model.errors import ModelError
from aiscan.model.framework import keras
from aiscan.model.metadata import CHANNEL_ORDERS, SCALES

ops = keras.ops

PROBABILITY_MODES = ("sigmoid_real", "sigmoid_fake", "index")


@keras.saving.register_keras_serializable(package="aiscan")
class Preprocess(keras.layers.Layer):
    """RGB pixels of any numeric dtype -> float32 in the model's channel order and value range.

    scale: "symmetric" -> [-1, 1] (InceptionV3's own), "unit" -> [0, 1], "raw" -> 0..255.
    """

    def __init__(self, scale: str = "symmetric", channel_order: str = "rgb", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if scale not in SCALES:
            raise ModelError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
        if channel_order not in CHANNEL_ORDERS:
            raise ModelError(
                f"unknown channel order {channel_order!r}; expected one of {', '.join(CHANNEL_ORDERS)}"
            )
        self.scale = scale
        self.channel_order = channel_order

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        if self.channel_order == "bgr":
            x = ops.flip(x, axis=-1)
        if self.scale == "symmetric":
            x = x / 127.5 - 1.0
        elif self.scale == "unit":
            x = x / 255.0
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale, "channel_order": self.channel_order}


@keras.saving.register_keras_serializable(package="aiscan")
class RealProbability(keras.layers.Layer):
    """A model's raw output -> p_real of shape (N,).

    "sigmoid_real": one sigmoid unit = p_real; "sigmoid_fake": one unit = p_fake, so 1 - p;
    "index": column ``real_index`` of a multi-unit output, clipped to [0, 1].
    """

    def __init__(self, mode: str = "sigmoid_real", real_index: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in PROBABILITY_MODES:
            raise ModelError(f"unknown output mode {mode!r}; expected one of {', '.join(PROBABILITY_MODES)}")
        if int(real_index) < 0:
            raise ModelError(f"real_index must be >= 0, not {real_index}")
        self.mode = mode
        self.real_index = int(real_index)

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        if self.mode == "index":
            # The CIFAKE app used sigmoid (not softmax) on two units: the columns need not sum
            # to 1, so the REAL column is taken as-is rather than renormalised.
            return ops.clip(x[:, self.real_index], 0.0, 1.0)
        if len(x.shape) == 2:
            x = x[:, 0]
        return 1.0 - x if self.mode == "sigmoid_fake" else x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0],)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode, "real_index": self.real_index}
