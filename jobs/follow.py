"""Follow a job run by Celery workers: a progress bar fed by counts polled from the database."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from aiscan.jobs.console import progress_bar
from aiscan.jobs.settings import Settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.models import JobStatus, Result
from aiscan.jobs.store.queries import get_job


def follow_job(
    settings: Settings,
    job_id: int,
    *,
    show_progress: bool,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
) -> str:
    """Wait until the job finishes (or ``timeout_s`` passes); returns its last status."""
    db = open_database(settings.database_url)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
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
                return status
            if deadline is not None and time.monotonic() > deadline:
                return status
            time.sleep(poll_s)
