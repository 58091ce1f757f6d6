"""Post-training int8 quantization of an artifact with NNCF, checked by ROC AUC before and after.

NNCF quantizes the source's float32 OpenVINO IR (model.openvino_ir) on the views the artifact's own
preprocess cuts from calibration images. A labelled folder keeps a stratified part back on which both
models are scored by OpenVINO, so the AUC figures differ by quantization alone.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aiscan.model.classifier import ImageClassifier, load_classifier
from aiscan.model.errors import DecodeError, ModelError
from aiscan.model.metadata import IR_FILE, META_FILE, ArtifactMeta, model_sha256, read_meta
from aiscan.model.openvino_ir import (
    IRFiles,
    decline_telemetry,
    ir_files,
    openvino_installed,
    openvino_version,
)
from aiscan.model.openvino_runner import OpenVINORunner
from aiscan.training.dataset import (
    CLASS_DIRS,
    DatasetError,
    LabelledFiles,
    find_labelled,
    images_under,
    stratified_split,
)
from aiscan.training.evaluate import score_files
from aiscan.training.metrics import binary_metrics, roc_auc

INSTALL_HINT = "pip install 'aiscan[optimize]'"
METHOD = "NNCF post-training quantization"
DEFAULT_MAX_AUC_DROP = 0.01
# Share of a labelled folder held out to measure ROC AUC; seeded, so a rerun holds out the same images.
HELD_OUT_FRACTION = 0.3
SPLIT_SEED = 0
# NNCF's own default subset size: enough views for stable activation ranges, quick on a CPU.
CALIBRATION_VIEWS = 300


class OptimizeError(ModelError):
    """A model that cannot be optimized as asked; nothing was registered."""


class AUCDropTooLarge(OptimizeError):
    """The int8 model ranks the held-out images worse than the bound allows."""

    def __init__(self, before: float, after: float, bound: float, held_out: int) -> None:
        self.before, self.after, self.bound = before, after, bound
        self.drop = before - after
        super().__init__(
            f"int8 model refused: held-out ROC AUC fell from {before:.4f} to {after:.4f} on {held_out} "
            f"images, a drop of {self.drop:.4f} > --max-auc-drop {bound:g}; nothing was registered "
            "(a larger or more representative calibration folder may help, or a looser bound)"
        )


class Progress(Protocol):
    """Where the steps report: a phase with its number of items, then items done."""

    def phase(self, description: str, total: int) -> None: ...

    def advance(self, n: int) -> None: ...


class _Quiet:
    def phase(self, description: str, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


@dataclass(frozen=True)
class CalibrationSet:
    """A calibration folder's images: those that calibrate and, when it is labelled, those held out."""

    directory: Path
    calibrate: list[Path]
    held_out: LabelledFiles | None

    @property
    def auc_checked(self) -> bool:
        return self.held_out is not None


@dataclass(frozen=True)
class Optimized:
    """The int8 artifact written in ``directory`` (what register_artifact's build returns)."""

    directory: Path
    meta: ArtifactMeta


def require_nncf() -> None:
    """Refuse early, with the install command, when NNCF or OpenVINO cannot be imported."""
    missing = [
        name for name, found in (("nncf", find_spec("nncf")), ("openvino", openvino_installed())) if not found
    ]
    if missing:
        raise OptimizeError(
            f"int8 optimization needs {' and '.join(missing)}, not installed here: "
            f"`{INSTALL_HINT}` (make setup installs it)"
        )


def check_source(meta: ArtifactMeta, source_ref: str) -> None:
    """Only a Keras artifact is quantized: an OpenVINO one was optimized already (or is foreign)."""
    if meta.model_format != "keras":
        made_from = meta.optimization.get("source_ref")
        hint = f"the Keras version it was made from, {made_from}" if made_from else "a Keras version"
        raise OptimizeError(
            f"{source_ref} is already an OpenVINO model (made by `aiscan model optimize`); optimize {hint}"
        )


def _has_class_dirs(directory: Path) -> bool:
    return any(child.is_dir() and child.name.lower() in CLASS_DIRS for child in directory.iterdir())


