"""Typed errors of the model package, and ``ErrorKind``: every ``error_kind`` a result row can carry.

Keras-free, so every package (jobs, worker, training) can name error kinds without loading a model.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorKind(StrEnum):
    """Why an image has no score; stored in ``results.error_kind`` and documented in the README."""

    # decoding (aiscan.model.decode)
    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED = "truncated"
    TOO_LARGE = "too_large"
    UNSUPPORTED = "unsupported"
    # fetching (aiscan.jobs.sources)
    MISSING = "missing"
    UNREADABLE = "unreadable"
    IO_ERROR = "io_error"
    BAD_URL = "bad_url"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    REFUSED_ADDRESS = "refused_address"
    BAD_CONTENT_TYPE = "bad_content_type"
    TLS_ERROR = "tls_error"
    FORBIDDEN = "forbidden"
    S3_ERROR = "s3_error"
    # whole chunks that could not run (aiscan.jobs.pipeline, aiscan.worker); TIMEOUT too
    WORKER_LOST = "worker_lost"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class ModelError(Exception):
    """A problem with a model file or its conventions that a user can act on."""


class DecodeError(Exception):
    """An image that cannot be decoded; each subclass names its ``error_kind`` for result rows."""

    error_kind: ClassVar[ErrorKind]


class NotAnImage(DecodeError):
    error_kind = ErrorKind.NOT_AN_IMAGE


class Truncated(DecodeError):
    error_kind = ErrorKind.TRUNCATED


class TooLarge(DecodeError):
    error_kind = ErrorKind.TOO_LARGE


class Unsupported(DecodeError):
    error_kind = ErrorKind.UNSUPPORTED
