"""The Celery tasks: thin wrappers that run the bodies in jobs.pipeline with a worker's context."""

from __future__ import annotations

import logging
from collections.abc import Callable

from billiard.process import current_process
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from sqlalchemy.exc import InterfaceError, OperationalError

from aiscan.jobs import pipeline
from aiscan.jobs.app import CeleryQueue, make_app
from aiscan.jobs.artifacts import classifier_factory
from aiscan.jobs.errors import TransientFetchError
from aiscan.jobs.settings import get_settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.tasks import CLASSIFY_CHUNK, FINISH_JOB, PLAN_JOB, TaskContext
from aiscan.worker import runtime

log = logging.getLogger("aiscan.worker")
settings = get_settings()
app = make_app(settings)
queue = CeleryQueue(app)

# Faults that pass: a database or object store that is briefly unreachable.
TRANSIENT = (OperationalError, InterfaceError, TransientFetchError)
MAX_RETRIES = 8


def _context() -> TaskContext:
    return TaskContext(
        settings=settings,
        db=open_database(settings.database_url),
        send=queue.send,
        classifier_for=classifier_factory(settings, settings.batch_size),
    )


def _backoff(retries: int) -> int:
    return min(2 ** (retries + 1), 120)


@worker_process_init.connect
def _init_process(**_kwargs: object) -> None:
    runtime.pin_gpu(getattr(current_process(), "index", 0) or 0, settings.worker_gpus)
    runtime.enable_memory_growth()
    runtime.warm_up(settings)


def _run_retrying(task: Task, body: Callable[..., None], *args: int) -> None:
    """Run a task body; a transient fault sends the task back with exponential backoff."""
    try:
        body(_context(), *args)
    except TRANSIENT as exc:
        raise task.retry(exc=exc, countdown=_backoff(task.request.retries)) from exc


@app.task(name=PLAN_JOB, bind=True, max_retries=MAX_RETRIES)
def plan_job(self: Task, job_id: int) -> None:
    _run_retrying(self, pipeline.plan_job, job_id)


@app.task(name=FINISH_JOB, bind=True, max_retries=MAX_RETRIES)
def finish_job(self: Task, job_id: int) -> None:
    _run_retrying(self, pipeline.finish_job, job_id)


@app.task(name=CLASSIFY_CHUNK, bind=True, max_retries=MAX_RETRIES)
def classify_chunk(self: Task, job_id: int, chunk_id: int) -> None:
    ctx = _context()
    try:
        pipeline.classify_chunk(ctx, job_id, chunk_id, worker=self.request.hostname)
    except TRANSIENT as exc:
        if self.request.retries < MAX_RETRIES:
            raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
        message = f"gave up after {MAX_RETRIES} retries: {exc}"
        pipeline.fail_chunk(ctx, job_id, chunk_id, "unavailable", message)
    except SoftTimeLimitExceeded:
        pipeline.fail_chunk(ctx, job_id, chunk_id, "timeout", "the chunk ran past the task time limit")
    except Exception as exc:
        # Anything else would leave the chunk open forever: its images become error rows that
        # `aiscan jobs retry --errors` can run again.
        log.exception("chunk %s of job %s failed", chunk_id, job_id)
        pipeline.fail_chunk(ctx, job_id, chunk_id, "internal", f"{type(exc).__name__}: {exc}")
