"""`--tag-objects`: each scored S3 image's verdict written onto its object, beside the chunk's scoring.

Tagging runs on a small thread pool of its own, so a chunk's images are tagged while the next ones are
still being scored; the chunk waits for every tag before it commits. A failure is the row's ``tag_error``
and never changes its score or its ``error_kind``.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from aiscan.jobs.errors import TagError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources.s3_tags import tag_object, tag_value
from aiscan.jobs.sources.urltext import internal_error
from aiscan.jobs.store.models import ResultRow

VERDICT_TAG = "aiscan-verdict"
P_REAL_TAG = "aiscan-p-real"
MODEL_TAG = "aiscan-model"
# Tagging is two small requests per object: a few threads keep up with any model's pace.
MAX_TAGGERS = 8


def row_tags(row: ResultRow, model_ref: str) -> dict[str, str]:
    """The tags an image's row puts on its object: verdict, p_real (4 places; empty for errors), model."""
    p_real = "" if row.p_real is None or row.error_kind else f"{row.p_real:.4f}"
    return {
        VERDICT_TAG: tag_value(row.verdict or ""),
        P_REAL_TAG: p_real,
        MODEL_TAG: tag_value(model_ref),
    }


class ObjectTagger:
    """Tags the objects of the rows handed to :meth:`submit` (s3:// refs only); use it as a context manager,
    whose exit waits for every tag."""

    def __init__(self, settings: Settings, model_ref: str) -> None:
        self._settings = settings
        self._model_ref = model_ref
        self._pool = ThreadPoolExecutor(
            max_workers=min(MAX_TAGGERS, settings.fetch_concurrency), thread_name_prefix="aiscan-tag"
        )
        self._pending: list[Future[None]] = []

    def submit(self, row: ResultRow) -> None:
        """Tag the row's object in the background; other refs (files, URLs) have no object to tag."""
        if row.image_uri.startswith("s3://"):
            self._pending.append(self._pool.submit(self._tag, row))

    def _tag(self, row: ResultRow) -> None:
        try:
            tag_object(row.image_uri, row_tags(row, self._model_ref), self._settings)
        except TagError as exc:
            row.tag_error = str(exc)
        except Exception as exc:  # a bug in tagging costs the tag, never the image's row
            row.tag_error = internal_error(exc)

    def __enter__(self) -> ObjectTagger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # On an error the tags already started finish; the queued ones are dropped with the chunk.
        self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)
        for future in self._pending:
            if not future.cancelled():
                future.result()
