"""The bodies of the three job tasks (plan, classify a chunk, finish), run in-process or by Celery workers.

Nothing here imports the model stack: the classifier is handed in through :class:`TaskContext`, so a
machine that only submits jobs never needs TensorFlow.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Protocol

import numpy as np
from sqlalchemy import func, select, update

from aiscan.jobs.errors import AiscanError, FetchError, TransientFetchError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources import fetch, open_source
from aiscan.jobs.store.db import Database, upsert_results
from aiscan.jobs.store.models import Chunk, ChunkStatus, DetectorModel, Job, JobStatus, Result
from aiscan.model.errors import ErrorKind

PLAN_JOB = "aiscan.plan_job"
CLASSIFY_CHUNK = "aiscan.classify_chunk"
FINISH_JOB = "aiscan.finish_job"
# A chunk whose worker died this many times is recorded as failed instead of being retried forever.
MAX_CHUNK_ATTEMPTS = 4


class Decoded(Protocol):
    pixels: np.ndarray
    width: int
    height: int
    format: str


class Classifier(Protocol):
    """What a chunk needs from the model: decode bytes, score pixel batches, name a label."""

    batch_size: int
    # Batches to decode ahead while the model runs: 0 when the model itself runs on the CPU.
    prefetch_batches: int

    def decode(self, data: bytes) -> Decoded: ...

    def predict(self, pixels: np.ndarray) -> np.ndarray: ...

    def label(self, p_real: float) -> str: ...

    def warm_up(self) -> None: ...


TaskBody = Callable[..., None]


@dataclass
class TaskContext:
    """Everything a task body needs from the process it runs in."""

    settings: Settings
    db: Database
    send: Callable[..., None]
    classifier_for: Callable[[DetectorModel], Classifier]
    on_progress: Callable[[int], None] = field(default=lambda _n: None)


def _now() -> datetime:
    return datetime.now(UTC)


def _batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


def plan_job(ctx: TaskContext, job_id: int) -> None:
    """Enumerate the job's sources lazily into chunk rows and send one classify task per chunk."""
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        if job is None or job.status in JobStatus.FINISHED or job.planned:
            return
        job.status = JobStatus.PLANNING
        job.started_at = job.started_at or _now()
        sources, chunk_size = list(job.sources), job.chunk_size
        existing = s.execute(select(Chunk.seq, Chunk.id).where(Chunk.job_id == job_id))
        known = {seq: chunk_id for seq, chunk_id in existing}

    total = skipped = seq = 0
    try:
        for spec in sources:
            source = open_source(spec, ctx.settings)
            for refs in _batched(source.iter_refs(), chunk_size):
                total += len(refs)
                with ctx.db.session() as s:
                    job = s.get_one(Job, job_id)
                    if job.status == JobStatus.CANCELLED:
                        return
                    # Totals grow while planning so `aiscan jobs show` has something to say.
                    job.total = max(job.total, total)
                    # A redelivered plan re-walks the same deterministic order and keeps its chunks.
                    chunk_id = known.get(seq)
                    if chunk_id is None:
                        chunk = Chunk(job_id=job_id, seq=seq, refs=refs, size=len(refs))
                        s.add(chunk)
                        s.flush()
                        chunk_id = chunk.id
                ctx.send(CLASSIFY_CHUNK, job_id, chunk_id)
                seq += 1
            skipped += source.skipped
    except TransientFetchError:
        raise
    except AiscanError as exc:
        with ctx.db.session() as s:
            job = s.get_one(Job, job_id)
            job.status, job.error, job.finished_at = JobStatus.FAILED, str(exc), _now()
        return

    with ctx.db.session() as s:
        job = s.get_one(Job, job_id)
        job.total, job.skipped, job.planned = total, skipped, True
        if job.status == JobStatus.PLANNING:
            job.status = JobStatus.RUNNING
    _finish_if_complete(ctx, job_id)


_RESULT_FIELDS = (
    "sha256",
    "byte_size",
    "width",
    "height",
    "format",
    "p_real",
    "label",
    "error_kind",
    "error",
    "etag",
)


