"""The self-contained HTML report: summary, inline SVG histogram, one table row per image with its
thumbnail inlined. No script and no external request; rows stream from the database in batches."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from functools import cache
from typing import IO, Any

from jinja2 import Environment, PackageLoader, Template, select_autoescape
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from aiscan.jobs.histogram import histogram_layout
from aiscan.jobs.reports import record_of, split_uri
from aiscan.jobs.store.browse import p_real_histogram, verdict_counts
from aiscan.jobs.store.models import DetectorModel, Result, Thumbnail
from aiscan.jobs.summary import job_summary, ordered_verdicts

# Rows (with their thumbnails, a few kB each) fetched per round trip: bounds the report's memory.
BATCH = 500
BINS = 20
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@cache
def _template() -> Template:
    env = Environment(
        loader=PackageLoader("aiscan.jobs", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html")


def _rows(session: Session, job_id: int, batch: int) -> Iterator[dict[str, Any]]:
    """The job's records in image_uri order, each with its thumbnail as a data: URL (or None)."""
    query = (
        select(Result, DetectorModel.name, DetectorModel.version, Thumbnail.data)
        .join(DetectorModel, DetectorModel.id == Result.model_id)
        .outerjoin(Thumbnail, and_(Thumbnail.job_id == Result.job_id, Thumbnail.uri_key == Result.uri_key))
        .where(Result.job_id == job_id)
        .order_by(Result.image_uri, Result.id)
        .execution_options(yield_per=batch)
    )
    for result, name, version, data in session.execute(query):
        record = record_of(result, name, version)
        record["folder"], record["name"] = split_uri(record["image_uri"])
        record["thumbnail"] = (
            "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii") if data else None
        )
        yield record


def html_report_pieces(session: Session, job_id: int, *, batch: int = BATCH) -> Iterator[str]:
    """Job ``job_id``'s HTML report as text pieces, rendered as the rows stream (for HTTP responses)."""
    return _pieces(session, job_id, _rows(session, job_id, batch))


def write_html_report(session: Session, job_id: int, out: IO[str], *, batch: int = BATCH) -> int:
    """Write job ``job_id``'s HTML report to ``out`` as it renders; returns the number of image rows."""
    written = 0

    def counted(rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal written
        for row in rows:
            written += 1
            yield row

    for part in _pieces(session, job_id, counted(_rows(session, job_id, batch))):
        out.write(part)
    return written


def _pieces(session: Session, job_id: int, rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    summary = job_summary(session, job_id)
    counts = verdict_counts(session, job_id)
    histogram = p_real_histogram(session, job_id, BINS)
    return _template().generate(
        csp=CSP,
        summary=summary,
        verdicts=ordered_verdicts(counts),
        hist=histogram_layout(histogram),
        rows=rows,
    )