def calibration_set(
    directory: Path, *, check_auc: bool = True, fraction: float = HELD_OUT_FRACTION, seed: int = SPLIT_SEED
) -> CalibrationSet:
    """Split a labelled folder into calibration and held-out parts; without ``check_auc`` all calibrate.

    A folder without REAL/FAKE sub-folders is refused unless ``check_auc`` is False: the AUC that
    decides whether the int8 model may be registered could not be measured.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"no such calibration directory: {directory}")
    if not check_auc:
        paths = images_under(directory)
        if not paths:
            raise DatasetError(f"no images under {directory} to calibrate on")
        return CalibrationSet(directory, paths, None)
    if not _has_class_dirs(directory):
        raise OptimizeError(
            f"{directory} has no REAL/ and FAKE/ folders, so the ROC AUC before and after quantization "
            "cannot be measured: give a labelled folder, or --no-auc-check to calibrate without the check"
        )
    files = find_labelled(directory)
    # stratified_split would hold out every image of a class that has one; keep both parts usable.
    counts = files.counts()
    if min(counts.values()) < 2:
        raise DatasetError(
            f"{directory} has {counts['real']} real and {counts['fake']} fake images: at least 2 of each "
            "are needed to calibrate and to hold some out"
        )
    calibrate, held_out = stratified_split(files, fraction, seed)
    return CalibrationSet(directory, calibrate.paths, held_out)


def _calibration_views(
    classifier: ImageClassifier, paths: list[Path], progress: Progress
) -> tuple[list[np.ndarray], int, int]:
    """Up to CALIBRATION_VIEWS views from as many images as possible; (views, images used, skipped).

    Images are taken in a seeded random order (the folder's order would give one class first); a few
    images with many tiles each give evenly spaced tiles rather than their first ones.
    """
    per_image = max(1, math.ceil(CALIBRATION_VIEWS / len(paths)))
    order = np.random.default_rng(SPLIT_SEED).permutation(len(paths))
    progress.phase("reading calibration images", min(len(paths), CALIBRATION_VIEWS))
    views: list[np.ndarray] = []
    used = skipped = 0
    for index in order:
        if len(views) >= CALIBRATION_VIEWS:
            break
        try:
            cut = classifier.decode(paths[index].read_bytes()).views
        except (OSError, DecodeError):
            skipped += 1
            continue
        picks = np.unique(np.linspace(0, len(cut) - 1, min(per_image, len(cut))).round().astype(int))
        views.extend(cut[picks])
        used += 1
        progress.advance(1)
    return views[:CALIBRATION_VIEWS], used, skipped


@contextlib.contextmanager
def _nncf_quiet(nncf: Any) -> Iterator[None]:
    """NNCF logs at INFO and draws its own progress bars on standard output; ours is the one shown."""
    logger = logging.getLogger("nncf")
    level = logger.level
    nncf.set_log_level(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf.set_log_level(level)


def _quantize(xml: Path, views: list[np.ndarray], progress: Progress) -> Any:
    """NNCF's post-training quantization of the IR at ``xml``, calibrated on ``views`` one at a time."""
    decline_telemetry()  # NNCF decides whether to send usage statistics when it is imported
    import nncf
    import openvino as ov

    model = ov.Core().read_model(xml)
    progress.phase("calibrating int8", len(views))

    def as_input(view: np.ndarray) -> np.ndarray:
        progress.advance(1)
        # One view per item: NNCF warns that statistics gathered over batches can be skewed.
        return view[None]

    dataset = nncf.Dataset(views, as_input)
    try:
        with _nncf_quiet(nncf):
            return nncf.quantize(model, dataset, subset_size=len(views), target_device=nncf.TargetDevice.CPU)
    except Exception as exc:  # NNCF raises many types for graphs it cannot handle
        raise OptimizeError(f"NNCF could not quantize {xml}: {type(exc).__name__}: {exc}") from exc


def _scores(
    classifier: ImageClassifier, files: LabelledFiles, description: str, progress: Progress
) -> dict[int, float]:
    progress.phase(description, len(files))
    scores, _skipped = score_files(classifier, files.paths, progress.advance)
    return scores


def _held_out_auc(
    source: ImageClassifier, int8: ImageClassifier, held_out: LabelledFiles, progress: Progress
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """ROC AUC of both models on the held-out images both could score; (before, after, p_int8, labels)."""
    before = _scores(source, held_out, "held-out images, float32", progress)
    after = _scores(int8, held_out, "held-out images, int8", progress)
    kept = sorted(set(before) & set(after))
    labels = held_out.labels[kept]
    is_real = labels == 1
    p_before = np.array([before[i] for i in kept], dtype=np.float64)
    p_after = np.array([after[i] for i in kept], dtype=np.float64)
    auc_before, auc_after = roc_auc(p_before, is_real), roc_auc(p_after, is_real)
    if auc_before is None or auc_after is None:
        raise DatasetError(
            f"the held-out images that could be decoded ({len(kept)} of {len(held_out)}) lack a class: "
            "the ROC AUC cannot be measured"
        )
    return auc_before, auc_after, p_after, labels


def quantize_int8(
    source_dir: Path,
    out_dir: Path,
    calibration: CalibrationSet,
    *,
    source_ref: str,
    expected_sha256: str | None = None,
    max_auc_drop: float = DEFAULT_MAX_AUC_DROP,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> Optimized:
    """Write the int8 version of the artifact in ``source_dir`` into ``out_dir``, its figures in model.json.

    Raises AUCDropTooLarge when the held-out ROC AUC falls by more than ``max_auc_drop``; the caller
    (register_artifact) then removes ``out_dir``.
    """
    import openvino as ov

    started = time.monotonic()
    progress = progress or _Quiet()
    require_nncf()
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    meta = read_meta(source_dir)
    check_source(meta, source_ref)
    # The float32 IR is the source's, run by OpenVINO as the int8 model will be: only quantization differs.
    source = load_classifier(
        source_dir,
        batch_size=batch_size,
        make_thumbnails=False,
        runtime="openvino",
        expected_sha256=expected_sha256,
    )
    views, used, skipped = _calibration_views(source, calibration.calibrate, progress)
    if not views:
        raise DatasetError(
            f"none of the {len(calibration.calibrate)} calibration images under {calibration.directory} "
            "could be decoded"
        )
    quantize_started = time.monotonic()
    quantized = _quantize(ir_files(source_dir, meta).xml, views, progress)
    quantize_seconds = time.monotonic() - quantize_started
    out_dir.mkdir(parents=True, exist_ok=True)
    # float16 weights would add a second, unmeasured change on top of int8.
    ov.save_model(quantized, out_dir / IR_FILE, compress_to_fp16=False)
    int8_meta = replace(
        meta,
        model_format="openvino",
        sha256=model_sha256(out_dir, "openvino"),
        source=f"optimize:{source_ref} sha256={meta.sha256}",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        metrics={},
    )
    figures: dict[str, Any] = {
        "method": METHOD,
        "precision": "int8",
        "nncf_version": version("nncf"),
        "openvino_version": openvino_version(),
        "source_ref": source_ref,
        "source_sha256": meta.sha256,
        "calibration_dir": str(calibration.directory.resolve()),
        "calibration_images": used,
        "calibration_views": len(views),
        "calibration_skipped": skipped,
        "auc_checked": calibration.auc_checked,
        "held_out_images": 0,
        "quantize_seconds": round(quantize_seconds, 2),
    }
    if calibration.held_out is not None:
        runner = OpenVINORunner(IRFiles(out_dir / IR_FILE, None), meta.input_size, batch_size, meta=int8_meta)
        int8 = ImageClassifier(runner, meta.thresholds, meta.preprocess, make_thumbnails=False)
        auc_before, auc_after, p_int8, labels = _held_out_auc(source, int8, calibration.held_out, progress)
        if auc_before - auc_after > max_auc_drop:
            raise AUCDropTooLarge(auc_before, auc_after, max_auc_drop, len(labels))
        figures |= {
            "held_out_images": len(labels),
            "auc_before": auc_before,
            "auc_after": auc_after,
            "auc_drop": auc_before - auc_after,
            "max_auc_drop": max_auc_drop,
        }
        # The new version's metrics are its own, on images it was not calibrated on.
        int8_meta.metrics = binary_metrics(p_int8, labels, meta.thresholds)
    figures["seconds"] = round(time.monotonic() - started, 2)
    int8_meta.optimization = figures
    (out_dir / META_FILE).write_text(int8_meta.to_json())
    return Optimized(out_dir, int8_meta)
