"""The bodies of the three job tasks (plan, classify a chunk, finish), run in-process or by Celery workers.

Nothing here imports the model stack: the classifier is handed in through :class:`TaskContext`, so a
machine that only submits jobs never needs TensorFlow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Protocol

import numpy as np
from sqlalchemy import func, select

from jobs.errors import AiscanError, FetchError
from jobs.settings import Settings
from jobs.sources import fetch_bytes, open_source
from jobs.store.db import Database, upsert_results
from jobs.store.models import Chunk, ChunkStatus, DetectorModel, Job, JobStatus

PLAN_JOB = "aiscan.plan_job"
CLASSIFY_CHUNK = "aiscan.classify_chunk"
FINISH_JOB = "aiscan.finish_job"


class Decoded(Protocol):
    pixels: np.ndarray
    width: int
    height: int
    format: str


class Classifier(Protocol):
    """What a chunk needs from the model: decode bytes, score pixel batches, name a label."""

    batch_size: int

    def decode(self, data: bytes) -> Decoded: ...

    def predict(self, pixels: np.ndarray) -> np.ndarray: ...

    def label(self, p_real: float) -> str: ...


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
        known = {seq: status for seq, status in s.execute(
            select(Chunk.seq, Chunk.status).where(Chunk.job_id == job_id))}

    total = skipped = 0
    seq = 0
    try:
        for spec in sources:
            source = open_source(spec)
            for refs in _batched(source.iter_refs(), chunk_size):
                total += len(refs)
                # A redelivered plan re-walks the same deterministic order: existing chunks are kept.
                if seq not in known:
                    with ctx.db.session() as s:
                        chunk = Chunk(job_id=job_id, seq=seq, refs=refs, size=len(refs))
                        s.add(chunk)
                        s.flush()
                        chunk_id = chunk.id
                    ctx.send(CLASSIFY_CHUNK, job_id, chunk_id)
                elif known[seq] != ChunkStatus.DONE:
                    with ctx.db.session() as s:
                        chunk_id = s.scalar(
                            select(Chunk.id).where(Chunk.job_id == job_id, Chunk.seq == seq))
                    ctx.send(CLASSIFY_CHUNK, job_id, chunk_id)
                seq += 1
            skipped += source.skipped
    except AiscanError as exc:
        with ctx.db.session() as s:
            job = s.get(Job, job_id)
            job.status, job.error, job.finished_at = JobStatus.FAILED, str(exc), _now()
        return

    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        job.total, job.skipped, job.planned = total, skipped, True
        if job.status == JobStatus.PLANNING:
            job.status = JobStatus.RUNNING
    _finish_if_complete(ctx, job_id)


_RESULT_FIELDS = (
    "sha256", "byte_size", "width", "height", "format", "p_real", "label", "error_kind", "error"
)


def _fetch_and_decode(ctx: TaskContext, classifier: Classifier, ref: str) -> dict[str, Any]:
    """One ref -> the columns of its result row, plus the decoded pixels when decoding worked."""
    row: dict[str, Any] = dict.fromkeys(_RESULT_FIELDS) | {"image_uri": ref}
    try:
        data = fetch_bytes(ref, ctx.settings)
    except FetchError as exc:
        return {**row, "error_kind": exc.error_kind, "error": str(exc)}
    row["sha256"] = hashlib.sha256(data).hexdigest()
    row["byte_size"] = len(data)
    try:
        decoded = classifier.decode(data)
    except Exception as exc:  # every failure must become a row, never a lost image
        return {**row, "error_kind": getattr(exc, "error_kind", "internal"), "error": str(exc)}
    return {
        **row,
        "width": decoded.width,
        "height": decoded.height,
        "format": decoded.format,
        "pixels": decoded.pixels,
    }


def classify_chunk(ctx: TaskContext, job_id: int, chunk_id: int) -> None:
    """Fetch, decode and classify one chunk; all its rows commit in one transaction (an upsert)."""
    with ctx.db.session() as s:
        chunk = s.get(Chunk, chunk_id)
        job = s.get(Job, job_id)
        if chunk is None or job is None or job.status in JobStatus.FINISHED:
            return
        already_done = chunk.status == ChunkStatus.DONE
        refs, model_row = list(chunk.refs), s.get(DetectorModel, job.model_id)
    if already_done:
        # A redelivery after the commit: the rows are there, only the job's end may be owed.
        _finish_if_complete(ctx, job_id)
        return

    classifier = ctx.classifier_for(model_row)
    rows = score_refs(ctx, classifier, refs)
    stamp = _now()
    for row in rows:
        row.update(job_id=job_id, model_id=model_row.id, classified_at=stamp)

    with ctx.db.session() as s:
        upsert_results(s, rows)
        chunk = s.get(Chunk, chunk_id)
        chunk.status, chunk.done_at, chunk.attempts = ChunkStatus.DONE, stamp, chunk.attempts + 1
    _finish_if_complete(ctx, job_id)


def score_refs(ctx: TaskContext, classifier: Classifier, refs: list[str]) -> list[dict[str, Any]]:
    """Result rows for ``refs``: a thread pool fetches and decodes ahead while the model scores batches."""
    rows: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if not pending:
            return
        pixels = np.stack([r.pop("pixels") for r in pending])
        for r, p in zip(pending, classifier.predict(pixels), strict=True):
            r["p_real"] = float(p)
            r["label"] = classifier.label(float(p))
        ctx.on_progress(len(pending))
        pending.clear()

    with ThreadPoolExecutor(max_workers=ctx.settings.fetch_concurrency) as pool:
        for row in pool.map(lambda ref: _fetch_and_decode(ctx, classifier, ref), refs):
            rows.append(row)
            if "pixels" in row:
                pending.append(row)
                if len(pending) >= classifier.batch_size:
                    flush()
            else:
                ctx.on_progress(1)
        flush()
    return rows


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


TASKS: dict[str, Callable[..., None]] = {
    PLAN_JOB: plan_job,
    CLASSIFY_CHUNK: classify_chunk,
    FINISH_JOB: finish_job,
}