def _fetch(ctx: TaskContext, ref: str) -> dict[str, Any]:
    """One ref -> the columns of its result row known after fetching, and its bytes under ``data``."""
    row: dict[str, Any] = dict.fromkeys(_RESULT_FIELDS) | {"image_uri": ref}
    try:
        fetched = fetch(ref, ctx.settings)
    except FetchError as exc:
        return row | {"error_kind": exc.error_kind, "error": str(exc)}
    return row | {
        "sha256": hashlib.sha256(fetched.data).hexdigest(),
        "byte_size": len(fetched.data),
        "etag": fetched.etag,
        "data": fetched.data,
    }


def _decode(classifier: Classifier, row: dict[str, Any]) -> dict[str, Any]:
    """Adds the decoded ``pixels`` (or the decode error) to a fetched row; drops its bytes."""
    data = row.pop("data", None)
    if data is None:
        return row
    try:
        decoded = classifier.decode(data)
    except Exception as exc:  # every failure must become a row, never a lost image
        return row | {"error_kind": getattr(exc, "error_kind", ErrorKind.INTERNAL), "error": str(exc)}
    return row | {
        "width": decoded.width,
        "height": decoded.height,
        "format": decoded.format,
        "pixels": decoded.pixels,
    }


def classify_chunk(ctx: TaskContext, job_id: int, chunk_id: int, worker: str | None = None) -> None:
    """Fetch, decode and classify one chunk; all its rows commit in one transaction (an upsert)."""
    with ctx.db.session() as s:
        chunk = s.get(Chunk, chunk_id)
        job = s.get(Job, job_id)
        if chunk is None or job is None or job.status in JobStatus.FINISHED:
            return
        already_done = chunk.status == ChunkStatus.DONE
        if not already_done:
            # The claim is committed before any work, so deliveries that died still count; the
            # increment happens in SQL so two workers claiming at once both count.
            s.execute(
                update(Chunk)
                .where(Chunk.id == chunk_id)
                .values(attempts=Chunk.attempts + 1, started_at=_now(), worker=worker)
            )
            s.refresh(chunk)
        attempts, refs = chunk.attempts, list(chunk.refs)
        model_row = s.get_one(DetectorModel, job.model_id)
        skip_known = bool((job.options or {}).get("skip_known"))
    if already_done:
        # A redelivery after the commit: the rows are there, only the job's end may be owed.
        _finish_if_complete(ctx, job_id)
        return
    if attempts > MAX_CHUNK_ATTEMPTS:
        fail_chunk(
            ctx,
            job_id,
            chunk_id,
            ErrorKind.WORKER_LOST,
            f"the chunk was started {attempts - 1} times and never finished",
        )
        return

    classifier = ctx.classifier_for(model_row)
    rows = score_refs(ctx, classifier, refs, model_id=model_row.id if skip_known else None)
    _commit_chunk(ctx, job_id, chunk_id, model_row.id, rows)


def _commit_chunk(
    ctx: TaskContext, job_id: int, chunk_id: int, model_id: int, rows: list[dict[str, Any]]
) -> None:
    stamp = _now()
    for row in rows:
        row.update(job_id=job_id, model_id=model_id, classified_at=stamp)
    with ctx.db.session() as s:
        upsert_results(s, rows)
        chunk = s.get_one(Chunk, chunk_id)
        chunk.status, chunk.done_at = ChunkStatus.DONE, stamp
    _finish_if_complete(ctx, job_id)


def fail_chunk(ctx: TaskContext, job_id: int, chunk_id: int, error_kind: ErrorKind, message: str) -> None:
    """Record every not-yet-classified image of a chunk that cannot be run as an error row."""
    with ctx.db.session() as s:
        chunk = s.get(Chunk, chunk_id)
        job = s.get(Job, job_id)
        if chunk is None or job is None or chunk.status == ChunkStatus.DONE:
            return
        refs, model_id = list(chunk.refs), job.model_id
        classified = set(
            s.scalars(
                select(Result.image_uri).where(
                    Result.job_id == job_id, Result.image_uri.in_(refs), Result.error_kind.is_(None)
                )
            )
        )
    rows = [
        dict.fromkeys(_RESULT_FIELDS) | {"image_uri": ref, "error_kind": error_kind, "error": message}
        for ref in refs
        if ref not in classified
    ]
    _commit_chunk(ctx, job_id, chunk_id, model_id, rows)


