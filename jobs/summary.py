"""A job's state and counts, read from the database as a JSON-ready dict."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiscan.jobs.store.models import DetectorModel, Job, as_utc
from aiscan.jobs.store.queries import get_job, job_counts
from aiscan.jobs.store.refs import display_ref

# How verdict counts are listed: declared provenance first, as reports lead with it; then the model's
# labels from the most to the least suspicious; errors last.
VERDICT_ORDER = ("ai_declared", "capture_declared", "fake", "uncertain", "real", "error")


def ordered_verdicts(verdicts: Mapping[str, int]) -> list[tuple[str, int]]:
    """Verdict counts in VERDICT_ORDER (unknown verdicts after, by name)."""
    rank = {name: i for i, name in enumerate(VERDICT_ORDER)}
    return sorted(verdicts.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


def job_summary(session: Session, job_id: int) -> dict[str, Any]:
    """Job ``job_id``'s state and counts."""
    return _summary(session, get_job(session, job_id))


def recent_job_summaries(session: Session, limit: int) -> list[dict[str, Any]]:
    """The summaries of the ``limit`` most recent jobs, newest first."""
    jobs = session.scalars(select(Job).order_by(Job.id.desc()).limit(limit)).all()
    return [_summary(session, job) for job in jobs]


def _summary(session: Session, job: Job) -> dict[str, Any]:
    model = session.get(DetectorModel, job.model_id)
    counts = job_counts(session, job)
    elapsed = None
    if job.started_at is not None:
        end = as_utc(job.finished_at) if job.finished_at else datetime.now(UTC)
        elapsed = (end - as_utc(job.started_at)).total_seconds()
    return {
        "job_id": job.id,
        "status": job.status,
        "model": model.ref if model else None,
        "sources": [display_ref(source) for source in job.sources],
        "counts": counts.as_dict(),
        "error_kinds": counts.error_kinds,
        # What reports lead with: declared provenance first, then the model's label (see the README).
        "verdicts": counts.verdicts,
        "skipped_files": job.skipped,
        "skip_reasons": dict(job.skip_reasons or {}),
        "duplicates": job.duplicates or 0,
        "error": job.error,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "elapsed_s": round(elapsed, 3) if elapsed is not None else None,
        "images_per_second": round(counts.done / elapsed, 2) if elapsed else None,
        # The schedule that started the job, as named then (it may have been removed since).
        "schedule": (job.options or {}).get("schedule"),
    } | ({"schedule_stats": dict(job.schedule_stats)} if job.schedule_stats else {})
