"""Reports streamed out of the database: CSV and JSON Lines, one record per image."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiscan.jobs.store.models import DetectorModel, Result

COLUMNS = (
    "image_uri",
    "p_real",
    "label",
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
    "model",
    "classified_at",
)
FORMATS = ("csv", "jsonl")


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
        record = {col: getattr(result, col, None) for col in COLUMNS}
        record["model"] = f"{name}:{version}"
        yield record


def _text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def write_report(session: Session, job_id: int, fmt: str, out: IO[str]) -> int:
    """Write the job's report in ``fmt`` to ``out``; returns the number of records."""
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for record in iter_records(session, job_id):
            writer.writerow({k: _text(v) for k, v in record.items()})
            count += 1
    elif fmt == "jsonl":
        for record in iter_records(session, job_id):
            out.write(json.dumps({k: _text(v) for k, v in record.items()}) + "\n")
            count += 1
    else:
        raise ValueError(f"unknown report format {fmt!r}")
    return count
