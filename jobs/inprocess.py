"""The embedded queue: a job's tasks run one after another in this process, with a progress bar."""

from __future__ import annotations

from collections import deque
from typing import Any

from aiscan.jobs.artifacts import classifier_factory
from aiscan.jobs.console import progress_bar
from aiscan.jobs.pipeline import TASKS
from aiscan.jobs.scoring import trust_anchors
from aiscan.jobs.settings import Settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.models import DetectorModel
from aiscan.jobs.store.queries import get_job, open_images
from aiscan.jobs.submit import create_job
from aiscan.jobs.tasks import PLAN_JOB, TaskContext


class InProcessQueue:
    """The embedded queue: tasks sent by name run one after another in this process."""

    def __init__(self) -> None:
        self._pending: deque[tuple[str, tuple[Any, ...]]] = deque()

    def send(self, name: str, *args: Any) -> None:
        self._pending.append((name, args))

    def run_next(self, ctx: TaskContext) -> bool:
        """Run one queued task; False when the queue is empty."""
        if not self._pending:
            return False
        name, args = self._pending.popleft()
        TASKS[name](ctx, *args)
        return True


def run_queue(
    settings: Settings, queue: InProcessQueue, job_id: int, *, batch_size: int, show_progress: bool
) -> None:
    """Run everything queued for ``job_id`` here, with a bar over the images this run handles."""
    db = open_database(settings.database_url)
    ctx = TaskContext(settings, db, queue.send, classifier_factory(settings, batch_size))
    with progress_bar(f"job {job_id}", show=show_progress) as bar:
        ctx.on_progress = bar.advance
        while queue.run_next(ctx):
            with db.session() as s:
                planned = get_job(s, job_id).planned
                remaining = open_images(s, job_id)
            if planned:
                bar.update(total=bar.completed + remaining)


def run_scan(
    settings: Settings,
    sources: list[str],
    *,
    model_ref: str | None,
    chunk_size: int,
    batch_size: int,
    show_progress: bool,
    skip_known: bool = False,
    tag_objects: bool = False,
) -> int:
    """Create a job and run all its tasks in this process, with a progress bar; returns the job id."""
    trust_anchors(settings)  # a bad anchors file stops the scan before its job exists
    db = open_database(settings.database_url)
    job_id = create_job(
        db,
        settings,
        sources,
        model_ref=model_ref,
        chunk_size=chunk_size,
        options={"batch_size": batch_size, "skip_known": skip_known, "tag_objects": tag_objects},
    )
    with db.session() as s:
        model = s.get_one(DetectorModel, get_job(s, job_id).model_id)
        s.expunge(model)
    # Load and trace the model before the job starts (plan_job stamps started_at), as a worker does
    # at process start: the job's clock measures classification, and the bar moves from its first tick.
    classifier_factory(settings, batch_size)(model).warm_up()
    queue = InProcessQueue()
    queue.send(PLAN_JOB, job_id)
    run_queue(settings, queue, job_id, batch_size=batch_size, show_progress=show_progress)
    return job_id


def run_sent_plans(
    settings: Settings, sent: list[tuple[str, tuple[Any, ...]]], *, batch_size: int, show_progress: bool
) -> list[int]:
    """Run here, one job after another, the jobs whose planning tasks were collected in ``sent`` (by a
    schedule tick without a broker); their ids."""
    job_ids = [int(args[0]) for name, args in sent if name == PLAN_JOB]
    for job_id in job_ids:
        queue = InProcessQueue()
        queue.send(PLAN_JOB, job_id)
        run_queue(settings, queue, job_id, batch_size=batch_size, show_progress=show_progress)
    return job_ids
