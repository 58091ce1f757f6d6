"""An artifact's model as OpenVINO IR: converted once and cached beside the artifact.

The cache is ``ARTIFACT/openvino/<sha256[:16]>-ov<version>/`` (model.xml, model.bin and OpenVINO's
compiled blobs), so a new model file or a new OpenVINO gets a new entry and workers that start later
reuse it. Keras is imported only to convert; a worker that finds the cache never loads TensorFlow.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

from aiscan.model.errors import ModelError
from aiscan.model.metadata import IR_FILE, IR_WEIGHTS, ArtifactMeta, read_meta, verify_model

log = logging.getLogger(__name__)

CACHE_DIR = "openvino"
COMPILED_DIR = "compiled"
_LOCK_FILE = ".lock"


@cache
def openvino_installed() -> bool:
    """Whether the OpenVINO runtime can be imported (the `cpu` extra installs it)."""
    return find_spec("openvino") is not None


def openvino_version() -> str:
    """The installed OpenVINO's version, read from its distribution."""
    try:
        return version("openvino")
    except PackageNotFoundError:
        raise ModelError(
            "the OpenVINO runtime is not installed: `pip install 'aiscan[cpu]'` (make setup does), "
            "or set AISCAN_RUNTIME=keras"
        ) from None


@dataclass(frozen=True)
class IRFiles:
    """Where an artifact's IR lies, and where OpenVINO may keep compiled blobs (None: not cached)."""

    xml: Path
    compiled: Path | None


def cache_entry(directory: Path, meta: ArtifactMeta) -> Path:
    """The cache directory for this model file and this OpenVINO."""
    return Path(directory) / CACHE_DIR / f"{meta.sha256[:16]}-ov{openvino_version()}"


def ir_files(directory: Path, meta: ArtifactMeta | None = None) -> IRFiles:
    """The artifact's IR: its own for an OpenVINO artifact, else the cached conversion, made on a miss.

    The model's sha256 is checked against the metadata either way; a cache whose files cannot be read
    is built again. Several processes starting at once convert once: the others wait on a lock.
    """
    directory = Path(directory).resolve()
    meta = meta or read_meta(directory)
    verify_model(directory, meta)
    if meta.model_format == "openvino":
        return IRFiles(directory / IR_FILE, _writable(cache_entry(directory, meta) / COMPILED_DIR))
    entry = cache_entry(directory, meta)
    if _complete(entry):
        return IRFiles(entry / IR_FILE, entry / COMPILED_DIR)
    try:
        with _locked(directory / CACHE_DIR):
            if not _complete(entry):
                _build(directory, entry)
                _drop_stale(entry)
    except OSError as exc:
        # A read-only model directory (a mounted volume): convert for this process alone.
        log.warning("cannot cache the OpenVINO model in %s (%s); converting it for this process", entry, exc)
        scratch = Path(tempfile.mkdtemp(prefix="aiscan-ir-"))
        convert_keras_model(directory, scratch / IR_FILE)
        return IRFiles(scratch / IR_FILE, None)
    return IRFiles(entry / IR_FILE, entry / COMPILED_DIR)


def rebuild(directory: Path, meta: ArtifactMeta | None = None) -> IRFiles:
    """Drop the artifact's cache entry (unreadable files) and convert again."""
    directory = Path(directory).resolve()
    meta = meta or read_meta(directory)
    if meta.model_format == "keras":
        shutil.rmtree(cache_entry(directory, meta), ignore_errors=True)
    else:
        shutil.rmtree(cache_entry(directory, meta) / COMPILED_DIR, ignore_errors=True)
    return ir_files(directory, meta)


def decline_telemetry() -> None:
    """Say no to OpenVINO's usage statistics where the user has not chosen.

    Its converter and NNCF send them to Google Analytics unless the consent file that
    `opt_in_out --opt_out` writes (``~/intel/openvino_telemetry``) says no; aiscan writes that "no"
    through the same library before either runs. A user who opted in keeps their choice.
    """
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # no telemetry package, nothing to decline
        return
    checker = OptInChecker()
    if checker.consent_file_base_dir() is not None and not os.path.exists(checker.consent_file()):
        checker.update_result(ConsentCheckResult.DECLINED)


def convert_keras_model(directory: Path, xml: Path) -> None:
    """Export the artifact's Keras model (sha256-checked) to IR at ``xml`` with Keras's own exporter.

    Weights stay float32: OpenVINO's default compression to float16 would change the scores.
    """
    from aiscan.model.artifact import load_artifact

    decline_telemetry()
    model = load_artifact(directory).load_model()
    xml.parent.mkdir(parents=True, exist_ok=True)
    try:
        model.export(str(xml), format="openvino", verbose=False)
    except Exception as exc:  # the exporter raises many types for graphs it cannot trace
        raise ModelError(f"cannot convert {directory} to OpenVINO: {type(exc).__name__}: {exc}") from exc


def _complete(entry: Path) -> bool:
    return (entry / IR_FILE).is_file() and (entry / IR_WEIGHTS).is_file()


def _build(directory: Path, entry: Path) -> None:
    """Convert into a scratch directory beside the entry, then rename it into place (all or nothing)."""
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=entry.parent))
    scratch.chmod(0o755)  # mkdtemp's 0700 would hide the cache from workers running as other users
    try:
        convert_keras_model(directory, scratch / IR_FILE)
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(scratch, entry)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _drop_stale(entry: Path) -> None:
    """Remove the entries of earlier model files or OpenVINO versions, and abandoned scratch builds."""
    for other in entry.parent.iterdir():
        if other.is_dir() and other != entry:
            shutil.rmtree(other, ignore_errors=True)


def _writable(path: Path) -> Path | None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


@contextmanager
def _locked(cache_root: Path) -> Iterator[None]:
    cache_root.mkdir(parents=True, exist_ok=True)
    with open(cache_root / _LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
