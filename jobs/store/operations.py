"""The state transitions of jobs and chunks, each a named operation in one transaction.

Task bodies and job control call these instead of writing SQL; every one is safe to repeat, because
tasks are delivered at least once.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, and_, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from aiscan.jobs.store.db import Database, DatabaseError, driver_error, is_transient
from aiscan.jobs.store.models import (
    Chunk,
    ChunkStatus,
    DetectorModel,
    Job,
    JobStatus,
    Result,
    ResultRow,
    Thumbnail,
)
from aiscan.jobs.store.queries import count_open_chunks, get_job, open_chunks
from aiscan.jobs.store.refs import display_ref, original_ref, storable_text, stored_original, uri_key
from aiscan.jobs.store.schedules import Incremental, incremental_plan, settle_run
from aiscan.model.errors import ErrorKind
from aiscan.model.provenance.evidence import verdict


def _now() -> datetime:
    return datetime.now(UTC)


# -- jobs --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """What planning a job needs from its row."""

    sources: list[str]
    chunk_size: int
    # A scheduled job's diff against its schedule's marks; None scans everything listed.
    incremental: Incremental | None = None


def start_planning(db: Database, job_id: int) -> Plan | None:
    """Mark a job ``planning``; None when it is gone, finished or already planned."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None or job.status in JobStatus.FINISHED or job.planned:
            return None
        job.status = JobStatus.PLANNING
        job.started_at = job.started_at or _now()
        return Plan(list(job.sources), job.chunk_size, incremental_plan(s, job))


def add_chunk(db: Database, job_id: int, seq: int, refs: list[str], *, refs_so_far: int) -> int | None:
    """Chunk ``seq`` of a job being planned, created unless an earlier delivery made it; its id.

    None when the job has finished (a user cancelled it) and should take no more chunks.
    """
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None or job.status in JobStatus.FINISHED:
            return None
        # Totals grow while planning so `aiscan jobs show` has something to say.
        job.total = max(job.total, refs_so_far)
        # A redelivered plan re-walks the same deterministic order and keeps its chunks.
        chunk_id = s.scalar(select(Chunk.id).where(Chunk.job_id == job_id, Chunk.seq == seq))
        if chunk_id is None:
            chunk = Chunk(job_id=job_id, seq=seq, refs=refs, size=len(refs))
            s.add(chunk)
            s.flush()
            chunk_id = chunk.id
        return chunk_id


def end_planning(
    db: Database,
    job_id: int,
    *,
    total: int,
    skip_reasons: Mapping[str, int],
    schedule_stats: Mapping[str, int] | None = None,
) -> None:
    """Record a planned job's counts (skipped entries by reason, and their total; a scheduled run's
    listed/changed/unchanged/deleted) and mark it ``running``, unless it finished meanwhile."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        if schedule_stats is not None:
            job.schedule_stats = dict(schedule_stats)
        job.total, job.skipped, job.planned = total, sum(skip_reasons.values()), True
        job.skip_reasons = (
            {storable_text(k, 200): int(v) for k, v in skip_reasons.items()} if skip_reasons else None
        )
        if job.status == JobStatus.PLANNING:
            job.status = JobStatus.RUNNING


def mark_job(db: Database, job_id: int, status: JobStatus, *, error: str | None = None) -> None:
    """Move an unfinished job to ``status``, with the reason when it failed; a finished job stays so."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None or job.status in JobStatus.FINISHED:
            return
        job.status = status
        if error is not None:
            job.error = storable_text(error)
        if status in JobStatus.FINISHED:
            job.finished_at = _now()
        if status == JobStatus.DONE and job.planned:
            # Every planned ref has its row now, and repeated refs share one: the rest are duplicates.
            # Counted from the rows, so redelivered chunks and `retry --errors` leave it the same.
            rows = s.scalar(select(func.count()).where(Result.job_id == job_id)) or 0
            job.duplicates = max(0, job.total - rows)
        if status in JobStatus.FINISHED and job.schedule_id is not None:
            settle_run(s, job)


