"""Create a job and hand its planning task to a queue (in-process or Celery, by task name)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update

from aiscan.jobs.errors import AiscanError
from aiscan.jobs.pipeline import CLASSIFY_CHUNK, PLAN_JOB
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources import open_source
from aiscan.jobs.store.db import Database
from aiscan.jobs.store.models import Chunk, ChunkStatus, Job, JobStatus, Result
from aiscan.jobs.store.queries import get_job, resolve_model


def create_job(
    db: Database,
    settings: Settings,
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
        )
        s.add(job)
        s.flush()
        return job.id


def submit_job(
    db: Database, settings: Settings, send: Callable[..., None], sources: list[str], **kwargs: Any
) -> int:
    """Create a job and send its planning task; returns the job id."""
    job_id = create_job(db, settings, sources, **kwargs)
    send(PLAN_JOB, job_id)
    return job_id


def cancel_job(db: Database, job_id: int) -> str:
    """Stop a job: queued chunks become no-ops; rows already written stay. Returns the new status."""
    with db.session() as s:
        job = get_job(s, job_id)
        if job.status not in JobStatus.FINISHED:
            job.status, job.finished_at = JobStatus.CANCELLED, datetime.now(UTC)
        return job.status


def retry_job(db: Database, send: Callable[..., None], job_id: int, *, errors: bool) -> int:
    """Re-queue a job's unfinished chunks, and with ``errors`` its failed images; returns images queued.

    Re-running is safe: rows are upserted, so a retried image replaces its old row.
    """
    with db.session() as s:
        job = get_job(s, job_id)
        if not job.planned:
            job.status, job.finished_at, job.error = JobStatus.PENDING, None, None
            send_plan = True
        else:
            send_plan = False
        open_chunks = [
            tuple(row)
            for row in s.execute(
                select(Chunk.id, Chunk.size).where(Chunk.job_id == job_id, Chunk.status != ChunkStatus.DONE)
            )
        ]
        # A retry is a user's decision: chunks that exhausted their attempts get a fresh count.
        s.execute(
            update(Chunk).where(Chunk.job_id == job_id, Chunk.status != ChunkStatus.DONE).values(attempts=0)
        )
        new_chunks: list[Chunk] = []
        if errors:
            failed = list(
                s.scalars(
                    select(Result.image_uri)
                    .where(Result.job_id == job_id, Result.error_kind.is_not(None))
                    .order_by(Result.image_uri)
                )
            )
            next_seq = (s.scalar(select(func.max(Chunk.seq)).where(Chunk.job_id == job_id)) or -1) + 1
            for i in range(0, len(failed), job.chunk_size):
                refs = failed[i : i + job.chunk_size]
                new_chunks.append(Chunk(job_id=job_id, seq=next_seq, refs=refs, size=len(refs)))
                next_seq += 1
            s.add_all(new_chunks)
            s.flush()
        queued = sum(size for _id, size in open_chunks) + sum(c.size for c in new_chunks)
        if queued or send_plan:
            job.finished_at = None
            if job.planned:
                job.status = JobStatus.RUNNING
        chunk_ids = [cid for cid, _size in open_chunks] + [c.id for c in new_chunks]
    if send_plan:
        send(PLAN_JOB, job_id)
    for chunk_id in chunk_ids:
        send(CLASSIFY_CHUNK, job_id, chunk_id)
    return queued
