"""What the pages and the JSON API share: one check of an image, jobs, reports and models.

Built once per app from its settings; the routes only translate HTTP to these calls and back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from aiscan.jobs.artifacts import classifier_factory
from aiscan.jobs.console import model_record
from aiscan.jobs.errors import AiscanError, FetchError
from aiscan.jobs.reports import COLUMNS
from aiscan.jobs.scoring import score_bytes, trust_anchors
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources import fetch
from aiscan.jobs.store.browse import ResultFilter, Sort, results_page, thumbnail_of
from aiscan.jobs.store.db import Database, open_database
from aiscan.jobs.store.models import DetectorModel
from aiscan.jobs.store.queries import get_job, list_models, resolve_model
from aiscan.jobs.summary import job_summary, recent_job_summaries
from aiscan.jobs.web.runner import EmbeddedRunner

# What a check returns: the report's columns that describe one image (not its job, ref, errors or tags).
CHECK_FIELDS = tuple(
    c for c in COLUMNS if c not in ("image_uri", "error_kind", "error", "tag_error", "model", "classified_at")
)


CHECK_BATCH_SIZE = 1


class WebError(AiscanError):
    """An error a request caused, with the HTTP status it maps to and, for images, the error kind."""

    status = 400

    def __init__(self, message: str, error_kind: str | None = None) -> None:
        super().__init__(message)
        self.error_kind = error_kind


class BadInput(WebError):
    """A request the app cannot act on: no file, a URL that is not http(s), unknown filter values."""


class ImageRejected(WebError):
    """The bytes (uploaded or fetched) are not an image the model can score; ``error_kind`` says why."""


class UploadTooLarge(WebError):
    """A request body beyond AISCAN_MAX_UPLOAD_BYTES."""

    status = 413


class WebServices:
    """The model, the database and the job runner of one app; every method is safe to call from threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db: Database = open_database(settings.database_url)
        # Checks score one image: batch 1, since the runner pads every batch to its full size (a batch
        # of 32 would cost a single check 32 images' work).
        self._classifier_for = classifier_factory(settings, CHECK_BATCH_SIZE)
        # Loaded once per model and process; the model's file is not hashed again on every check.
        self._classifiers: dict[int, Any] = {}
        # One check at a time per process: the model's memory and its two cores are shared.
        self._check_lock = threading.Lock()
        self._runner = EmbeddedRunner(settings) if not settings.broker_url else None

    def close(self) -> None:
        """Stop the embedded runner after the job it is running (if any)."""
        if self._runner is not None:
            self._runner.stop()

    # ------------------------------------------------------------ checks

    def classify(self, data: bytes, name: str = "upload") -> dict[str, Any]:
        """Score one image's bytes with the default model: the report's columns for it, and the model."""
        if not data:
            raise BadInput("the file is empty: choose an image to check")
        with self.db.session() as s:
            model = resolve_model(s, None)
            s.expunge(model)
        with self._check_lock:
            classifier = self._classifiers.get(model.id)
            if classifier is None:
                classifier = self._classifiers[model.id] = self._classifier_for(model)
            row = score_bytes(classifier, trust_anchors(self.settings), name, data)
        if row.error_kind is not None:
            raise ImageRejected(row.error or "this file cannot be checked", row.error_kind)
        values = asdict(row)
        result = {column: values[column] for column in CHECK_FIELDS}
        result["model"] = model.ref
        return result

    def fetch_url(self, url: str) -> bytes:
        """The bytes at an http(s) URL, fetched through the sources' SSRF guard."""
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise BadInput("give an http:// or https:// URL of an image")
        try:
            return fetch(url, self.settings).data
        except FetchError as exc:
            raise ImageRejected(str(exc), str(exc.error_kind)) from None

    def classify_url(self, url: str) -> dict[str, Any]:
        """Fetch an http(s) URL through the sources' SSRF guard, then check its bytes."""
        return self.classify(self.fetch_url(url), url.strip())

    # ------------------------------------------------------------ jobs

    def submit(self, sources: list[str], model: str | None) -> int:
        """Create a job and queue it: on the embedded runner, or to the workers with a broker."""
        sources = [source.strip() for source in sources if source.strip()]
        if not sources:
            raise BadInput("give at least one source to scan")
        if self._runner is not None:
            return self._runner.submit(sources, model)
        from aiscan.jobs.app import CeleryQueue, make_app
        from aiscan.jobs.submit import submit_job

        return submit_job(
            self.db,
            self.settings,
            CeleryQueue(make_app(self.settings)).send,
            sources,
            model_ref=model,
            chunk_size=self.settings.chunk_size,
        )

    def job(self, job_id: int) -> dict[str, Any]:
        """The summary `aiscan jobs show --json` prints; NotFound for an unknown job."""
        with self.db.session() as s:
            return job_summary(s, job_id)

    def jobs(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` most recent jobs' summaries, newest first."""
        with self.db.session() as s:
            return recent_job_summaries(s, limit)

    def require_job(self, job_id: int) -> None:
        """NotFound unless job ``job_id`` exists."""
        with self.db.session() as s:
            get_job(s, job_id)

    def models(self) -> list[dict[str, Any]]:
        """Registered models as `aiscan model list --json` gives them, without their server paths."""
        with self.db.session() as s:
            records = [model_record(row) for row in list_models(s)]
        for record in records:
            record.pop("path", None)
        return records

    def default_model(self) -> DetectorModel | None:
        """The model a check uses, or None before any is imported."""
        with self.db.session() as s:
            try:
                model = resolve_model(s, None)
            except AiscanError:
                return None
            s.expunge(model)
            return model

    def report_lines(self, job_id: int, fmt: str) -> Iterator[str]:
        """The job's report in ``fmt`` (csv, jsonl or html) as text chunks, written as the rows stream out."""
        from aiscan.jobs.web.streaming import report_chunks

        self.require_job(job_id)
        return report_chunks(self.db, job_id, fmt)

    # ------------------------------------------------------------ browsing (jobs.store.browse)

    def results(
        self,
        job_id: int,
        *,
        limit: int,
        cursor: str | None,
        verdict: str | None = None,
        label: str | None = None,
        error_kind: str | None = None,
        sort: Sort = "p_real",
    ) -> dict[str, Any]:
        """One page of a job's results: {"items": [...], "next_cursor": str | None}."""
        filters = ResultFilter(verdict=verdict, label=label, error_kind=error_kind)
        with self.db.session() as s:
            get_job(s, job_id)
            page = results_page(s, job_id, limit=limit, cursor=cursor, filters=filters, sort=sort)
        return {"items": page.items, "next_cursor": page.next_cursor}

    def thumbnail(self, job_id: int, result_id: int) -> bytes | None:
        """The stored JPEG thumbnail of one result of a job, or None."""
        with self.db.session() as s:
            return thumbnail_of(s, job_id, result_id)
