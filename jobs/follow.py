"""Follow a job run by Celery workers: a progress bar fed by counts polled from the database."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from aiscan.jobs.console import err_console, progress_bar
from aiscan.jobs.settings import Settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.models import JobStatus, Result
from aiscan.jobs.store.queries import get_job

# Say what may be wrong after this long without progress, or sooner with a short AISCAN_STALL_TIMEOUT.
HINT_AFTER_S = 120.0


def stall_hint(job_id: int, idle_s: float) -> str:
    """What `scan --wait` says once per stall: what keeps a job moving, and the manual way out."""
    return (
        f"job {job_id}: no progress for {idle_s:.0f} s: is a worker running (`aiscan worker`) and "
        f"`aiscan beat` (it re-sends lost tasks)? `aiscan jobs retry {job_id}` re-sends them now"
    )


def follow_job(
    settings: Settings,
    job_id: int,
    *,
    show_progress: bool,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
) -> str:
    """Wait until the job finishes (or ``timeout_s`` passes); returns its last status.

    A stall is reported once on stderr, and the wait goes on."""
    db = open_database(settings.database_url)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    hint_after = min(HINT_AFTER_S, float(settings.stall_timeout))
    seen: tuple[object, ...] = ()
    moved_at, hinted = time.monotonic(), False
    with progress_bar(f"job {job_id}: queued", show=show_progress) as bar:
        while True:
            with db.session() as s:
                job = get_job(s, job_id)
                done = s.scalar(select(func.count()).select_from(Result).where(Result.job_id == job_id))
                status, total, planned = job.status, job.total, job.planned
            bar.update(
                completed=done, total=total if planned else None, description=f"job {job_id}: {status}"
            )
            if status in JobStatus.FINISHED:
                if status == JobStatus.DONE:
                    bar.update(completed=total)  # repeated refs share a row: done counts them too
                return status
            now = time.monotonic()
            if (done, status, total) != seen:
                seen, moved_at, hinted = (done, status, total), now, False
            elif not hinted and now - moved_at >= hint_after:
                # The bar's own console: the line lands above a live bar, unwrapped.
                err_console.print(stall_hint(job_id, now - moved_at), soft_wrap=True, markup=False)
                hinted = True
            if deadline is not None and now > deadline:
                return status
            time.sleep(poll_s)
