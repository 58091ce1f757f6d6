"""The queries of stall recovery: which unfinished jobs stopped making progress, and claiming one.

A job's progress is the latest of its creation, its start, its chunks' starts and commits, and its last
re-dispatch; the re-dispatch stamp doubles as the claim, so one re-send per stall period at most.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from aiscan.jobs.store.db import Database
from aiscan.jobs.store.models import Chunk, Job, JobStatus, as_utc
from aiscan.jobs.store.queries import count_open_chunks, open_chunks

# Where a job's options record its last re-dispatch (ISO 8601, UTC); no schema change needed.
RECOVERED_AT = "recovered_at"
UNFINISHED = (JobStatus.PENDING, JobStatus.PLANNING, JobStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class Redispatch:
    """What one stalled job needs sent again: its planning, and chunks to classify."""

    job_id: int
    plan: bool
    chunk_ids: list[int]
    # Every chunk committed but the job is not done: the finishing task was lost.
    finish: bool
    idle_s: float


def _aware(stamp: datetime | None) -> datetime | None:
    return None if stamp is None else as_utc(stamp)


def _recovered_at(options: dict[str, Any] | None) -> datetime | None:
    raw = (options or {}).get(RECOVERED_AT)
    try:
        return _aware(datetime.fromisoformat(raw)) if isinstance(raw, str) else None
    except ValueError:
        return None


def _latest(*stamps: datetime | None) -> datetime:
    present = [s for s in map(_aware, stamps) if s is not None]
    return max(present) if present else datetime.min.replace(tzinfo=UTC)


def _chunk_progress(session: Session, job_id: int) -> datetime | None:
    started, done = session.execute(
        select(func.max(Chunk.started_at), func.max(Chunk.done_at)).where(Chunk.job_id == job_id)
    ).one()
    return _latest(started, done)


def job_progress(session: Session, job: Job) -> datetime:
    """When ``job`` last made progress (or was re-dispatched)."""
    return _latest(
        job.created_at, job.started_at, _chunk_progress(session, job.id), _recovered_at(job.options)
    )


def workers_moved(session: Session, since: datetime) -> bool:
    """Whether a chunk of a job that is open, or finished since ``since``, was taken or committed since."""
    recent_job = or_(Job.status.in_(UNFINISHED), Job.finished_at >= since)
    moved = or_(Chunk.started_at >= since, Chunk.done_at >= since)
    query = select(Chunk.id).join(Job, Job.id == Chunk.job_id).where(recent_job, moved).limit(1)
    return session.scalar(query) is not None


def idle_jobs(db: Database, before: datetime) -> list[int]:
    """Unfinished jobs whose last progress is older than ``before``, oldest first; none while workers
    move any job's chunks: a waiting job's tasks are then queued behind that work, not lost."""
    with db.session() as s:
        if workers_moved(s, before):
            return []
        jobs = list(s.scalars(select(Job).where(Job.status.in_(UNFINISHED)).order_by(Job.id)))
        return [job.id for job in jobs if job_progress(s, job) < before]


def claim_stalled(
    db: Database, job_id: int, *, now: datetime, stall_before: datetime, in_flight_after: datetime
) -> Redispatch | None:
    """Claim a stalled job for a re-send and say what to send; None when it is not stalled (any more),
    another recovery holds it, or nothing of it can be lost.

    Chunks started after ``in_flight_after`` may still be running on a worker and are left alone; the
    claim stamps the job, so a second recovery within the stall period finds it busy.
    """
    with db.session() as s:
        # SKIP LOCKED: a second recovery running now passes over a job the first is claiming.
        job = s.scalars(select(Job).where(Job.id == job_id).with_for_update(skip_locked=True)).one_or_none()
        if job is None or job.status not in UNFINISHED:
            return None
        progress = job_progress(s, job)
        if progress >= stall_before:
            return None
        started = _aware(job.started_at)
        # Planning that started within the task time limit may still be walking its sources.
        plan = not job.planned and (started is None or started < in_flight_after)
        chunk_ids: list[int] = []
        if not plan:  # a new plan sends every chunk it walks past
            lost = or_(Chunk.started_at.is_(None), Chunk.started_at < in_flight_after)
            query = select(Chunk.id).where(open_chunks(job_id), lost).order_by(Chunk.seq)
            chunk_ids = list(s.scalars(query))
        finish = job.planned and count_open_chunks(s, job_id) == 0
        if not (plan or chunk_ids or finish):
            return None
        job.options = {**(job.options or {}), RECOVERED_AT: now.isoformat()}
        return Redispatch(job_id, plan, chunk_ids, finish, (now - progress).total_seconds())
