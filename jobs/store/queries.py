"""Reads and writes the CLI and tasks share: the model registry, job lookup and progress counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.orm import Session

from aiscan.jobs.errors import NotFound
from aiscan.jobs.store.models import Chunk, ChunkStatus, DetectorModel, Job, Result


def register_model(
    session: Session, *, name: str, path: str, sha256: str, meta: dict[str, Any]
) -> DetectorModel:
    """Add a new version of ``name``; the first model ever registered becomes the default."""
    has_default = session.scalar(select(DetectorModel.id).where(DetectorModel.is_default).limit(1))
    row = DetectorModel(
        name=name,
        version=next_model_version(session, name),
        path=path,
        sha256=sha256,
        meta=meta,
        is_default=has_default is None,
    )
    session.add(row)
    session.flush()
    return row


def next_model_version(session: Session, name: str) -> int:
    latest = session.scalar(select(func.max(DetectorModel.version)).where(DetectorModel.name == name))
    return (latest or 0) + 1


def resolve_model(session: Session, ref: str | None) -> DetectorModel:
    """``NAME:VERSION``, ``NAME`` (its latest version), or None for the default model."""
    if ref is None:
        row = session.scalar(select(DetectorModel).where(DetectorModel.is_default))
        if row is None:
            raise NotFound("no default model: run `aiscan demo` to train one, or `aiscan model import FILE`")
        return row
    name, _, version = ref.partition(":")
    query = select(DetectorModel).where(DetectorModel.name == name)
    if version:
        if not version.isdigit():
            raise NotFound(f"model version must be a number: {ref!r}")
        query = query.where(DetectorModel.version == int(version))
    else:
        query = query.order_by(DetectorModel.version.desc())
    row = session.scalars(query.limit(1)).first()
    if row is None:
        raise NotFound(f"no model {ref!r}: see `aiscan model list`")
    return row


def set_default_model(session: Session, ref: str) -> DetectorModel:
    row = resolve_model(session, ref)
    session.execute(update(DetectorModel).values(is_default=False))
    row.is_default = True
    return row


def list_models(session: Session) -> list[DetectorModel]:
    return list(session.scalars(select(DetectorModel).order_by(DetectorModel.name, DetectorModel.version)))


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}: see `aiscan jobs list`")
    return job


@dataclass
class JobCounts:
    """How far a job has come, counted from its result rows and the duplicates that share them."""

    total: int
    done: int
    errors: int
    labels: dict[str, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "done": self.done,
            "errors": self.errors,
            "real": self.labels.get("real", 0),
            "fake": self.labels.get("fake", 0),
            "uncertain": self.labels.get("uncertain", 0),
        }


def job_counts(session: Session, job: Job) -> JobCounts:
    rows = session.execute(
        select(Result.label, Result.error_kind, Result.verdict, func.count())
        .where(Result.job_id == job.id)
        .group_by(Result.label, Result.error_kind, Result.verdict)
    ).all()
    # A duplicate ref shares its first occurrence's row, yet it is one of the planned refs.
    counts = JobCounts(total=job.total, done=job.duplicates or 0, errors=0)
    for label, error_kind, verdict, count in rows:
        counts.done += count
        if verdict:
            counts.verdicts[verdict] = counts.verdicts.get(verdict, 0) + count
        if error_kind is not None:
            counts.errors += count
            counts.error_kinds[error_kind] = counts.error_kinds.get(error_kind, 0) + count
        elif label:
            counts.labels[label] = counts.labels.get(label, 0) + count
    return counts


def open_chunks(job_id: int) -> ColumnElement[bool]:
    """The condition on a job's chunks that have not committed yet."""
    return and_(Chunk.job_id == job_id, Chunk.status != ChunkStatus.DONE)


def count_open_chunks(session: Session, job_id: int) -> int:
    return session.scalar(select(func.count()).where(open_chunks(job_id))) or 0


def open_images(session: Session, job_id: int) -> int:
    """Images in the job's chunks that have not committed yet."""
    return int(session.scalar(select(func.coalesce(func.sum(Chunk.size), 0)).where(open_chunks(job_id))) or 0)
