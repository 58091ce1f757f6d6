"""Model artifacts: a directory holding ``model.keras`` and ``model.json`` (metadata, sha256)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras

from aiscan.model.errors import ModelError
from aiscan.model.layers import CHANNEL_ORDERS, SCALES, Preprocess, RealProbability

MODEL_FILE = "model.keras"
META_FILE = "model.json"
FORMAT = "aiscan-model/1"
_CUSTOM_OBJECTS = {"aiscan>Preprocess": Preprocess, "aiscan>RealProbability": RealProbability}


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Thresholds:
    """Decision threshold and the uncertain band [uncertain_low, uncertain_high] around it."""

    decision: float = 0.5
    uncertain_low: float = 0.4
    uncertain_high: float = 0.6

    def __post_init__(self) -> None:
        values = (self.uncertain_low, self.decision, self.uncertain_high)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise ModelError(f"thresholds must be finite numbers: {values}")
        if not 0.0 <= self.uncertain_low <= self.decision <= self.uncertain_high <= 1.0:
            raise ModelError(
                "thresholds must satisfy 0 <= uncertain_low <= decision <= uncertain_high <= 1, got "
                f"low={self.uncertain_low} decision={self.decision} high={self.uncertain_high}"
            )

    def label(self, p_real: float) -> str:
        """Return "fake" below uncertain_low, "real" above uncertain_high, "uncertain" in between."""
        if not math.isfinite(p_real):
            raise ModelError(f"p_real is not a number: {p_real}")
        if p_real < self.uncertain_low:
            return "fake"
        if p_real > self.uncertain_high:
            return "real"
        return "uncertain"

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thresholds:
        known = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in data.items() if k in known})


@dataclass
class ArtifactMeta:
    """What a model expects and means. Inputs are always uint8 RGB (s, s, 3) and the output is
    p_real (N,): ``channel_order`` and ``scale`` record the preprocessing baked into the model,
    ``output`` the original file's output convention before it was wrapped."""

    name: str
    input_size: int
    channel_order: str = "rgb"
    scale: str = "symmetric"
    output: dict[str, Any] = field(default_factory=lambda: {"kind": "sigmoid", "means": "real"})
    thresholds: Thresholds = field(default_factory=Thresholds)
    metrics: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    created_at: str = field(default_factory=_utc_now)
    keras_version: str = keras.__version__
    sha256: str = ""
    # Keys written by newer versions (e.g. training parameters), kept so a rewrite loses nothing.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise ModelError(f"unknown channel order {self.channel_order!r}")
        if self.scale not in SCALES:
            raise ModelError(f"unknown scale {self.scale!r}")
        if int(self.input_size) < 1:
            raise ModelError(f"input size must be positive, not {self.input_size}")
        self.input_size = int(self.input_size)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": FORMAT, **self.extra}
        for f in fields(self):
            if f.name != "extra":
                data[f.name] = getattr(self, f.name)
        data["thresholds"] = self.thresholds.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactMeta:
        if not isinstance(data, dict):
            raise ModelError("model metadata must be a JSON object")
        missing = [k for k in ("name", "input_size") if k not in data]
        if missing:
            raise ModelError(f"model metadata lacks {', '.join(missing)}")
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k not in ("format", "extra")}
        thresholds = kwargs.get("thresholds")
        try:
            kwargs["thresholds"] = Thresholds.from_dict(thresholds) if thresholds else Thresholds()
            return cls(**kwargs, extra=extra)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"invalid model metadata: {exc}") from exc


@dataclass
class Artifact:
    """A saved model directory and its metadata."""

    directory: Path
    meta: ArtifactMeta

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL_FILE

    @property
    def meta_path(self) -> Path:
        return self.directory / META_FILE

    def load_model(self) -> keras.Model:
        """Load model.keras after checking its sha256 against the metadata."""
        if not self.model_path.is_file():
            raise ModelError(f"model file missing: {self.model_path}")
        actual = file_sha256(self.model_path)
        if actual != self.meta.sha256:
            raise ModelError(
                f"model file changed since it was saved: {self.model_path} has sha256 {actual}, "
                f"{self.meta_path.name} records {self.meta.sha256 or 'none'}"
            )
        try:
            return keras.saving.load_model(self.model_path, custom_objects=_CUSTOM_OBJECTS, compile=False)
        except Exception as exc:  # Keras raises many types for corrupt or foreign files
            raise ModelError(f"cannot load {self.model_path}: {exc}") from exc


def save_artifact(model: keras.Model, directory: Path, meta: ArtifactMeta) -> Artifact:
    """Write model.keras and model.json (sha256 and keras_version filled in) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / MODEL_FILE
    meta_path = directory / META_FILE
    # Keras insists on a .keras suffix, so the temporary name keeps it.
    tmp_model = directory / f".{MODEL_FILE}.{os.getpid()}.tmp.keras"
    tmp_meta = directory / f".{META_FILE}.{os.getpid()}.tmp"
    try:
        model.save(tmp_model)
        meta = replace(meta, sha256=file_sha256(tmp_model), keras_version=keras.__version__)
        tmp_meta.write_text(json.dumps(meta.to_dict(), indent=2, sort_keys=True) + "\n")
        # model first: a crash in between leaves a sha256 mismatch, which load refuses loudly.
        os.replace(tmp_model, model_path)
        os.replace(tmp_meta, meta_path)
    finally:
        tmp_model.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
    return Artifact(directory=directory, meta=meta)


def load_artifact(directory: Path) -> Artifact:
    """Read an artifact's metadata; the model itself loads lazily via ``Artifact.load_model``."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise ModelError(f"no model artifact in {directory} ({META_FILE} missing)")
    try:
        data = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {meta_path}: {exc}") from exc
    return Artifact(directory=directory, meta=ArtifactMeta.from_dict(data))


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
) -> Artifact:
    """Wrap an existing .keras/.h5 classifier as uint8 RGB -> its preprocessing -> it -> p_real.

    channel_order and scale describe what the ORIGINAL model expects; one sigmoid unit means
    ``sigmoid_means`` ("real" or "fake"); a two-unit output needs ``real_index``.
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
        source=f"import:{src.resolve()} sha256={file_sha256(src)}",
    )
    return save_artifact(wrapped, Path(directory), meta)
