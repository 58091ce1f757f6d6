"""Schedules: recurring incremental scans, their timing (``--every`` or ``--cron``) and how a due run starts.

A due run is claimed by inserting (schedule, due time) into ``schedule_runs``: the unique key lets one
tick start it however many beats or ticks race for it. Missed runs are not replayed: a tick starts one run
and moves the next due time past now.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiscan.jobs.errors import AiscanError, NotFound, SourceError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources import open_source
from aiscan.jobs.store.db import Database
from aiscan.jobs.store.models import Job, JobStatus, Schedule, ScheduleMark, ScheduleRun, as_utc
from aiscan.jobs.store.operations import mark_job
from aiscan.jobs.store.queries import resolve_model
from aiscan.jobs.store.refs import display_ref
from aiscan.jobs.submit import create_job
from aiscan.jobs.tasks import PLAN_JOB

if TYPE_CHECKING:
    from celery.schedules import crontab

log = logging.getLogger(__name__)

# A longer interval is a typo (and would overflow a datetime long before it came round).
MAX_EVERY_S = 366 * 24 * 3600
MAX_NAME = 100
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(?:\d+[smhd])+$")
_PART = re.compile(r"(\d+)([smhd])")
# How far ahead a cron line is searched for its next time: one that never matches (Feb 30) is refused.
_CRON_HORIZON_DAYS = 5 * 366


class ScheduleError(AiscanError):
    """A schedule argument aiscan cannot use: a bad name, duration or cron line."""


def _now() -> datetime:
    return datetime.now(UTC)


# -- timing ------------------------------------------------------------------------------------------


def parse_every(text: str) -> int:
    """``90s``, ``15m``, ``2h``, ``1d`` or a sum like ``1h30m`` -> seconds (1 s to 366 days)."""
    raw = text.strip().lower()
    if not _DURATION.match(raw):
        raise ScheduleError(
            f"--every {text!r} is not a duration: give a number and a unit s, m, h or d, e.g. 90s, 15m, 1h30m"
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(raw))
    if seconds < 1:
        raise ScheduleError(f"--every {text!r} must be at least 1s")
    if seconds > MAX_EVERY_S:
        raise ScheduleError(f"--every {text!r} must be at most 366d")
    return seconds


def parse_cron(text: str) -> crontab:
    """A five-field cron line (minute hour day-of-month month day-of-week, in UTC) as a celery crontab."""
    fields = text.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"--cron {text!r} needs 5 fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *'"
        )
    from celery.schedules import crontab  # Celery is slow to import; only schedules with a cron line pay

    minute, hour, dom, month, dow = fields
    try:
        cron = crontab(minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow)
    except (ValueError, TypeError, IndexError) as exc:
        raise ScheduleError(f"--cron {text!r} is not a valid cron line: {exc}") from None
    if _next_cron(cron, datetime(2000, 1, 1, tzinfo=UTC)) is None:
        raise ScheduleError(f"--cron {text!r} never comes round (no such day)")
    return cron


def _next_cron(cron: crontab, after: datetime) -> datetime | None:
    """The first minute strictly after ``after`` that ``cron`` matches (UTC); None within the horizon."""
    start = as_utc(after).replace(second=0, microsecond=0) + timedelta(minutes=1)
    day = start.replace(hour=0, minute=0)
    hours, minutes = sorted(cron.hour), sorted(cron.minute)
    for _ in range(_CRON_HORIZON_DAYS):
        # celery numbers days of the week from Sunday = 0; Python's weekday() from Monday = 0
        if (
            day.month in cron.month_of_year
            and day.day in cron.day_of_month
            and (day.weekday() + 1) % 7 in cron.day_of_week
        ):
            for h in hours:
                for m in minutes:
                    at = day.replace(hour=h, minute=m)
                    if at >= start:
                        return at
        day += timedelta(days=1)
    return None


def next_due(schedule: Schedule, after: datetime) -> datetime:
    """The schedule's first due time strictly after ``after``."""
    if schedule.every_s is not None:
        return after + timedelta(seconds=schedule.every_s)
    if schedule.cron is None:
        raise ScheduleError(f"schedule {schedule.name!r} has neither an interval nor a cron line")
    at = _next_cron(parse_cron(schedule.cron), after)
    if at is None:
        raise ScheduleError(f"schedule {schedule.name!r}: its cron line never comes round")
    return at


def _advance(schedule: Schedule, due: datetime, now: datetime) -> datetime:
    """The next due time after a run due at ``due`` started at ``now``: past now, missed runs skipped."""
    if schedule.every_s is not None:
        # Keep the interval's phase; jump straight past now rather than stepping through missed runs.
        step = timedelta(seconds=schedule.every_s)
        behind = max(0, int((now - due) / step))
        at = due + step * (behind + 1)
        return at if at > now else at + step
    return next_due(schedule, now)


# -- schedules ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """What `aiscan schedule add` asks for."""

    name: str
    sources: list[str]
    every: str | None = None
    cron: str | None = None
    model_ref: str | None = None
    rescan_on_model_change: bool = False
    tag_objects: bool = False