def ready_to_finish(db: Database, job_id: int) -> bool:
    """True when a job is planned, not finished, and every one of its chunks has committed."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None or not job.planned or job.status in JobStatus.FINISHED:
            return False
        return count_open_chunks(s, job_id) == 0


@dataclass(frozen=True, slots=True)
class Reopened:
    """What a retried job needs sent again: its planning, and chunks to classify."""

    plan: bool
    chunk_ids: list[int]
    images: int


def reopen_job(db: Database, job_id: int, *, errors: bool) -> Reopened:
    """Reopen a job's unfinished work, and with ``errors`` its failed images as new chunks."""
    with db.session() as s:
        job = get_job(s, job_id)
        plan = not job.planned
        if plan:
            job.status, job.finished_at, job.error = JobStatus.PENDING, None, None
        open_ = [tuple(row) for row in s.execute(select(Chunk.id, Chunk.size).where(open_chunks(job_id)))]
        # A retry is a user's decision: chunks that exhausted their attempts get a fresh count.
        s.execute(update(Chunk).where(open_chunks(job_id)).values(attempts=0))
        new_chunks: list[Chunk] = []
        if errors:
            failed = [
                original_ref(image_uri, ref)
                for image_uri, ref in s.execute(
                    select(Result.image_uri, Result.ref)
                    .where(Result.job_id == job_id, Result.error_kind.is_not(None))
                    .order_by(Result.image_uri, Result.id)
                )
            ]
            # Not `max or -1`: a job whose only chunk is seq 0 has max 0, which is falsy.
            last_seq = s.scalar(select(func.max(Chunk.seq)).where(Chunk.job_id == job_id))
            next_seq = 0 if last_seq is None else last_seq + 1
            for i in range(0, len(failed), job.chunk_size):
                refs = failed[i : i + job.chunk_size]
                new_chunks.append(Chunk(job_id=job_id, seq=next_seq, refs=refs, size=len(refs)))
                next_seq += 1
            s.add_all(new_chunks)
            s.flush()
        images = sum(size for _id, size in open_) + sum(c.size for c in new_chunks)
        if images or plan:
            job.finished_at = None
            if job.planned:
                job.status = JobStatus.RUNNING
        return Reopened(plan, [cid for cid, _size in open_] + [c.id for c in new_chunks], images)


# -- chunks ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """A chunk taken by a worker, with what classifying it needs."""

    refs: list[str]
    attempts: int
    # An earlier delivery committed the chunk: its rows are there, only the job's end may be owed.
    done: bool
    model: DetectorModel
    skip_known: bool
    # `--tag-objects`: write each S3 image's verdict onto its object as tags
    tag_objects: bool = False


def claim_chunk(db: Database, job_id: int, chunk_id: int, worker: str | None) -> Claim | None:
    """Take a chunk of an unfinished job: attempts + 1, who and when; None when there is nothing to do.

    The claim commits before any work, so deliveries that died still count.
    """
    with db.session() as s:
        chunk = s.get(Chunk, chunk_id)
        job = s.get(Job, job_id)
        if chunk is None or job is None or job.status in JobStatus.FINISHED:
            return None
        done = chunk.status == ChunkStatus.DONE
        if not done:
            # The increment happens in SQL, so two workers claiming at once both count.
            s.execute(
                update(Chunk)
                .where(Chunk.id == chunk_id)
                .values(attempts=Chunk.attempts + 1, started_at=_now(), worker=worker)
            )
            s.refresh(chunk)
        model = s.get_one(DetectorModel, job.model_id)
        options = job.options or {}
        return Claim(
            list(chunk.refs),
            chunk.attempts,
            done,
            model,
            skip_known=bool(options.get("skip_known")),
            tag_objects=bool(options.get("tag_objects")),
        )


