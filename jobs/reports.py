"""Reports streamed out of the database: CSV, JSON Lines and HTML (jobs.report_html), one record per image."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiscan.jobs.errors import AiscanError
from aiscan.jobs.store.models import DetectorModel, Result

COLUMNS = (
    "image_uri",
    "verdict",
    "p_real",
    "label",
    "provenance",
    "generator",
    "source_type",
    "c2pa_state",
    "sha256",
    "byte_size",
    "width",
    "height",
    "format",
    "tiles",
    "tile_box",
    "tile_p_real",
    "error_kind",
    "error",
    "tag_error",
    "evidence",
    "model",
    "classified_at",
)
FORMATS = ("csv", "jsonl", "html")

# A spreadsheet reads a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ReportError(AiscanError):
    """A report file that cannot be written where it was asked for."""


def iter_records(session: Session, job_id: int, batch: int = 2000) -> Iterator[dict[str, Any]]:
    """The job's result rows in image_uri order, fetched in batches so memory stays flat."""
    query = (
        select(Result, DetectorModel.name, DetectorModel.version)
        .join(DetectorModel, DetectorModel.id == Result.model_id)
        .where(Result.job_id == job_id)
        .order_by(Result.image_uri)
        .execution_options(yield_per=batch)
    )
    for result, name, version in session.execute(query):
        yield record_of(result, name, version)


def record_of(result: Result, model_name: str, model_version: int) -> dict[str, Any]:
    """One result row as a report record: the values of :data:`COLUMNS`, its model as ``name:version``."""
    record = {col: getattr(result, col, None) for col in COLUMNS}
    record["model"] = f"{model_name}:{model_version}"
    return record


def split_uri(uri: str) -> tuple[str, str]:
    """An image address as (folder or prefix, file name): pages and reports lead with the name."""
    folder, _, name = uri.rstrip("/").rpartition("/")
    return (folder + "/", name) if folder else ("", uri)


def _text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _cell(value: Any) -> Any:
    """A CSV cell's value: nested evidence as compact JSON text."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return _text(value)


def csv_cell(value: Any) -> Any:
    """A CSV cell no spreadsheet runs as a formula: text starting with = + - @ tab or CR gets a leading '.

    Only text is neutralised: numbers (p_real, sizes) stay numbers, and a negative number is a value
    aiscan computed, not text an attacker chose. Text such as a file named "-1.png" does get the quote.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SafeCsvWriter:
    """A csv.DictWriter whose cells go through :func:`csv_cell`: every CSV aiscan writes uses it."""

    def __init__(self, out: IO[str], fieldnames: tuple[str, ...]) -> None:
        self._writer = csv.DictWriter(out, fieldnames=fieldnames, lineterminator="\n")

    def writeheader(self) -> None:
        self._writer.writeheader()

    def writerow(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow({k: csv_cell(v) for k, v in row.items()})


def report_pieces(session: Session, job_id: int, fmt: str) -> Iterator[str]:
    """The job's report in ``fmt`` as text: one piece per record (a CSV's header first), as rows stream."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = SafeCsvWriter(buffer, COLUMNS)
        writer.writeheader()
        yield _drain(buffer)
        for record in iter_records(session, job_id):
            writer.writerow({k: _cell(v) for k, v in record.items()})
            yield _drain(buffer)
    elif fmt == "jsonl":
        for record in iter_records(session, job_id):
            yield json.dumps({k: _text(v) for k, v in record.items()}) + "\n"
    elif fmt == "html":
        # Imported here: the HTML report builds on this module's records (and browse's counts).
        from aiscan.jobs.report_html import html_report_pieces

        yield from html_report_pieces(session, job_id)
    else:
        raise ValueError(f"unknown report format {fmt!r}")


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def write_report(session: Session, job_id: int, fmt: str, out: IO[str]) -> int:
    """Write the job's report in ``fmt`` to ``out``; returns the number of records."""
    if fmt == "html":
        from aiscan.jobs.report_html import write_html_report

        return write_html_report(session, job_id, out)
    pieces = 0
    for piece in report_pieces(session, job_id, fmt):
        out.write(piece)
        pieces += 1
    return pieces - 1 if fmt == "csv" else pieces


def write_report_file(session: Session, job_id: int, fmt: str, path: Path) -> int:
    """Write the report to ``path`` atomically; returns the number of records.

    The rows go to a temporary file created exclusively (O_EXCL, a random name) in the target's
    directory, then renamed over ``path``: a file or symlink planted beside the target is never
    written through, and a reader never sees half a report.
    """
    directory = path.parent
    if not directory.is_dir():
        raise ReportError(f"cannot write the report {path}: the directory {directory} does not exist")
    if path.is_dir():
        raise ReportError(f"cannot write the report {path}: it is a directory")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    except OSError as exc:
        raise ReportError(f"cannot write the report in {directory}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            count = write_report(session, job_id, fmt, fh)
        # mkstemp makes the file 0600; a report is as readable as any file this user creates.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return count
