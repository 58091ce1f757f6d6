"""A chunk's refs -> result rows: fetch and hash, reuse scores of known content, decode and score.

The scheduling (read-ahead, decode pool, full batches) is `model.batching`'s; what is a job's lives here.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Generator, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import TypeVar

import numpy as np

from aiscan.jobs.errors import FetchError, TransientFetchError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources import fetch
from aiscan.jobs.sources.deadline import longest_fetch
from aiscan.jobs.sources.urltext import internal_error
from aiscan.jobs.store.db import Database
from aiscan.jobs.store.models import ResultRow
from aiscan.jobs.store.operations import known_scores
from aiscan.jobs.tagging import ObjectTagger
from aiscan.jobs.tasks import Classifier, TaskContext
from aiscan.model.batching import read_ahead, read_window, score_batches
from aiscan.model.errors import ErrorKind
from aiscan.model.provenance.c2pa_read import TrustAnchors
from aiscan.model.provenance.evidence import verdict
from aiscan.model.provenance.reader import read_provenance
from aiscan.model.provenance.vocabulary import Declared

T = TypeVar("T")
# what a chunk cut short by its deadline keeps for scoring the images in flight and committing
_COMMIT_MARGIN = 60.0
_STUCK_READ = "reading the image did not finish in time (a stalled file system or storage)"
_CHUNK_TIMEOUT = (
    "the chunk reached its time limit (AISCAN_TASK_SOFT_TIME_LIMIT) before this image; "
    "`aiscan jobs retry JOB --errors` runs it again"
)


@dataclass(slots=True)
class _Fetched:
    row: ResultRow
    # The image's bytes until they are decoded; None after a failed fetch or for a reused score.
    data: bytes | None
    # Where each view the model scores lies in the image.
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    # What the image's provenance declares (AI or capture), read with its decode.
    declared: Declared | None = None


def score_refs(
    ctx: TaskContext,
    classifier: Classifier,
    refs: list[str],
    *,
    reuse_from: int | None = None,
    tag_as: str | None = None,
) -> list[ResultRow]:
    """One row per ref, in the order they were handled; fetch and decode failures are rows with an error.

    With ``reuse_from`` (a model id), images whose content that model already scored reuse the result.
    With ``tag_as`` (the model's NAME:VERSION), each S3 object handled is tagged with its row's verdict.
    Once ``ctx.deadline`` passes no fetch or decode starts: the refs not handled by then are `timeout` rows.
    """
    window = read_window(classifier)
    trust = trust_anchors(ctx.settings)
    started = _before(ctx, refs)
    reads_ahead = partial(
        read_ahead,
        partial(_fetch, ctx.settings),
        started,
        workers=ctx.settings.fetch_concurrency,
        wait=fetch_wait(ctx.settings),
        on_stuck=_stuck,
    )
    if reuse_from is None:
        reads = reads_ahead(window=window)
        fetched: Iterator[_Fetched] = reads
    else:
        # Known content is looked up one batch at a time, so the bytes held stay within the read window.
        lookup = classifier.batch_size
        reads = reads_ahead(window=max(lookup, window - lookup))
        fetched = _reuse_known(ctx.db, reads, reuse_from, lookup)
    rows: list[ResultRow] = []
    tagger = ObjectTagger(ctx.settings, tag_as) if tag_as is not None else None
    try:
        with tagger or nullcontext():
            rows = _score_all(ctx, classifier, fetched, trust, tagger)
    finally:
        if isinstance(reads, Generator):
            reads.close()  # reads still running finish (each has its own deadline); queued ones never start
    return rows + _timed_out(refs, rows, ctx)


def _score_all(
    ctx: TaskContext,
    classifier: Classifier,
    fetched: Iterator[_Fetched],
    trust: TrustAnchors | None,
    tagger: ObjectTagger | None,
) -> list[ResultRow]:
    """The rows of the fetched images, decoded and scored in batches; each handed to ``tagger`` when done."""
    rows = []
    for item, scores in score_batches(
        _before(ctx, fetched),
        partial(_decode, classifier, trust),
        classifier,
        on_progress=ctx.on_progress,
    ):
        if scores is not None:
            try:
                _score_row(classifier, item, scores)
            except Exception as exc:  # one image's aggregation, like its fetch and decode
                row = item.row
                row.p_real = row.label = None
                row.error_kind, row.error = ErrorKind.INTERNAL, internal_error(exc)
        if item.row.verdict is None:  # a reused score brings its verdict along
            item.row.verdict = verdict(item.declared, item.row.label, item.row.error_kind)
        if tagger is not None:
            tagger.submit(item.row)
        rows.append(item.row)
    return rows


def score_bytes(classifier: Classifier, trust: TrustAnchors | None, ref: str, data: bytes) -> ResultRow:
    """One image's row from bytes already in hand (the web check): the same decode, provenance, scoring
    and verdict as a chunk's images; a decode failure is a row with its error, as in a job."""
    item = _Fetched(ResultRow(ref, sha256=hashlib.sha256(data).hexdigest(), byte_size=len(data)), data)
    views = _decode(classifier, trust, item)
    if views is not None:
        _score_row(classifier, item, classifier.predict(views))
    item.row.verdict = verdict(item.declared, item.row.label, item.row.error_kind)
    return item.row


def _before(ctx: TaskContext, items: Iterable[T]) -> Iterator[T]:
    """``items`` until ``ctx.deadline`` passes (all of them without one)."""
    for item in items:
        if ctx.deadline is not None and time.monotonic() >= ctx.deadline:
            return
        yield item


def _timed_out(refs: list[str], rows: list[ResultRow], ctx: TaskContext) -> list[ResultRow]:
    """A `timeout` row for each ref that has no row, once the chunk's deadline cut it short."""
    left = Counter(refs)
    left.subtract(row.image_uri for row in rows)
    missing = []
    for ref in refs:
        if left[ref] > 0:
            left[ref] -= 1
            missing.append(ResultRow(ref, error_kind=ErrorKind.TIMEOUT, error=_CHUNK_TIMEOUT))
    if missing:
        ctx.on_progress(len(missing))
    return missing


def fetch_wait(settings: Settings) -> float:
    """How long a chunk waits for one image's bytes once it needs them: a whole URL fetch, its last
    read, and one more URL timeout. Fetches end on their own deadline; this bounds reads that no
    deadline can interrupt (a stalled network file system)."""
    return longest_fetch(settings) + settings.url_timeout


def _stuck(ref: str) -> _Fetched:
    row = ResultRow(ref, error_kind=ErrorKind.TIMEOUT, error=_STUCK_READ)
    return _Fetched(row, None)


def task_deadline(settings: Settings) -> float:
    """When a worker's chunk stops starting images: the soft time limit, less what the images in flight
    may still take (a whole fetch, then decoding and scoring) and the commit."""
    limit = settings.task_soft_time_limit
    margin = min(limit / 2, longest_fetch(settings) + _COMMIT_MARGIN)
    return time.monotonic() + limit - margin


def _score_row(classifier: Classifier, item: _Fetched, scores: np.ndarray) -> None:
    """The image's p_real and label from its views' scores, and where its most fake view is."""
    row = item.row
    p_real, worst = classifier.aggregate(scores)
    row.p_real, row.label = p_real, classifier.label(p_real)
    row.tiles, row.tile_p_real = len(scores), float(scores[worst])
    row.tile_box = ",".join(str(v) for v in item.boxes[worst])


def _fetch(settings: Settings, ref: str) -> _Fetched:
    """A ref's bytes, with the columns known once they are read (or why they could not be)."""
    row = ResultRow(ref)
    try:
        fetched = fetch(ref, settings)
        row.sha256 = hashlib.sha256(fetched.data).hexdigest()
    except FetchError as exc:
        row.error_kind, row.error = exc.error_kind, str(exc)
        return _Fetched(row, None)
    except TransientFetchError:
        raise  # the storage is down: the whole task is retried later
    except Exception as exc:  # a bug or an unforeseen input costs this image, never its neighbours
        row.error_kind, row.error = ErrorKind.INTERNAL, internal_error(exc)
        return _Fetched(row, None)
    row.byte_size, row.etag = len(fetched.data), fetched.etag
    return _Fetched(row, fetched.data)


def trust_anchors(settings: Settings) -> TrustAnchors | None:
    """The C2PA trust anchors AISCAN_C2PA_TRUST_ANCHORS names (parsed once per process), or None."""
    path = settings.c2pa_trust_anchors
    return None if path is None else TrustAnchors.load(path)


def _read_provenance(item: _Fetched, data: bytes, trust: TrustAnchors | None) -> None:
    """The provenance columns of a fetched image, from the bytes already read; never costs the score."""
    row = item.row
    try:
        found = read_provenance(data, trust)
    except Exception as exc:  # the reader guards each signal; this is for a bug in the guard itself
        row.evidence = {"errors": [internal_error(exc)]}
        return
    row.provenance, row.generator, row.source_type = found.kind, found.generator, found.source_type
    row.c2pa_state, row.evidence = found.c2pa_state, found.evidence or None
    item.declared = found.declared


def _decode(classifier: Classifier, trust: TrustAnchors | None, item: _Fetched) -> np.ndarray | None:
    """The views of a fetched image (its size and format go on the row) and its provenance, or None;
    drops the bytes."""
    data, item.data = item.data, None
    if data is None:
        return None
    _read_provenance(item, data, trust)
    try:
        decoded = classifier.decode(data)
    except Exception as exc:  # every failure must become a row, never a lost image
        kind = getattr(exc, "error_kind", None)
        item.row.error_kind, item.row.error = (
            (kind, str(exc)) if kind else (ErrorKind.INTERNAL, internal_error(exc))
        )
        return None
    item.row.width, item.row.height, item.row.format = decoded.width, decoded.height, decoded.format
    item.row.thumbnail = decoded.thumbnail
    item.boxes = decoded.boxes
    return decoded.views


def _reuse_known(db: Database, items: Iterable[_Fetched], model_id: int, window: int) -> Iterator[_Fetched]:
    """``items``, with the scores ``model_id`` already gave the same content filled in (those images are
    not decoded); one query per ``window`` items."""
    it = iter(items)
    while batch := list(islice(it, window)):
        by_content: dict[str, list[_Fetched]] = {}
        for item in batch:
            if item.data is not None and item.row.sha256 is not None:
                by_content.setdefault(item.row.sha256, []).append(item)
        for sha256, known in known_scores(db, by_content.keys(), model_id).items():
            for item in by_content[sha256]:
                item.data = None
                for column, value in known.items():
                    setattr(item.row, column, value)
        yield from batch
