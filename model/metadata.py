"""What a model artifact directory holds and what its ``model.json`` says; no Keras needed to read it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from aiscan.model.errors import ModelError
from aiscan.model.thresholds import Thresholds

MODEL_FILE = "model.keras"
META_FILE = "model.json"
# An artifact holds a Keras model (model.keras), or, once optimized for CPUs, an OpenVINO IR
# (model.xml with its weights in model.bin) that only the OpenVINO runtime can run.
MODEL_FORMATS = ("keras", "openvino")
IR_FILE = "model.xml"
IR_WEIGHTS = "model.bin"
# What may execute a model (model.runtimes): auto picks OpenVINO on a machine without a GPU.
RUNTIMES = ("auto", "keras", "openvino")
FORMAT = "aiscan-model/1"
# Pixel conventions a model can have baked in (see model/layers.py's Preprocess).
SCALES = ("symmetric", "unit", "raw")
CHANNEL_ORDERS = ("rgb", "bgr")
# How a model looks at an image (model/views.py): squashed whole, one native-resolution crop, native
# tiles, or tiles plus a squashed view. Older artifacts, which do not say, were all squashed.
PREPROCESS_MODES = ("resize", "center-crop", "tiles", "tiles+global")
# How the scores of an image's views become its p_real (model/views.py's aggregate).
AGGREGATES = ("fake-quartile", "mean", "min")


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_sha256(directory: Path, model_format: str = "keras") -> str:
    """Hex sha256 of an artifact's model: model.keras, or an IR's model.xml followed by model.bin."""
    directory = Path(directory)
    if model_format == "keras":
        return file_sha256(directory / MODEL_FILE)
    digest = hashlib.sha256()
    for name in (IR_FILE, IR_WEIGHTS):
        with open(directory / name, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def verify_model(directory: Path, meta: ArtifactMeta) -> None:
    """Refuse an artifact whose model files are missing or no longer match the sha256 in its metadata."""
    directory = Path(directory)
    for name in meta.model_files:
        if not (directory / name).is_file():
            raise ModelError(f"model file missing: {directory / name}")
    actual = model_sha256(directory, meta.model_format)
    if actual != meta.sha256:
        files = " + ".join(meta.model_files)
        raise ModelError(
            f"model file changed since it was saved: {files} in {directory} has sha256 {actual}, "
            f"{META_FILE} records {meta.sha256 or 'none'}"
        )


def _keras_version() -> str:
    """The installed Keras version, read from its distribution so that Keras is not imported."""
    return version("keras")


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class PreprocessSpec:
    """How a model looks at an image: the view ``mode``, at most ``max_tiles`` tiles, and the
    ``aggregate`` rule that turns the views' scores into the image's p_real."""

    mode: str = "resize"
    max_tiles: int = 16
    aggregate: str = "fake-quartile"

    def __post_init__(self) -> None:
        if self.mode not in PREPROCESS_MODES:
            raise ModelError(
                f"unknown preprocess mode {self.mode!r}; expected one of {', '.join(PREPROCESS_MODES)}"
            )
        if self.aggregate not in AGGREGATES:
            raise ModelError(
                f"unknown aggregate rule {self.aggregate!r}; expected one of {', '.join(AGGREGATES)}"
            )
        if not isinstance(self.max_tiles, int) or self.max_tiles < 1:
            raise ModelError(f"max_tiles must be a positive integer, not {self.max_tiles!r}")

    @property
    def tiled(self) -> bool:
        return self.mode.startswith("tiles")

    @property
    def native(self) -> bool:
        """Whether the model sees native-resolution pixels (every mode but resize)."""
        return self.mode != "resize"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


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
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    metrics: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    created_at: str = field(default_factory=_utc_now)
    keras_version: str = field(default_factory=_keras_version)
    sha256: str = ""
    model_format: str = "keras"
    # How an optimized version was made from its source version: method, versions, AUC before and after.
    optimization: dict[str, Any] = field(default_factory=dict)
    # Keys written by newer versions (e.g. training parameters), kept so a rewrite loses nothing.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise ModelError(f"unknown channel order {self.channel_order!r}")
        if self.scale not in SCALES:
            raise ModelError(f"unknown scale {self.scale!r}")
        if self.model_format not in MODEL_FORMATS:
            raise ModelError(
                f"unknown model format {self.model_format!r}; this aiscan reads {', '.join(MODEL_FORMATS)}"
            )
        if int(self.input_size) < 1:
            raise ModelError(f"input size must be positive, not {self.input_size}")
        self.input_size = int(self.input_size)

    @property
    def model_files(self) -> tuple[str, ...]:
        """The files of the artifact's directory that hold the model."""
        return (MODEL_FILE,) if self.model_format == "keras" else (IR_FILE, IR_WEIGHTS)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": FORMAT, **self.extra}
        for f in fields(self):
            if f.name != "extra":
                data[f.name] = getattr(self, f.name)
        data["thresholds"] = self.thresholds.to_dict()
        data["preprocess"] = self.preprocess.to_dict()
        return data

    def to_json(self) -> str:
        """The text of model.json."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

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
        preprocess = kwargs.get("preprocess")
        try:
            kwargs["thresholds"] = Thresholds.from_dict(thresholds) if thresholds else Thresholds()
            kwargs["preprocess"] = PreprocessSpec.from_dict(preprocess) if preprocess else PreprocessSpec()
            return cls(**kwargs, extra=extra)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"invalid model metadata: {exc}") from exc


def read_meta(directory: Path) -> ArtifactMeta:
    """The metadata of the artifact in ``directory``, from its ``model.json``."""
    meta_path = Path(directory) / META_FILE
    if not meta_path.is_file():
        raise ModelError(f"no model artifact in {directory} ({META_FILE} missing)")
    try:
        data = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {meta_path}: {exc}") from exc
    return ArtifactMeta.from_dict(data)