def add_schedule(db: Database, settings: Settings, spec: ScheduleSpec, *, now: datetime | None = None) -> int:
    """Validate and store a schedule, first due one interval (or the next cron time) from now; its id."""
    if not _NAME.match(spec.name) or len(spec.name) > MAX_NAME:
        raise ScheduleError(
            f"schedule name {spec.name!r} must be 1 to {MAX_NAME} letters, digits, '.', '_' or '-'"
        )
    if (spec.every is None) == (spec.cron is None):
        raise ScheduleError("give exactly one of --every DURATION or --cron 'EXPR'")
    if not spec.sources:
        raise ScheduleError("give at least one source to scan")
    every_s = parse_every(spec.every) if spec.every is not None else None
    cron = " ".join(spec.cron.split()) if spec.cron is not None else None
    if cron is not None:
        parse_cron(cron)
    specs = [open_source(source, settings).spec for source in spec.sources]
    now = now or _now()
    with db.session() as s:
        if s.scalar(select(Schedule.id).where(Schedule.name == spec.name)) is not None:
            raise ScheduleError(
                f"a schedule named {spec.name!r} exists: remove it first or pick another name"
            )
        if spec.model_ref is not None:
            resolve_model(s, spec.model_ref)  # an unknown model is refused now, not at the first run
        row = Schedule(
            name=spec.name,
            sources=specs,
            model_ref=spec.model_ref,
            every_s=every_s,
            cron=cron,
            rescan_on_model_change=spec.rescan_on_model_change,
            tag_objects=spec.tag_objects,
            paused=False,
            next_due_at=now,
            created_at=now,
        )
        row.next_due_at = next_due(row, now)
        s.add(row)
        try:
            s.flush()
        except IntegrityError:
            raise ScheduleError(f"a schedule named {spec.name!r} exists: pick another name") from None
        return row.id


def list_schedules(db: Database) -> list[Schedule]:
    """Every schedule, by name (detached rows)."""
    with db.session() as s:
        rows = list(s.scalars(select(Schedule).order_by(Schedule.name)))
        s.expunge_all()
        return rows


def _by_name(session: Session, name: str) -> Schedule:
    row = session.scalar(select(Schedule).where(Schedule.name == name))
    if row is None:
        raise NotFound(f"no schedule named {name!r}: see `aiscan schedule list`")
    return row


def get_schedule(db: Database, name: str) -> Schedule:
    """The schedule named ``name`` (detached); NotFound when there is none."""
    with db.session() as s:
        row = _by_name(s, name)
        s.expunge(row)
        return row


def pause_schedule(db: Database, name: str) -> None:
    """Stop starting runs; a run already started goes on."""
    with db.session() as s:
        _by_name(s, name).paused = True


def resume_schedule(db: Database, name: str, *, now: datetime | None = None) -> None:
    """Start runs again, the next one due after now: the runs missed while paused are not replayed."""
    now = now or _now()
    with db.session() as s:
        row = _by_name(s, name)
        if row.paused:
            row.paused = False
            if as_utc(row.next_due_at) <= now:
                row.next_due_at = next_due(row, now)


def remove_schedule(db: Database, name: str) -> None:
    """Delete a schedule with its marks; its jobs stay, no longer naming it."""
    with db.session() as s:
        s.delete(_by_name(s, name))


# -- starting runs -----------------------------------------------------------------------------------


def claim_run(session: Session, schedule_id: int, due_at: datetime) -> bool:
    """Claim the run of a schedule due at ``due_at``: True for the one caller that gets it."""
    try:
        with session.begin_nested():
            session.add(ScheduleRun(schedule_id=schedule_id, due_at=due_at, created_at=_now()))
    except IntegrityError:
        return False
    return True


def _job_options(schedule: Schedule, settings: Settings) -> dict[str, Any]:
    return {
        "incremental": True,
        "tag_objects": schedule.tag_objects,
        "schedule": schedule.name,
        "rescan_on_model_change": schedule.rescan_on_model_change,
        "batch_size": settings.batch_size,
        "skip_known": False,
    }


def _start(db: Database, settings: Settings, schedule_id: int, due_at: datetime, now: datetime) -> int | None:
    """Claim one due run and create its job; None when another caller claimed it."""
    with db.session() as s:
        schedule = s.get(Schedule, schedule_id)
        if schedule is None or not claim_run(s, schedule_id, due_at):
            return None
        sources, model_ref = list(schedule.sources), schedule.model_ref
        options = _job_options(schedule, settings)
        if as_utc(schedule.next_due_at) <= now:
            schedule.next_due_at = _advance(schedule, as_utc(schedule.next_due_at), now)
        schedule.last_run_at = now
    # The claim is committed first: a job that cannot be created (its model was deleted) must not be
    # retried by every tick; the error goes to the caller and the schedule moves on.
    job_id = create_job(
        db,
        settings,
        sources,
        model_ref=model_ref,
        chunk_size=settings.chunk_size,
        options=options,
        schedule_id=schedule_id,
    )
    with db.session() as s:
        run = s.scalar(
            select(ScheduleRun).where(ScheduleRun.schedule_id == schedule_id, ScheduleRun.due_at == due_at)
        )
        if run is not None:
            run.job_id = job_id
        schedule = s.get(Schedule, schedule_id)
        if schedule is not None:
            schedule.last_job_id = job_id
    return job_id


