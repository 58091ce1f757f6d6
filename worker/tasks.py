"""The Celery tasks: the bodies in jobs.pipeline with a worker's context, Celery's retries for transient
faults, and an end for tasks that fail for good (a chunk's images become error rows, a job is failed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from billiard.process import current_process
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from sqlalchemy.exc import SQLAlchemyError

from aiscan.jobs import pipeline
from aiscan.jobs.app import CeleryQueue, make_app
from aiscan.jobs.artifacts import classifier_factory
from aiscan.jobs.errors import TransientFetchError
from aiscan.jobs.recovery import recover_stalled
from aiscan.jobs.scoring import task_deadline
from aiscan.jobs.settings import get_settings
from aiscan.jobs.store.db import DatabaseUnavailable, driver_error, is_transient, open_database
from aiscan.jobs.store.models import JobStatus
from aiscan.jobs.store.operations import mark_job
from aiscan.jobs.tasks import (
    CLASSIFY_CHUNK,
    FINISH_JOB,
    PLAN_JOB,
    RECOVER_STALLED,
    TICK_SCHEDULES,
    TaskContext,
)
from aiscan.model.errors import ErrorKind
from aiscan.worker import runtime

settings = get_settings()
app = make_app(settings)
queue = CeleryQueue(app)


class TransientDatabaseError(Exception):
    """A database fault that may pass (a lost connection, a deadlock): the task is retried."""


@contextmanager
def _transient_database_errors() -> Iterator[None]:
    """Re-raise database faults that may pass as TransientDatabaseError; data errors stay what they are."""
    try:
        yield
    except (SQLAlchemyError, DatabaseUnavailable) as exc:
        if is_transient(exc):
            # The driver's own words: SQLAlchemy's text would add the statement (and, unhidden, refs).
            cause = driver_error(exc)
            raise TransientDatabaseError(f"{type(cause).__name__}: {cause}") from exc
        raise


# Faults that pass: a database or object store that is briefly unreachable. A data error (a value the
# database refuses) is none of these: retrying it would fail the same way for good.
TRANSIENT = (TransientDatabaseError, TransientFetchError)
RETRIES: dict[str, Any] = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": True,
    "retry_backoff_max": settings.task_retry_backoff_max,
    # Full jitter: workers that lost the database together do not all come back at the same second.
    "retry_jitter": True,
    "max_retries": settings.task_max_retries,
}


def _context() -> TaskContext:
    return TaskContext(
        settings=settings,
        db=open_database(settings.database_url),
        send=queue.send,
        classifier_for=classifier_factory(settings, settings.batch_size),
        # the chunk ends itself in time, keeping what it scored; the soft limit stays as a backstop
        deadline=task_deadline(settings),
    )


def _failure(task: Task, exc: BaseException) -> tuple[ErrorKind, str]:
    """The error kind and message of a task that failed for good."""
    if isinstance(exc, TRANSIENT):
        return ErrorKind.UNAVAILABLE, f"gave up after {task.max_retries} retries: {exc}"
    if isinstance(exc, SoftTimeLimitExceeded):
        return ErrorKind.TIMEOUT, "the task ran past its time limit (AISCAN_TASK_SOFT_TIME_LIMIT)"
    return ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}"


class JobTask(Task):
    """plan_job and finish_job: one that fails for good marks its job failed, with the reason."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        _kind, message = _failure(self, exc)
        mark_job(_context().db, args[0], JobStatus.FAILED, error=f"{self.name} failed: {message}")


class ChunkTask(Task):
    """classify_chunk: one that fails for good turns its chunk's images into error rows, so the job
    ends and `aiscan jobs retry --errors` can run them again."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        job_id, chunk_id = args
        pipeline.fail_chunk(_context(), job_id, chunk_id, *_failure(self, exc))


@worker_process_init.connect
def _init_process(**_kwargs: object) -> None:
    runtime.pin_gpu(getattr(current_process(), "index", 0) or 0, settings.worker_gpus)
    runtime.enable_memory_growth()
    runtime.warm_up(settings)


@app.task(name=PLAN_JOB, base=JobTask, **RETRIES)
def plan_job(job_id: int) -> None:
    with _transient_database_errors():
        pipeline.plan_job(_context(), job_id)


@app.task(name=FINISH_JOB, base=JobTask, **RETRIES)
def finish_job(job_id: int) -> None:
    with _transient_database_errors():
        pipeline.finish_job(_context(), job_id)


@app.task(name=CLASSIFY_CHUNK, base=ChunkTask, bind=True, **RETRIES)
def classify_chunk(self: Task, job_id: int, chunk_id: int) -> None:
    request = self.request
    with _transient_database_errors():
        pipeline.classify_chunk(
            _context(), job_id, chunk_id, worker=request.hostname, retries=request.retries
        )


# Sent by `aiscan beat`; no retries: the next tick does the same work.
@app.task(name=RECOVER_STALLED)
def recover_stalled_jobs() -> None:
    recover_stalled(open_database(settings.database_url), settings, queue.send)


# Sent by `aiscan beat`; no retries: the next tick starts whatever is still due.
@app.task(name=TICK_SCHEDULES)
def tick_schedules() -> None:
    with _transient_database_errors():
        pipeline.tick_schedules(_context())
