"""A job's state and counts, read from the database, as a dict and as a table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from aiscan.jobs.settings import Settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.models import DetectorModel
from aiscan.jobs.store.queries import get_job, job_counts


def job_summary(settings: Settings, job_id: int) -> dict[str, Any]:
    """A job's state and counts (from the database) as a JSON-ready dict."""
    with open_database(settings.database_url).session() as s:
        job = get_job(s, job_id)
        model = s.get(DetectorModel, job.model_id)
        counts = job_counts(s, job)
        elapsed = None
        if job.started_at is not None:
            end = _as_aware(job.finished_at) if job.finished_at else datetime.now(UTC)
            elapsed = (end - _as_aware(job.started_at)).total_seconds()
        return {
            "job_id": job.id,
            "status": job.status,
            "model": model.ref if model else None,
            "sources": job.sources,
            "counts": counts.as_dict(),
            "error_kinds": counts.error_kinds,
            "skipped_files": job.skipped,
            "error": job.error,
            "created_at": job.created_at.isoformat() if job.created_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "elapsed_s": round(elapsed, 3) if elapsed is not None else None,
            "images_per_second": round(counts.done / elapsed, 2) if elapsed else None,
        }


def _as_aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone-aware columns; they were stored in UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def print_summary(summary: dict[str, Any], console: Console) -> None:
    c = summary["counts"]
    table = Table(title=f"job {summary['job_id']} ({summary['status']}, model {summary['model']})")
    table.add_column("outcome")
    table.add_column("images", justify="right")
    for key in ("real", "fake", "uncertain", "errors"):
        table.add_row(key, str(c[key]))
    table.add_row("total", f"{c['done']} of {c['total']}")
    console.print(table)
    if summary["error_kinds"]:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(summary["error_kinds"].items()))
        console.print(f"errors by kind: {kinds}")
    if summary["skipped_files"]:
        console.print(f"skipped {summary['skipped_files']} non-image files")
    if summary["error"]:
        console.print(f"[red]job error:[/red] {summary['error']}")
    if summary["images_per_second"]:
        console.print(f"{summary['elapsed_s']:.1f} s, {summary['images_per_second']:.1f} images/s")
    console.print(f"job id: {summary['job_id']}  (aiscan report {summary['job_id']} -o FILE)")
