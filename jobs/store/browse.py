"""Browsing one job's results: filtered keyset pages, a p-score histogram, counts by verdict, thumbnails.

Used by the API, the job page and the HTML report. Pages never use OFFSET: a cursor holds the last row's
sort key and id, and the next page starts right after it in the (job_id, p_real, id) index, so page 1,000
of a 100,000-image job costs what page 1 does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, Integer, and_, cast, func, or_, select
from sqlalchemy.orm import Session

from aiscan.jobs.errors import AiscanError
from aiscan.jobs.reports import record_of
from aiscan.jobs.store.models import DetectorModel, Result, Thumbnail
from aiscan.model.errors import ErrorKind
from aiscan.model.provenance.evidence import Verdict

Sort = Literal["p_real", "-p_real", "image_uri"]
SORTS: tuple[str, ...] = get_args(Sort)
LABELS = ("real", "fake", "uncertain")
# A verdict is a declaration, the model's label, or error.
VERDICTS = (Verdict.AI_DECLARED.value, Verdict.CAPTURE_DECLARED.value, *LABELS, Verdict.ERROR.value)
ERROR_KINDS = tuple(kind.value for kind in ErrorKind)
MAX_LIMIT = 1000
MAX_BINS = 1000
_CURSOR_VERSION = 1
# A cursor longer than this was not made here (the longest key is one image_uri).
_MAX_CURSOR = 64 * 1024


class BrowseError(AiscanError):
    """A browsing request aiscan cannot answer: a bad filter, sort, limit or cursor (HTTP 400)."""


class BadFilter(BrowseError):
    """A filter, sort or limit outside the known values."""


class BadCursor(BrowseError):
    """A cursor that is not one this job's query handed out (mangled, edited, or from another query)."""


def _check(name: str, value: str | None, known: Sequence[str]) -> None:
    if value is not None and value not in known:
        raise BadFilter(f"unknown {name} {value!r}: use one of {', '.join(known)}")


