"""The bodies of the three job tasks (plan, classify a chunk, finish), run in-process or by Celery workers.

Nothing here imports the model stack: the classifier is handed in through :class:`TaskContext`, so a
machine that only submits jobs never needs TensorFlow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import TypeVar

from aiscan.jobs.errors import AiscanError, TransientFetchError
from aiscan.jobs.schedules import tick
from aiscan.jobs.scoring import score_refs
from aiscan.jobs.sources import open_source
from aiscan.jobs.store.models import JobStatus, ResultRow
from aiscan.jobs.store.operations import (
    add_chunk,
    claim_chunk,
    commit_chunk,
    end_planning,
    mark_job,
    ready_to_finish,
    start_planning,
    unscored_refs,
)
from aiscan.jobs.store.schedules import Incremental, count_deleted, diff_entries
from aiscan.jobs.tasks import CLASSIFY_CHUNK, FINISH_JOB, PLAN_JOB, TaskContext
from aiscan.model.errors import ErrorKind

T = TypeVar("T")
# Listed entries diffed against a schedule's marks per query (and seen rows written per transaction).
DIFF_BATCH = 1000
# A chunk whose workers died this many times is recorded as failed instead of being retried forever.
MAX_CHUNK_ATTEMPTS = 4


def plan_job(ctx: TaskContext, job_id: int) -> None:
    """Enumerate the job's sources lazily into chunk rows and send one classify task per chunk."""
    plan = start_planning(ctx.db, job_id)
    if plan is None:
        return
    total = seq = 0
    skip_reasons: Counter[str] = Counter()
    stats: Counter[str] = Counter()
    try:
        for spec in plan.sources:
            source = open_source(spec, ctx.settings)
            if plan.incremental is None:
                refs_to_scan = source.iter_refs()
            else:
                refs_to_scan = _changed_refs(ctx, job_id, plan.incremental, source.iter_entries(), stats)
            for refs in _batched(refs_to_scan, plan.chunk_size):
                total += len(refs)
                chunk_id = add_chunk(ctx.db, job_id, seq, refs, refs_so_far=total)
                if chunk_id is None:
                    return
                ctx.send(CLASSIFY_CHUNK, job_id, chunk_id)
                seq += 1
            skip_reasons.update(source.skip_reasons)
    except TransientFetchError:
        raise
    except AiscanError as exc:
        mark_job(ctx.db, job_id, JobStatus.FAILED, error=str(exc))
        return
    schedule_stats = None
    if plan.incremental is not None:
        if stats["stopped"]:
            return  # cancelled while listing
        deleted = count_deleted(ctx.db, job_id, plan.incremental.schedule_id)
        schedule_stats = {
            "listed": stats["listed"],
            "changed": stats["changed"],
            "unchanged": stats["listed"] - stats["changed"],
            "deleted": deleted,
        }
    end_planning(ctx.db, job_id, total=total, skip_reasons=skip_reasons, schedule_stats=schedule_stats)
    _finish_if_complete(ctx, job_id)


def _changed_refs(
    ctx: TaskContext,
    job_id: int,
    plan: Incremental,
    entries: Iterator[tuple[str, str | None]],
    stats: Counter[str],
) -> Iterator[str]:
    """The refs of a listing a scheduled run must scan, diffed batch by batch: the listing is never held
    whole. Counts ``listed`` and ``changed`` in ``stats``; sets ``stopped`` when the job has finished."""
    for batch in _batched(entries, DIFF_BATCH):
        changed = diff_entries(ctx.db, job_id, plan, batch)
        if changed is None:
            stats["stopped"] = 1
            return
        stats["listed"] += len(batch)
        stats["changed"] += len(changed)
        yield from changed


def classify_chunk(
    ctx: TaskContext, job_id: int, chunk_id: int, worker: str | None = None, retries: int = 0
) -> None:
    """Fetch, decode and classify one chunk; all its rows commit in one transaction (an upsert).

    ``retries``: how often the queue already retried this task after a transient fault.
    """
    claim = claim_chunk(ctx.db, job_id, chunk_id, worker)
    if claim is None:
        return
    if claim.done:
        _finish_if_complete(ctx, job_id)
        return
    # Every delivery counts an attempt; those that were neither this one nor a retry died.
    lost = claim.attempts - 1 - retries
    if lost >= MAX_CHUNK_ATTEMPTS:
        message = f"the chunk was started {lost} times and never finished"
        fail_chunk(ctx, job_id, chunk_id, ErrorKind.WORKER_LOST, message)
        return
    classifier = ctx.classifier_for(claim.model)
    rows = score_refs(
        ctx,
        classifier,
        claim.refs,
        reuse_from=claim.model.id if claim.skip_known else None,
        tag_as=claim.model.ref if claim.tag_objects else None,
    )
    commit_chunk(ctx.db, job_id, chunk_id, claim.model.id, rows)
    _finish_if_complete(ctx, job_id)


def fail_chunk(ctx: TaskContext, job_id: int, chunk_id: int, error_kind: ErrorKind, message: str) -> None:
    """Record every not-yet-classified image of a chunk that cannot be run as an error row."""
    unscored = unscored_refs(ctx.db, job_id, chunk_id)
    if unscored is None:
        return
    rows = [ResultRow(ref, error_kind=error_kind, error=message) for ref in unscored.refs]
    commit_chunk(ctx.db, job_id, chunk_id, unscored.model_id, rows)
    _finish_if_complete(ctx, job_id)


def finish_job(ctx: TaskContext, job_id: int) -> None:
    """Mark a fully classified job done; harmless when sent more than once."""
    mark_job(ctx.db, job_id, JobStatus.DONE)


def tick_schedules(ctx: TaskContext) -> None:
    """Start every schedule that is due (`aiscan beat` sends this every AISCAN_SCHEDULE_TICK seconds)."""
    tick(ctx.db, ctx.settings, ctx.send)


def _finish_if_complete(ctx: TaskContext, job_id: int) -> None:
    if ready_to_finish(ctx.db, job_id):
        ctx.send(FINISH_JOB, job_id)


def _batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


TASKS: dict[str, Callable[..., None]] = {
    PLAN_JOB: plan_job,
    CLASSIFY_CHUNK: classify_chunk,
    FINISH_JOB: finish_job,
}
