"""SQLAlchemy 2.0 ORM models: registered detectors, jobs, their chunks and one result row per image."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum, nonmember
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aiscan.jobs.store.refs import pack_refs, unpack_refs


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(at: datetime) -> datetime:
    """A stored time as an aware UTC time: SQLite hands times back naive, and they were stored in UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class RefList(TypeDecorator[list[Any]]):
    """A JSON list of refs: refs no database stores as text travel as ``{"b64": ...}`` objects."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: list[Any] | None, dialect: Dialect) -> list[Any] | None:
        return None if value is None else pack_refs(list(value))

    def process_result_value(self, value: list[Any] | None, dialect: Dialect) -> list[Any] | None:
        return None if value is None else unpack_refs(value)


class JobStatus(StrEnum):
    PENDING = "pending"
    PLANNING = "planning"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    # A finished job takes no more work; retry_job is the only way back.
    FINISHED = nonmember(frozenset({DONE, FAILED, CANCELLED}))


class ChunkStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"


class DetectorModel(Base):
    """A registered model artifact (one version of one named detector)."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_models_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


class Job(Base):
    """One scan of one or more sources with one model."""

    __tablename__ = "jobs"
    # Server defaults are read when first used, not returned by the INSERT: a Job inserted at an older
    # revision (a migration's test data) names no column that revision lacks.
    __mapper_args__ = {"eager_defaults": False}  # noqa: RUF012 (SQLAlchemy's declarative attribute)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.PENDING, index=True)
    sources: Mapped[list[Any]] = mapped_column(RefList)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    chunk_size: Mapped[int] = mapped_column(Integer)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    planned: Mapped[bool] = mapped_column(Boolean, default=False)
    total: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    # Planned refs that repeat another of the job's refs and share its row (0005): done = rows + these.
    duplicates: Mapped[int] = mapped_column(Integer, server_default="0")
    # Why planning skipped entries: reason -> count (0005).
    skip_reasons: Mapped[dict[str, int] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The schedule that started the job (0008), and what its incremental planning found:
    # {"listed", "changed", "unchanged", "deleted"}.
    schedule_id: Mapped[int | None] = mapped_column(
        ForeignKey("schedules.id", ondelete="SET NULL"), index=True
    )
    schedule_stats: Mapped[dict[str, int] | None] = mapped_column(JSON)


class Chunk(Base):
    """A slice of a job's image refs: the unit of work of one classify task."""

    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("job_id", "seq", name="uq_chunks_job_seq"),
        Index("ix_chunks_job_status", "job_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    refs: Mapped[list[Any]] = mapped_column(RefList)
    size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default=ChunkStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Who took the chunk last and when: shows work in flight and what a dead worker left behind.
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(200))


class Result(Base):
    """One image of one job: its p-score and label, or the reason it failed."""

    __tablename__ = "results"
    __table_args__ = (
        # Keyed by a hash (0005): a raw ref may be longer than an index row may be, or hold NUL.
        UniqueConstraint("job_id", "uri_key", name="uq_results_job_key"),
        Index("ix_results_sha256_model", "sha256", "model_id"),
        # Browsing (0007): keyset pages by p-score, and counts by verdict, without reading the whole job.
        Index("ix_results_job_p_real", "job_id", "p_real", "id"),
        Index("ix_results_job_verdict", "job_id", "verdict"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    # The ref as shown: storable text, with NUL and undecodable bytes as backslash escapes (refs.py).
    image_uri: Mapped[str] = mapped_column(Text)
    uri_key: Mapped[str] = mapped_column(String(64))
    # The ref's lossless code when image_uri is not the ref itself; None when it is.
    ref: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    byte_size: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(20))
    p_real: Mapped[float | None] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(String(20))
    # How the score was made (0004): views scored, and the most fake one's box "x,y,w,h" and p_real.
    tiles: Mapped[int | None] = mapped_column(Integer)
    tile_box: Mapped[str | None] = mapped_column(String(64))
    tile_p_real: Mapped[float | None] = mapped_column(Float)
    error_kind: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(String(200))
    # What a report leads with, and what the image declares about its origin (0006; model.provenance).
    verdict: Mapped[str | None] = mapped_column(String(20))
    provenance: Mapped[str | None] = mapped_column(String(20))
    generator: Mapped[str | None] = mapped_column(String(200))
    source_type: Mapped[str | None] = mapped_column(String(100))
    c2pa_state: Mapped[str | None] = mapped_column(String(20))
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    classified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Why writing the verdict back as an S3 object tag failed (0008); None when it was not asked or worked.
    tag_error: Mapped[str | None] = mapped_column(Text)


class Thumbnail(Base):
    """A small JPEG of one image of a job, made at scan time for pages and HTML reports (0007).

    Keyed like its result row, so a redelivered chunk replaces it; never read by the model."""

    __tablename__ = "thumbnails"
    __table_args__ = (PrimaryKeyConstraint("job_id", "uri_key", name="pk_thumbnails"),)

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    uri_key: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Schedule(Base):
    """A recurring, incremental scan of some sources: every ``every_s`` seconds or on a ``cron`` line."""

    __tablename__ = "schedules"
    __table_args__ = (
        UniqueConstraint("name", name="uq_schedules_name"),
        Index("ix_schedules_due", "paused", "next_due_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    sources: Mapped[list[Any]] = mapped_column(RefList)
    model_ref: Mapped[str | None] = mapped_column(String(200))
    every_s: Mapped[int | None] = mapped_column(Integer)
    cron: Mapped[str | None] = mapped_column(String(100))
    rescan_on_model_change: Mapped[bool] = mapped_column(Boolean, default=False)
    tag_objects: Mapped[bool] = mapped_column(Boolean, default=False)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    next_due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_job_id: Mapped[int | None] = mapped_column(Integer)
    # The last run that finished done: its listing is in schedule_marks, its model in last_model_id.
    last_completed_job_id: Mapped[int | None] = mapped_column(Integer)
    last_model_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ScheduleRun(Base):
    """One claimed due time of a schedule: the unique key makes a run start once however many ticks race."""

    __tablename__ = "schedule_runs"
    __table_args__ = (UniqueConstraint("schedule_id", "due_at", name="uq_schedule_runs_due"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    job_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ScheduleMark(Base):
    """One object as the schedule's last completed run found it: its key and fingerprint."""

    __tablename__ = "schedule_marks"
    __table_args__ = (PrimaryKeyConstraint("schedule_id", "uri_key", name="pk_schedule_marks"),)

    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    uri_key: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(200))


class ScheduleSeen(Base):
    """One object a scheduled job listed while planning; becomes the marks when the job ends done."""

    __tablename__ = "schedule_seen"
    __table_args__ = (PrimaryKeyConstraint("job_id", "uri_key", name="pk_schedule_seen"),)

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    uri_key: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(200))


@dataclass(slots=True)
class ResultRow:
    """What a chunk learnt about one image, before it is written as a :class:`Result` of a job.

    ``image_uri`` is the ref itself, any text; writing it makes it storable."""

    image_uri: str
    sha256: str | None = None
    byte_size: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    p_real: float | None = None
    label: str | None = None
    tiles: int | None = None
    tile_box: str | None = None
    tile_p_real: float | None = None
    error_kind: str | None = None
    error: str | None = None
    etag: str | None = None
    verdict: str | None = None
    provenance: str | None = None
    generator: str | None = None
    source_type: str | None = None
    c2pa_state: str | None = None
    evidence: dict[str, Any] | None = None
    tag_error: str | None = None
    # Not a results column: written to `thumbnails` beside the row (operations.ROW_ONLY).
    thumbnail: bytes | None = None