def commit_chunk(db: Database, job_id: int, chunk_id: int, model_id: int, rows: Sequence[ResultRow]) -> None:
    """Write a chunk's rows and its done mark in one transaction: a second delivery leaves the same rows.

    A row the database refuses for a data reason becomes an ``internal`` error row; the others stay."""
    stamp = _now()
    try:
        with db.session() as s:
            upsert_results(s, job_id, model_id, rows, classified_at=stamp)
            _mark_done(s, chunk_id, stamp)
        return
    except Exception as exc:
        if is_transient(exc):
            raise
    with db.session() as s:
        # The done mark first: it makes pysqlite open the transaction, so the savepoints below nest in it.
        _mark_done(s, chunk_id, stamp)
        for row in _unique_rows(rows):
            try:
                with s.begin_nested():
                    upsert_results(s, job_id, model_id, [row], classified_at=stamp)
            except Exception as exc:
                if is_transient(exc):
                    raise
                refused = ResultRow(row.image_uri, error_kind=ErrorKind.INTERNAL, error=_refusal(exc))
                with s.begin_nested():
                    upsert_results(s, job_id, model_id, [refused], classified_at=stamp)


def _mark_done(session: Session, chunk_id: int, stamp: datetime) -> None:
    session.execute(update(Chunk).where(Chunk.id == chunk_id).values(status=ChunkStatus.DONE, done_at=stamp))


def _refusal(exc: Exception) -> str:
    """Why the database refused a row, named by the error's class and SQLSTATE, never by its values."""
    orig = driver_error(exc)
    sqlstate = getattr(orig, "sqlstate", None)
    name = type(orig).__name__ + (f" (SQLSTATE {sqlstate})" if sqlstate else "")
    return f"the database could not store this image's result: {name}"


@dataclass(frozen=True, slots=True)
class Unscored:
    """The refs of an open chunk that have no classified row, and the job's model."""

    refs: list[str]
    model_id: int


def unscored_refs(db: Database, job_id: int, chunk_id: int) -> Unscored | None:
    """What of an open chunk has no classified row yet; None when the chunk is done or gone."""
    with db.session() as s:
        chunk = s.get(Chunk, chunk_id)
        job = s.get(Job, job_id)
        if chunk is None or job is None or chunk.status == ChunkStatus.DONE:
            return None
        refs = list(chunk.refs)
        classified = set(
            s.scalars(
                select(Result.uri_key).where(
                    Result.job_id == job_id,
                    Result.uri_key.in_({uri_key(ref) for ref in refs}),
                    Result.error_kind.is_(None),
                )
            )
        )
        return Unscored([ref for ref in refs if uri_key(ref) not in classified], job.model_id)


# -- results -----------------------------------------------------------------------------------------


# What a model's score of some content is made of: the columns a reused score copies.
# Provenance comes along: it was read from the same bytes.
KNOWN_COLUMNS = (
    "p_real",
    "label",
    "tiles",
    "tile_box",
    "tile_p_real",
    "width",
    "height",
    "format",
    "verdict",
    "provenance",
    "generator",
    "source_type",
    "c2pa_state",
    "evidence",
)


def known_scores(db: Database, sha256s: Collection[str], model_id: int) -> dict[str, dict[str, Any]]:
    """The ``KNOWN_COLUMNS`` ``model_id`` gave these contents in any job, and their thumbnail, by sha256;
    failed images are not known."""
    if not sha256s:
        return {}
    # The known row's thumbnail comes along too: a reused image is never decoded again to make one.
    query = (
        select(Result.sha256, Thumbnail.data, *(getattr(Result, c) for c in KNOWN_COLUMNS))
        .outerjoin(Thumbnail, and_(Thumbnail.job_id == Result.job_id, Thumbnail.uri_key == Result.uri_key))
        .where(Result.model_id == model_id, Result.sha256.in_(sha256s), Result.p_real.is_not(None))
    )
    with db.session() as s:
        return {
            sha: dict(zip(KNOWN_COLUMNS, values, strict=True)) | {"thumbnail": thumbnail}
            for sha, thumbnail, *values in s.execute(query)
            if sha
        }


