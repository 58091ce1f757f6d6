"""Follow a job run by Celery workers: a progress bar fed by counts polled from the database."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import func, select

from aiscan.jobs.settings import Settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.models import JobStatus, Result
from aiscan.jobs.store.queries import get_job

PROGRESS_COLUMNS = (
    TextColumn("[bold]{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeRemainingColumn(),
)


def follow_job(
    settings: Settings,
    job_id: int,
    *,
    console: Console,
    show_progress: bool,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
) -> str:
    """Wait until the job finishes (or ``timeout_s`` passes); returns its last status."""
    db = open_database(settings.database_url)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with Progress(*PROGRESS_COLUMNS, console=console, disable=not show_progress) as bar:
        task = bar.add_task(f"job {job_id}: queued", total=None)
        while True:
            with db.session() as s:
                job = get_job(s, job_id)
                done = s.scalar(select(func.count()).select_from(Result).where(Result.job_id == job_id))
                status, total, planned = job.status, job.total, job.planned
            bar.update(
                task, completed=done, total=total if planned else None, description=f"job {job_id}: {status}"
            )
            if status in JobStatus.FINISHED:
                return status
            if deadline is not None and time.monotonic() > deadline:
                return status
            time.sleep(poll_s)