@dataclass(frozen=True)
class ResultFilter:
    """Which rows of a job to show; None matches any value. Raises :class:`BadFilter` on unknown values."""

    verdict: str | None = None
    label: str | None = None
    error_kind: str | None = None

    def __post_init__(self) -> None:
        _check("verdict", self.verdict, VERDICTS)
        _check("label", self.label, LABELS)
        _check("error kind", self.error_kind, ERROR_KINDS)

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.verdict is not None:
            found.append(Result.verdict == self.verdict)
        if self.label is not None:
            found.append(Result.label == self.label)
        if self.error_kind is not None:
            found.append(Result.error_kind == self.error_kind)
        return found

    def digest(self) -> str:
        """A short fingerprint binding a cursor to the filters it was made under."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Page:
    """One page of records (the report's columns plus ``result_id`` and ``has_thumbnail``), and the
    cursor of the next page (None on the last)."""

    items: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class _Position:
    """Where a page starts: after the row with this sort key and id. For p-score sorts a None key means
    the rows without a score, which come last in both directions."""

    key: float | str | None
    id: int


def _encode_cursor(job_id: int, sort: str, filters: ResultFilter, position: _Position) -> str:
    body = {"v": _CURSOR_VERSION, "j": job_id, "s": sort, "f": filters.digest(), "k": position.key}
    body["i"] = position.id
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, job_id: int, sort: str, filters: ResultFilter) -> _Position:
    """The position a cursor holds, after checking it was made for this job, sort and filters."""
    bad = "the cursor is not valid for this page: start again from the first page (no cursor)"
    if len(cursor) > _MAX_CURSOR:
        raise BadCursor(bad)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        body = json.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadCursor(bad) from None
    if not isinstance(body, dict) or body.get("v") != _CURSOR_VERSION:
        raise BadCursor(bad)
    if body.get("j") != job_id or body.get("s") != sort or body.get("f") != filters.digest():
        raise BadCursor(
            "the cursor belongs to another job, sort or filter: start again from the first page (no cursor)"
        )
    key, row_id = body.get("k"), body.get("i")
    if type(row_id) is not int or row_id < 0:
        raise BadCursor(bad)
    if sort == "image_uri":
        ok = isinstance(key, str)
    else:
        ok = key is None or (type(key) in (int, float) and 0.0 <= key <= 1.0)
    if not ok:
        raise BadCursor(bad)
    return _Position(float(key) if isinstance(key, int) else key, row_id)


def results_page(
    session: Session,
    job_id: int,
    *,
    limit: int,
    cursor: str | None,
    filters: ResultFilter,
    sort: Sort,
) -> Page:
    """One page of a job's results in ``sort`` order ("-p_real": most real first), after ``cursor``.

    Rows without a p-score (failed images) come last in both p-score orders; ties go by row id.
    """
    if sort not in SORTS:
        raise BadFilter(f"unknown sort {sort!r}: use one of {', '.join(SORTS)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise BadFilter(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    after = None if cursor is None else _decode_cursor(cursor, job_id, sort, filters)
    where = [Result.job_id == job_id, *filters.conditions()]
    want = limit + 1  # one more than the page says whether another page follows
    if sort == "image_uri":
        rows = _by_uri(session, where, after, want)
    else:
        rows = _by_p_real(session, where, after, want, descending=sort == "-p_real")
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        last = rows[-1]
        key = last.image_uri if sort == "image_uri" else last.p_real
        next_cursor = _encode_cursor(job_id, sort, filters, _Position(key, last.id))
    return Page(_records(session, job_id, rows), next_cursor)


def _by_uri(session: Session, where: list[Any], after: _Position | None, want: int) -> list[Result]:
    query = select(Result).where(*where)
    if after is not None:
        key = str(after.key)
        query = query.where(Result.image_uri >= key, or_(Result.image_uri > key, Result.id > after.id))
    return list(session.scalars(query.order_by(Result.image_uri, Result.id).limit(want)))


def _by_p_real(
    session: Session, where: list[Any], after: _Position | None, want: int, *, descending: bool
) -> list[Result]:
    """Scored rows in p-score order, then unscored ones by id: two index range scans, never a sort."""
    rows: list[Result] = []
    in_unscored = after is not None and after.key is None
    if not in_unscored:
        query = select(Result).where(*where, Result.p_real.is_not(None))
        if after is not None:
            p = float(after.key)  # type: ignore[arg-type]  # a scored position's key is its p_real
            if descending:
                query = query.where(Result.p_real <= p, or_(Result.p_real < p, Result.id < after.id))
            else:
                query = query.where(Result.p_real >= p, or_(Result.p_real > p, Result.id > after.id))
        order = (Result.p_real.desc(), Result.id.desc()) if descending else (Result.p_real, Result.id)
        rows = list(session.scalars(query.order_by(*order).limit(want)))
    if len(rows) < want:
        query = select(Result).where(*where, Result.p_real.is_(None))
        if in_unscored and after is not None:
            query = query.where(Result.id > after.id)
        rows += session.scalars(query.order_by(Result.id).limit(want - len(rows)))
    return rows


def _records(session: Session, job_id: int, rows: list[Result]) -> list[dict[str, Any]]:
    """Report records of a page's rows, with their ids and whether a thumbnail is stored."""
    if not rows:
        return []
    model_ids = {row.model_id for row in rows}
    models = {
        mid: (name, version)
        for mid, name, version in session.execute(
            select(DetectorModel.id, DetectorModel.name, DetectorModel.version).where(
                DetectorModel.id.in_(model_ids)
            )
        )
    }
    with_thumbnail = set(
        session.scalars(
            select(Thumbnail.uri_key).where(
                Thumbnail.job_id == job_id, Thumbnail.uri_key.in_({row.uri_key for row in rows})
            )
        )
    )
    items = []
    for row in rows:
        record = record_of(row, *models[row.model_id])
        record["result_id"] = row.id
        record["has_thumbnail"] = row.uri_key in with_thumbnail
        items.append(record)
    return items


def p_real_histogram(session: Session, job_id: int, bins: int = 20) -> list[int]:
    """How many of the job's scored images fall in each of ``bins`` equal slices of [0, 1]
    (1.0 counts in the last)."""
    if not 1 <= bins <= MAX_BINS:
        raise BadFilter(f"bins must be between 1 and {MAX_BINS}, got {bins}")
    scaled = Result.p_real * bins
    # CAST truncates in SQLite but rounds in PostgreSQL; p_real >= 0, so truncation is the floor.
    if session.get_bind().dialect.name == "postgresql":
        bucket = cast(func.floor(scaled), Integer)
    else:
        bucket = cast(scaled, Integer)
    counts = [0] * bins
    query = (
        select(bucket, func.count())
        .where(Result.job_id == job_id, Result.p_real.is_not(None))
        .group_by(bucket)
    )
    for index, count in session.execute(query):
        counts[min(max(int(index), 0), bins - 1)] += count
    return counts


def verdict_counts(session: Session, job_id: int) -> dict[str, int]:
    """The job's images by verdict, from the (job_id, verdict) index; verdicts with no image are absent."""
    query = select(Result.verdict, func.count()).where(Result.job_id == job_id).group_by(Result.verdict)
    counts: dict[str, int] = {}
    for value, count in session.execute(query):
        # Every writer sets a verdict; a row without one can only have failed.
        key = value or Verdict.ERROR.value
        counts[key] = counts.get(key, 0) + count
    return counts


def thumbnail_of(session: Session, job_id: int, result_id: int) -> bytes | None:
    """The stored JPEG thumbnail of result ``result_id`` of job ``job_id``; None when there is none."""
    query = (
        select(Thumbnail.data)
        .join(Result, and_(Result.job_id == Thumbnail.job_id, Result.uri_key == Thumbnail.uri_key))
        .where(Result.id == result_id, Result.job_id == job_id)
    )
    return session.scalar(query)