def _busy(db: Database, schedule_id: int, now: datetime, *, skip: bool) -> int | None:
    """The job of the schedule's last run while it is unfinished, else None. With ``skip`` the due run
    counts as missed: runs do not pile up behind a run that takes longer than the interval."""
    with db.session() as s:
        schedule = s.get(Schedule, schedule_id)
        if schedule is None or schedule.last_job_id is None:
            return None
        status = s.scalar(select(Job.status).where(Job.id == schedule.last_job_id))
        if status is None or status in JobStatus.FINISHED:
            return None
        if skip and as_utc(schedule.next_due_at) <= now:
            schedule.next_due_at = _advance(schedule, as_utc(schedule.next_due_at), now)
        return schedule.last_job_id


def _send_plan(db: Database, send: Callable[..., None], job_id: int) -> None:
    try:
        send(PLAN_JOB, job_id)
    except BaseException as exc:
        reason = str(exc) or type(exc).__name__
        mark_job(db, job_id, JobStatus.FAILED, error=f"its planning task could not be queued: {reason}")
        raise


def tick(
    db: Database, settings: Settings, send: Callable[..., None], now: datetime | None = None
) -> list[int]:
    """Start every unpaused schedule that is due: one run each, its PLAN_JOB sent; the new job ids.

    A schedule whose last run is still unfinished starts none: that due time counts as missed."""
    now = now or _now()
    with db.session() as s:
        due = list(
            s.execute(
                select(Schedule.id, Schedule.next_due_at)
                .where(Schedule.paused.is_(False), Schedule.next_due_at <= now)
                .order_by(Schedule.next_due_at, Schedule.id)
            )
        )
    job_ids: list[int] = []
    for schedule_id, due_at in due:
        if (busy := _busy(db, schedule_id, now, skip=True)) is not None:
            log.info(
                "schedule %d: its last run, job %d, is unfinished; the run due %s is skipped",
                schedule_id,
                busy,
                due_at,
            )
            continue
        try:
            job_id = _start(db, settings, schedule_id, as_utc(due_at), now)
        except (SourceError, NotFound) as exc:
            # One schedule whose source or model is gone must not hold back the others; it is tried
            # again at its next due time, and `schedule run` shows the error.
            log.warning("schedule %d: its run due %s was not started: %s", schedule_id, due_at, exc)
            continue
        if job_id is not None:
            _send_plan(db, send, job_id)
            job_ids.append(job_id)
    return job_ids


def run_now(
    db: Database, settings: Settings, send: Callable[..., None], name: str, now: datetime | None = None
) -> int:
    """Start a run of the schedule named ``name`` now, paused or not (not while its last run is
    unfinished); its job id."""
    now = now or _now()
    with db.session() as s:
        schedule_id = _by_name(s, name).id
    if (busy := _busy(db, schedule_id, now, skip=False)) is not None:
        raise ScheduleError(
            f"schedule {name!r} is still running job {busy}: wait for it, or `aiscan jobs cancel {busy}`"
        )
    job_id = _start(db, settings, schedule_id, now, now)
    if job_id is None:
        raise ScheduleError(
            f"schedule {name!r} was started at this very moment already; see `aiscan jobs list`"
        )
    _send_plan(db, send, job_id)
    return job_id


# -- what `aiscan schedule list/show` print -----------------------------------------------------------


def schedule_summary(session: Session, schedule: Schedule) -> dict[str, Any]:
    """A schedule's settings, state, next due time and its last run's status and stats."""
    last = session.get(Job, schedule.last_job_id) if schedule.last_job_id is not None else None
    marked = session.scalar(select(func.count()).where(ScheduleMark.schedule_id == schedule.id)) or 0
    return {
        "name": schedule.name,
        "sources": [display_ref(source) for source in schedule.sources],
        "every_s": schedule.every_s,
        "cron": schedule.cron,
        "model": schedule.model_ref,
        "rescan_on_model_change": schedule.rescan_on_model_change,
        "tag_objects": schedule.tag_objects,
        "state": "paused" if schedule.paused else "active",
        "next_due_at": as_utc(schedule.next_due_at).isoformat(),
        "last_run_at": as_utc(schedule.last_run_at).isoformat() if schedule.last_run_at else None,
        "last_job_id": schedule.last_job_id,
        "last_job_status": last.status if last is not None else None,
        "last_job_stats": dict(last.schedule_stats) if last is not None and last.schedule_stats else None,
        "last_completed_job_id": schedule.last_completed_job_id,
        "marked_objects": marked,
    }


def schedule_summaries(db: Database, name: str | None = None) -> list[dict[str, Any]]:
    """The summaries of every schedule by name, or of the one named ``name`` (NotFound if none)."""
    with db.session() as s:
        if name is not None:
            return [schedule_summary(s, _by_name(s, name))]
        return [schedule_summary(s, row) for row in s.scalars(select(Schedule).order_by(Schedule.name))]