# Fields of a row that are not results columns: the thumbnail goes to its own table.
ROW_ONLY = frozenset({"thumbnail"})
# What a second delivery of a row replaces: everything but its key.
_UPDATED_COLUMNS = [f.name for f in fields(ResultRow) if f.name not in ROW_ONLY] + [
    "ref",
    "model_id",
    "classified_at",
]
# The character limits of the result's String columns; a longer value (an ETag, say) is cut.
_LIMITS = {c.name: c.type.length for c in Result.__table__.columns if isinstance(c.type, String)}


def _unique_rows(rows: Sequence[ResultRow]) -> list[ResultRow]:
    """One row per ref, the last: a repeated ref shares its row, and one upsert may not touch a row twice."""
    return list({uri_key(row.image_uri): row for row in rows}.values())


def _values(row: ResultRow) -> dict[str, Any]:
    """A row's column values as every supported database stores them."""
    values = {
        name: storable_text(value, _LIMITS.get(name)) if isinstance(value, str) else value
        for name, value in asdict(row).items()
        if name not in ROW_ONLY
    }
    values["image_uri"] = display_ref(row.image_uri)
    values["uri_key"] = uri_key(row.image_uri)
    values["ref"] = stored_original(row.image_uri)
    if row.verdict is None:  # rows made outside scoring: timeouts, refusals, failed chunks
        values["verdict"] = verdict(None, row.label, row.error_kind)
    return values


def upsert_results(
    session: Session, job_id: int, model_id: int, rows: Sequence[ResultRow], *, classified_at: datetime
) -> None:
    """Insert a job's result rows, replacing any with the same (job_id, uri_key): redelivery is harmless."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        pg = pg_insert(Result)
        stmt: Any = pg.on_conflict_do_update(
            index_elements=["job_id", "uri_key"], set_={col: pg.excluded[col] for col in _UPDATED_COLUMNS}
        )
    elif dialect == "sqlite":
        lite = sqlite_insert(Result)
        stmt = lite.on_conflict_do_update(
            index_elements=["job_id", "uri_key"], set_={col: lite.excluded[col] for col in _UPDATED_COLUMNS}
        )
    else:
        raise DatabaseError(f"unsupported database backend {dialect!r}: use SQLite or PostgreSQL")
    extra = {"job_id": job_id, "model_id": model_id, "classified_at": classified_at}
    unique = _unique_rows(rows)
    # RETURNING makes SQLAlchemy send multi-row INSERTs (insertmanyvalues) rather than psycopg's pipelined
    # executemany, whose failure on a refused value leaves an "error ignored terminating" warning on stderr.
    session.execute(stmt.returning(Result.id), [_values(row) | extra for row in unique])
    _upsert_thumbnails(session, dialect, job_id, unique)


def _upsert_thumbnails(session: Session, dialect: str, job_id: int, rows: Sequence[ResultRow]) -> None:
    """The rows' thumbnails, in the rows' transaction; a row without one (a failure, a reused score)
    drops any an earlier delivery left, so a thumbnail always shows the row's current content."""
    keys = {uri_key(row.image_uri): row.thumbnail for row in rows}
    stale = [key for key, data in keys.items() if data is None]
    if stale:
        session.execute(delete(Thumbnail).where(Thumbnail.job_id == job_id, Thumbnail.uri_key.in_(stale)))
    fresh = [{"job_id": job_id, "uri_key": key, "data": data} for key, data in keys.items() if data]
    if not fresh:
        return
    insert = pg_insert(Thumbnail) if dialect == "postgresql" else sqlite_insert(Thumbnail)
    stmt = insert.on_conflict_do_update(
        index_elements=["job_id", "uri_key"], set_={"data": insert.excluded.data}
    )
    session.execute(stmt.returning(Thumbnail.uri_key), fresh)
