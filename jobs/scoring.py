"""A chunk's refs -> result rows: fetch and hash, reuse scores of known content, decode and score.

The scheduling (read-ahead, decode pool, full batches) is `model.batching`'s; what is a job's lives here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from aiscan.jobs.errors import FetchError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources import fetch
from aiscan.jobs.store.db import Database
from aiscan.jobs.store.models import ResultRow
from aiscan.jobs.store.operations import known_scores
from aiscan.jobs.tasks import Classifier, TaskContext
from aiscan.model.batching import read_ahead, read_window, score_batches
from aiscan.model.errors import ErrorKind


@dataclass(slots=True)
class _Fetched:
    row: ResultRow
    # The image's bytes until they are decoded; None after a failed fetch or for a reused score.
    data: bytes | None
    # Where each view the model scores lies in the image.
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)


def score_refs(
    ctx: TaskContext, classifier: Classifier, refs: list[str], *, reuse_from: int | None = None
) -> list[ResultRow]:
    """One row per ref, in the order they were handled; fetch and decode failures are rows with an error.

    With ``reuse_from`` (a model id), images whose content that model already scored reuse the result.
    """
    fetch_one = partial(_fetch, ctx.settings)
    workers = ctx.settings.fetch_concurrency
    if reuse_from is None:
        fetched = read_ahead(fetch_one, refs, workers=workers, window=read_window(classifier))
    else:
        # Every ref is fetched and hashed first, so one query finds all content already scored.
        every = list(read_ahead(fetch_one, refs, workers=workers, window=len(refs)))
        fetched = iter(_reuse_known(ctx.db, every, reuse_from))
    rows = []
    for item, scores in score_batches(
        fetched, partial(_decode, classifier), classifier, on_progress=ctx.on_progress
    ):
        if scores is not None:
            _score_row(classifier, item, scores)
        rows.append(item.row)
    return rows


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
    except FetchError as exc:
        row.error_kind, row.error = exc.error_kind, str(exc)
        return _Fetched(row, None)
    row.sha256 = hashlib.sha256(fetched.data).hexdigest()
    row.byte_size, row.etag = len(fetched.data), fetched.etag
    return _Fetched(row, fetched.data)


def _decode(classifier: Classifier, item: _Fetched) -> np.ndarray | None:
    """The views of a fetched image (its size and format go on the row), or None; drops the bytes."""
    data, item.data = item.data, None
    if data is None:
        return None
    try:
        decoded = classifier.decode(data)
    except Exception as exc:  # every failure must become a row, never a lost image
        item.row.error_kind, item.row.error = getattr(exc, "error_kind", ErrorKind.INTERNAL), str(exc)
        return None
    item.row.width, item.row.height, item.row.format = decoded.width, decoded.height, decoded.format
    item.boxes = decoded.boxes
    return decoded.views


def _reuse_known(db: Database, items: list[_Fetched], model_id: int) -> list[_Fetched]:
    """Fill in the scores ``model_id`` already gave the same content; those images are not decoded."""
    by_content: dict[str, list[_Fetched]] = {}
    for item in items:
        if item.data is not None and item.row.sha256 is not None:
            by_content.setdefault(item.row.sha256, []).append(item)
    for sha256, known in known_scores(db, by_content.keys(), model_id).items():
        for item in by_content[sha256]:
            item.data = None
            for column, value in known.items():
                setattr(item.row, column, value)
    return items
