"""Stall recovery: jobs whose tasks a broker lost are sent again, without a human.

Redis here keeps nothing on disk, so a broker restart drops queued and unacknowledged task messages. A job
that made no progress for AISCAN_STALL_TIMEOUT seconds, while no other job's chunks moved either, gets its
planning, its open chunks or its finishing sent again.
Repeating a task is safe (claims and commits are idempotent), and chunk attempts are not reset: a chunk that
kills its workers still ends as ``worker_lost``. `aiscan beat` runs this periodically on a worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiscan.jobs.settings import Settings
from aiscan.jobs.store.db import Database
from aiscan.jobs.store.stalls import Redispatch, claim_stalled, idle_jobs
from aiscan.jobs.tasks import CLASSIFY_CHUNK, FINISH_JOB, PLAN_JOB, task_time_limit

log = logging.getLogger("aiscan.recovery")


def recover_stalled(
    db: Database, settings: Settings, send: Callable[..., None], *, now: datetime | None = None
) -> list[Redispatch]:
    """Send again the tasks of every job stalled for ``settings.stall_timeout``; returns what was sent."""
    now = now or datetime.now(UTC)
    stall_before = now - timedelta(seconds=settings.stall_timeout)
    # A chunk claimed more recently than this may still be running: its worker holds the only copy.
    in_flight_after = now - timedelta(seconds=task_time_limit(settings))
    sent: list[Redispatch] = []
    for job_id in idle_jobs(db, stall_before):
        redispatch = claim_stalled(
            db, job_id, now=now, stall_before=stall_before, in_flight_after=in_flight_after
        )
        if redispatch is None:
            continue
        _send(send, redispatch)
        sent.append(redispatch)
    return sent


def _send(send: Callable[..., None], redispatch: Redispatch) -> None:
    job_id = redispatch.job_id
    if redispatch.plan:
        # Planning again walks the same order and sends every chunk it meets, the open ones included.
        send(PLAN_JOB, job_id)
        log.warning("job %d: no progress for %.0f s; planning sent again", job_id, redispatch.idle_s)
        return
    if redispatch.finish:
        send(FINISH_JOB, job_id)
        log.warning("job %d: no progress for %.0f s; finishing sent again", job_id, redispatch.idle_s)
        return
    for chunk_id in redispatch.chunk_ids:
        send(CLASSIFY_CHUNK, job_id, chunk_id)
    log.warning(
        "job %d: no progress for %.0f s; %d chunk(s) sent again",
        job_id,
        redispatch.idle_s,
        len(redispatch.chunk_ids),
    )
