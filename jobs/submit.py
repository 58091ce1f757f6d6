"""Create a job and hand its planning task to a queue (in-process or Celery, by task name)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobs.errors import AiscanError
from jobs.pipeline import PLAN_JOB
from jobs.sources import open_source
from jobs.store.db import Database
from jobs.store.models import Job, JobStatus
from jobs.store.queries import resolve_model


def create_job(
    db: Database,
    sources: list[str],
    *,
    model_ref: str | None,
    chunk_size: int,
    options: dict[str, Any] | None = None,
) -> int:
    """Validate the sources, resolve the model and insert a pending job; returns its id."""
    if not sources:
        raise AiscanError("give at least one source to scan")
    if chunk_size < 1:
        raise AiscanError(f"chunk size must be at least 1, got {chunk_size}")
    specs = [open_source(spec).spec for spec in sources]
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
        )
        s.add(job)
        s.flush()
        return job.id


def submit_job(db: Database, send: Callable[..., None], sources: list[str], **kwargs: Any) -> int:
    """Create a job and send its planning task; returns the job id."""
    job_id = create_job(db, sources, **kwargs)
    send(PLAN_JOB, job_id)
    return job_id
