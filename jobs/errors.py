"""Typed errors of the jobs package, with messages a person can act on."""

from __future__ import annotations


class AiscanError(Exception):
    """Base of the errors the CLI reports as one line and a non-zero exit."""


class ConfigError(AiscanError):
    """A setting has a value aiscan cannot use."""


class NotFound(AiscanError):
    """A job, model or source that was asked for does not exist."""


class SourceError(AiscanError):
    """A source argument that cannot be scanned (missing directory, unknown scheme)."""


class FetchError(Exception):
    """One image ref could not be fetched; becomes a result row with ``error_kind``."""

    def __init__(self, error_kind: str, message: str) -> None:
        super().__init__(message)
        self.error_kind = error_kind


class TransientFetchError(AiscanError):
    """The storage backend is unavailable; the task should be retried rather than record failed rows."""
