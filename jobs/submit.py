"""Create a job and hand its planning task to a queue (in-process or Celery, by task name)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiscan.jobs.errors import AiscanError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources import open_source
from aiscan.jobs.store.db import Database
from aiscan.jobs.store.models import Job, JobStatus
from aiscan.jobs.store.operations import mark_job, reopen_job
from aiscan.jobs.store.queries import get_job, resolve_model
from aiscan.jobs.store.schedules import settle_run
from aiscan.jobs.tasks import CLASSIFY_CHUNK, PLAN_JOB


def create_job(
    db: Database,
    settings: Settings,
    sources: list[str],
    *,
    model_ref: str | None,
    chunk_size: int,
    options: dict[str, Any] | None = None,
    schedule_id: int | None = None,
) -> int:
    """Validate the sources, resolve the model and insert a pending job; returns its id."""
    if not sources:
        raise AiscanError("give at least one source to scan")
    if chunk_size < 1:
        raise AiscanError(f"chunk size must be at least 1, got {chunk_size}")
    specs = [open_source(spec, settings).spec for spec in sources]
    with db.session() as s:
        model = resolve_model(s, model_ref)
        job = Job(
            status=JobStatus.PENDING,
            sources=specs,
            model_id=model.id,
            chunk_size=chunk_size,
            options=options or {},
            planned=False,
            total=0,
            skipped=0,
            schedule_id=schedule_id,
        )
        s.add(job)
        s.flush()
        return job.id


def submit_job(
    db: Database, settings: Settings, send: Callable[..., None], sources: list[str], **kwargs: Any
) -> int:
    """Create a job and send its planning task; returns the job id.

    A job whose planning task cannot be sent is marked failed with the reason before the error
    propagates: no job is left `pending` with nothing queued to run it.
    """
    job_id = create_job(db, settings, sources, **kwargs)
    try:
        send(PLAN_JOB, job_id)
    except BaseException as exc:
        reason = str(exc) or type(exc).__name__
        mark_job(db, job_id, JobStatus.FAILED, error=f"its planning task could not be queued: {reason}")
        if isinstance(exc, AiscanError):
            raise AiscanError(f"job {job_id} was not queued and is marked failed: {reason}") from None
        raise
    return job_id


def cancel_job(db: Database, job_id: int) -> str:
    """Stop a job: queued chunks become no-ops; rows already written stay. Returns the new status."""
    with db.session() as s:
        job = get_job(s, job_id)
        if job.status not in JobStatus.FINISHED:
            job.status, job.finished_at = JobStatus.CANCELLED, datetime.now(UTC)
            settle_run(s, job)  # a cancelled run leaves its schedule's marks as they were
        return job.status


def retry_job(db: Database, send: Callable[..., None], job_id: int, *, errors: bool) -> int:
    """Re-queue a job's unfinished chunks, and with ``errors`` its failed images; returns images queued.

    Re-running is safe: rows are upserted, so a retried image replaces its old row.
    """
    reopened = reopen_job(db, job_id, errors=errors)
    try:
        if reopened.plan:
            send(PLAN_JOB, job_id)
        for chunk_id in reopened.chunk_ids:
            send(CLASSIFY_CHUNK, job_id, chunk_id)
    except AiscanError as exc:
        # Its tasks are idempotent: running the retry again once the queue is back sends them all.
        raise AiscanError(f"job {job_id} was not queued again: {exc}; retry when it is back") from None
    return reopened.images
