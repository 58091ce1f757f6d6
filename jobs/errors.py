"""Typed errors of the jobs package, with messages a person can act on.

Every error aiscan raises on purpose, and where it ends::

    Exception
    +-- AiscanError ............ CLI: one line "error: ..." on stderr, exit status 1
    |   +-- ConfigError ........ a setting aiscan cannot use
    |   +-- NotFound ........... a job, model or source that was asked for does not exist
    |   +-- SourceError ........ a source argument that cannot be scanned; a job planned with it fails
    |   +-- DatabaseError ...... (jobs.store.db) database unreachable or its schema is not at head
    |   +-- Unavailable ........ a service down just now (web API: 503): DatabaseUnavailable, BrokerError
    |   +-- BrokerError ........ (jobs.app) the broker cannot take a task; a job it refused is failed
    |   +-- ReportError ........ (jobs.reports) a report file that cannot be written where asked
    |   +-- BrowseError ........ (jobs.store.browse) a results page asked for with an unknown filter,
    |   |                        sort or limit (BadFilter), or a cursor it never handed out (BadCursor)
    |   +-- TransientFetchError  storage down: a worker retries the task with backoff and, after the
    |                            last retry, records the chunk's images as `unavailable` rows
    +-- FetchError ............. one image ref: a result row with its ``error_kind``, the job goes on
    +-- TagError ............... (--tag-objects) an S3 object that could not be tagged: its row's
    |                            ``tag_error``; the row's score and ``error_kind`` stay as they are
    +-- ModelError ............. (model.errors) CLI: one line, exit status 1
    |   +-- DatasetError ....... (training.dataset) a training folder aiscan cannot use
    |   +-- OptimizeError ...... (training.optimize) `model optimize` refused, AUCDropTooLarge among
    |                            them; nothing was registered
    +-- DecodeError ............ (model.errors) one image: a row with its class's ``error_kind``
        +-- NotAnImage, Truncated, TooLarge, Unsupported

Anything else reaching the CLI (OSError included) is still one line and exit status 1; only
`aiscan --traceback CMD` shows a traceback.

Retried before any of these surface: HTTP fetches retry 5xx, 429, timeouts and connection failures
(``AISCAN_URL_RETRIES``), boto3 retries S3 requests, and workers retry tasks on database outages.
A chunk that cannot run at all becomes rows of kind `worker_lost`, `timeout` or `internal`.
Every row kind is a member of :class:`aiscan.model.errors.ErrorKind`.
"""

from __future__ import annotations

from aiscan.model.errors import ErrorKind


class AiscanError(Exception):
    """Base of the errors the CLI reports as one line and a non-zero exit."""


class ConfigError(AiscanError):
    """A setting has a value aiscan cannot use."""


class NotFound(AiscanError):
    """A job, model or source that was asked for does not exist."""


class Unavailable(AiscanError):
    """A service aiscan needs is down just now (database, broker): trying again later may work."""


class SourceError(AiscanError):
    """A source argument that cannot be scanned (missing directory, unknown scheme)."""


class FetchError(Exception):
    """One image ref could not be fetched; becomes a result row with ``error_kind``."""

    def __init__(self, error_kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.error_kind = error_kind


class TagError(Exception):
    """Tagging one S3 object with its verdict failed; recorded as the row's ``tag_error``."""


class TransientFetchError(AiscanError):
    """The storage backend is unavailable; the task should be retried rather than record failed rows."""