def _read_ahead(
    pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterable[Any], window: int
) -> Iterator[Any]:
    """``fn`` over ``items`` in order, with up to ``window`` calls running ahead in ``pool``."""
    it = iter(items)
    queue: deque[Future[Any]] = deque(pool.submit(fn, item) for item in islice(it, window))
    while queue:
        done = queue.popleft()
        for item in islice(it, 1):
            queue.append(pool.submit(fn, item))
        yield done.result()


def score_refs(
    ctx: TaskContext, classifier: Classifier, refs: list[str], *, model_id: int | None = None
) -> list[dict[str, Any]]:
    """Result rows for ``refs``, in order: threads fetch and decode, the model scores full batches.

    With ``model_id``, images whose content this model already scored reuse that result.
    """
    rows: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    batch = classifier.batch_size
    # Fetching (network, disk, hashing) always runs a few batches ahead, to hide latency. Decoding is
    # CPU work: on a CPU-only machine the model already uses every core, and a decode thread that
    # preempts one of its threads stalls them all, so decoding and scoring take turns; with an
    # accelerator, decoding runs ahead to keep it fed.
    decode_ahead = batch * classifier.prefetch_batches
    fetch_ahead = batch * (2 + classifier.prefetch_batches)

    def flush() -> None:
        if not pending:
            return
        pixels = np.stack([r.pop("pixels") for r in pending])
        for r, p in zip(pending, classifier.predict(pixels), strict=True):
            r["p_real"] = float(p)
            r["label"] = classifier.label(float(p))
        ctx.on_progress(len(pending))
        pending.clear()

    def fetch_one(ref: str) -> dict[str, Any]:
        return _fetch(ctx, ref)

    def decode_one(row: dict[str, Any]) -> dict[str, Any]:
        return _decode(classifier, row)

    with (
        ThreadPoolExecutor(max_workers=ctx.settings.fetch_concurrency) as io_pool,
        ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as cpu_pool,
    ):
        if model_id is None:
            fetched: Iterator[dict[str, Any]] = _read_ahead(io_pool, fetch_one, refs, fetch_ahead)
        else:
            every = list(io_pool.map(fetch_one, refs))
            _reuse_known(ctx, every, model_id)
            fetched = iter(every)
        decoding: deque[Future[dict[str, Any]]] = deque()
        while True:
            while (
                len(decoding) < batch - len(pending) + decode_ahead
                and (row := next(fetched, None)) is not None
            ):
                decoding.append(cpu_pool.submit(decode_one, row))
            if not decoding:
                break
            row = decoding.popleft().result()
            rows.append(row)
            if "pixels" in row:
                pending.append(row)
                if len(pending) == batch:
                    flush()
            else:
                ctx.on_progress(1)
        flush()
    return rows


def _reuse_known(ctx: TaskContext, rows: list[dict[str, Any]], model_id: int) -> None:
    """Fill rows whose sha256 this model already scored (in any job), dropping their bytes."""
    hashes = {r["sha256"] for r in rows if r.get("data") is not None}
    if not hashes:
        return
    with ctx.db.session() as s:
        known = {
            sha: (p, label, w, h, fmt)
            for sha, p, label, w, h, fmt in s.execute(
                select(
                    Result.sha256, Result.p_real, Result.label, Result.width, Result.height, Result.format
                ).where(Result.model_id == model_id, Result.sha256.in_(hashes), Result.p_real.is_not(None))
            )
        }
    for row in rows:
        hit = known.get(row["sha256"]) if row.get("data") is not None else None
        if hit is not None:
            row.pop("data")
            row["p_real"], row["label"], row["width"], row["height"], row["format"] = hit


def finish_job(ctx: TaskContext, job_id: int) -> None:
    """Mark a fully classified job done; harmless when sent more than once."""
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        if job is not None and job.status not in JobStatus.FINISHED:
            job.status, job.finished_at = JobStatus.DONE, _now()


def _finish_if_complete(ctx: TaskContext, job_id: int) -> None:
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        if job is None or not job.planned or job.status in JobStatus.FINISHED:
            return
        open_chunks = s.scalar(
            select(func.count()).where(Chunk.job_id == job_id, Chunk.status != ChunkStatus.DONE)
        )
    if open_chunks == 0:
        ctx.send(FINISH_JOB, job_id)


TASKS: dict[str, TaskBody] = {
    PLAN_JOB: plan_job,
    CLASSIFY_CHUNK: classify_chunk,
    FINISH_JOB: finish_job,
}
