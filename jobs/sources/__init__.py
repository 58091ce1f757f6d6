"""Image sources: parse a source argument, enumerate its image refs lazily, fetch one ref's bytes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from jobs.errors import SourceError
from jobs.settings import Settings
from jobs.sources.local import LocalSource, read_local


class Source(Protocol):
    spec: str
    skipped: int

    def iter_refs(self) -> Iterator[str]: ...


def open_source(spec: str) -> Source:
    """The source named by a CLI argument; raises SourceError for one that cannot be scanned."""
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme in ("", "file"):
        return LocalSource(spec.removeprefix("file://"))
    raise SourceError(f"unsupported source {spec!r}: give a local file or directory")


def fetch_bytes(ref: str, settings: Settings) -> bytes:
    """The bytes behind one image ref; raises FetchError with an error kind."""
    return read_local(ref, settings.max_image_bytes)
