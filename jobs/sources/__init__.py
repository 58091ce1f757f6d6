"""Image sources: parse a source argument, enumerate its image refs lazily, fetch one ref's bytes.

Sources: a local file or directory, ``s3://bucket/prefix``, a single ``http(s)://`` URL, or a URL list
(``urls:PATH``, or a local file ending in .txt/.csv/.urls/.lst).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from aiscan.jobs.errors import SourceError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources.local import LocalSource, read_local
from aiscan.jobs.sources.urls import (
    INVALID_PREFIX,
    LIST_SUFFIXES,
    UrlListSource,
    UrlSource,
    fetch_url,
    is_http_url,
    redact_url,
)

_SCHEME_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class Source(Protocol):
    spec: str
    skipped: int

    def iter_refs(self) -> Iterator[str]: ...


@dataclass(frozen=True)
class Fetched:
    """The bytes behind one image ref, with the object's ETag where the source has one."""

    data: bytes
    etag: str | None = None


def open_source(spec: str, settings: Settings) -> Source:
    """The source named by a CLI argument; raises SourceError for one that cannot be scanned."""
    lower = spec.lower()
    if lower.startswith("s3://"):
        from aiscan.jobs.sources.s3 import S3Source  # boto3 is slow to import; only S3 users pay for it

        return S3Source(spec, settings)
    if is_http_url(spec):
        return UrlSource(spec)
    if lower.startswith("urls:"):
        return UrlListSource(spec[len("urls:") :])
    if lower.startswith("file://"):
        spec = spec[len("file://") :]
    elif _SCHEME_URL.match(spec):
        raise SourceError(
            f"unsupported source {redact_url(spec)!r}: give a local file or directory, s3://bucket/prefix, "
            "an http(s) URL or urls:LIST"
        )
    path = os.path.expanduser(spec)
    if path.lower().endswith(LIST_SUFFIXES) and os.path.isfile(path):
        return UrlListSource(path)
    return LocalSource(spec)


def fetch(ref: str, settings: Settings) -> Fetched:
    """The bytes behind one image ref (S3 object, http(s) URL or local path); raises FetchError with an
    error kind, or TransientFetchError when the storage backend is down."""
    if ref[:5].lower() == "s3://":
        from aiscan.jobs.sources.s3 import fetch_s3

        data, etag = fetch_s3(ref, settings)
        return Fetched(data, etag)
    if ref[:7].lower() == "file://":
        return Fetched(read_local(ref[len("file://") :], settings.max_image_bytes))
    if is_http_url(ref) or _SCHEME_URL.match(ref) or ref.startswith(INVALID_PREFIX):
        # fetch_url refuses anything that is not http(s) as "bad_url"
        data, _ = fetch_url(ref, settings)
        return Fetched(data)
    return Fetched(read_local(ref, settings.max_image_bytes))
