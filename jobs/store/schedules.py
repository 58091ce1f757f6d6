"""The SQL of incremental scheduled runs: diff a listing against the marks, and settle a run's marks.

A scheduled job writes what it listed to ``schedule_seen`` while planning. Only when it ends done do
those rows replace the schedule's ``schedule_marks`` (less the images that ended with an error, so
they are scanned again); a run that fails or is cancelled leaves the marks as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, exists, func, insert, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from aiscan.jobs.store.db import Database
from aiscan.jobs.store.models import Job, JobStatus, Result, Schedule, ScheduleMark, ScheduleSeen
from aiscan.jobs.store.refs import uri_key


@dataclass(frozen=True, slots=True)
class Incremental:
    """How a scheduled job plans: against which schedule's marks, or everything (``full``)."""

    schedule_id: int
    full: bool


def incremental_plan(session: Session, job: Job) -> Incremental | None:
    """The job's incremental planning, or None for a job that scans all it lists (not scheduled)."""
    if not (job.options or {}).get("incremental") or job.schedule_id is None:
        return None
    schedule = session.get(Schedule, job.schedule_id)
    if schedule is None:
        return None  # the schedule was removed: nothing to diff against or to mark
    model_changed = schedule.last_model_id is not None and schedule.last_model_id != job.model_id
    full = schedule.last_completed_job_id is None or (schedule.rescan_on_model_change and model_changed)
    return Incremental(schedule.id, full)


def diff_entries(
    db: Database, job_id: int, plan: Incremental, entries: Sequence[tuple[str, str | None]]
) -> list[str] | None:
    """Record a batch of listed entries as seen; the refs among them to scan (new, changed, or all when
    ``plan.full``). None when the job has finished (cancelled) and should plan no more."""
    keyed = [(ref, fingerprint, uri_key(ref)) for ref, fingerprint in entries]
    with db.session() as s:
        status = s.scalar(select(Job.status).where(Job.id == job_id))
        if status is None or status in JobStatus.FINISHED:
            return None
        marks: dict[str, str] = {}
        if not plan.full:
            keys = {key for _ref, fp, key in keyed if fp is not None}
            if keys:
                query = select(ScheduleMark.uri_key, ScheduleMark.fingerprint).where(
                    ScheduleMark.schedule_id == plan.schedule_id, ScheduleMark.uri_key.in_(keys)
                )
                marks = {key: fingerprint for key, fingerprint in s.execute(query)}
        # One row per key: a repeated ref (overlapping sources) is one object, and one upsert may not
        # touch a row twice.
        seen = {key: fp for _ref, fp, key in keyed if fp is not None}
        _upsert_seen(s, job_id, seen)
        return [ref for ref, fp, key in keyed if fp is None or marks.get(key) != fp]


def _upsert_seen(session: Session, job_id: int, seen: dict[str, str]) -> None:
    if not seen:
        return
    dialect = session.get_bind().dialect.name
    upsert = pg_insert(ScheduleSeen) if dialect == "postgresql" else sqlite_insert(ScheduleSeen)
    # A redelivered plan lists again: the newer fingerprint wins.
    stmt = upsert.on_conflict_do_update(
        index_elements=["job_id", "uri_key"], set_={"fingerprint": upsert.excluded.fingerprint}
    )
    session.execute(stmt, [{"job_id": job_id, "uri_key": k, "fingerprint": fp} for k, fp in seen.items()])


def count_deleted(db: Database, job_id: int, schedule_id: int) -> int:
    """Objects the last completed run marked that this job did not list."""
    unseen = ~exists().where(ScheduleSeen.job_id == job_id, ScheduleSeen.uri_key == ScheduleMark.uri_key)
    with db.session() as s:
        return s.scalar(select(func.count()).where(ScheduleMark.schedule_id == schedule_id, unseen)) or 0


def settle_run(session: Session, job: Job) -> None:
    """In the transaction that finishes ``job``: done makes its listing the schedule's marks (errored
    images left out); failed or cancelled only drops it."""
    if job.status == JobStatus.DONE and job.schedule_id is not None:
        schedule = session.get(Schedule, job.schedule_id)
        # An older run ending after a newer one keeps the newer marks.
        if schedule is not None and (
            schedule.last_completed_job_id is None or schedule.last_completed_job_id < job.id
        ):
            _replace_marks(session, schedule.id, job.id)
            schedule.last_completed_job_id = job.id
            schedule.last_model_id = job.model_id
    session.execute(delete(ScheduleSeen).where(ScheduleSeen.job_id == job.id))


def _replace_marks(session: Session, schedule_id: int, job_id: int) -> None:
    session.execute(delete(ScheduleMark).where(ScheduleMark.schedule_id == schedule_id))
    errored = exists().where(
        and_(
            Result.job_id == job_id,
            Result.uri_key == ScheduleSeen.uri_key,
            Result.error_kind.is_not(None),
        )
    )
    rows = select(literal(schedule_id), ScheduleSeen.uri_key, ScheduleSeen.fingerprint).where(
        ScheduleSeen.job_id == job_id, ~errored
    )
    session.execute(insert(ScheduleMark).from_select(["schedule_id", "uri_key", "fingerprint"], rows))
