"""Image sources: parse a source argument, enumerate its image refs lazily, fetch one ref's bytes.

Sources: a local file or directory, ``s3://bucket/prefix``, a single ``http(s)://`` URL, or a URL list
(``urls:PATH``, or a local file ending in .txt/.csv/.urls/.lst). One table, ``_SCHEMES``, says for each
scheme how a source argument opens and how a ref fetches; text without a scheme is a local path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from aiscan.jobs.errors import SourceError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources.base import Fetched, Source
from aiscan.jobs.sources.http import fetch_url
from aiscan.jobs.sources.local import LocalSource, read_local
from aiscan.jobs.sources.urllist import LIST_SUFFIXES, UrlListSource, UrlSource
from aiscan.jobs.sources.urltext import INVALID_PREFIX, not_http, redact_url

_SCHEME_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Schemes written without "//"; any other "name:" is part of a local file name.
_BARE_SCHEMES = ("urls:", INVALID_PREFIX)


@dataclass(frozen=True)
class _Scheme:
    """What text with one scheme means as a source argument and as an image ref."""

    open: Callable[[str, Settings], Source]
    fetch: Callable[[str, Settings], Fetched]


def _open_path(path: str, settings: Settings) -> Source:
    expanded = os.path.expanduser(path)
    if expanded.lower().endswith(LIST_SUFFIXES) and os.path.isfile(expanded):
        return UrlListSource(expanded)
    return LocalSource(path, follow_links_outside_root=settings.follow_links_outside_root)


def _fetch_path(path: str, settings: Settings) -> Fetched:
    return Fetched(read_local(path, settings.max_image_bytes))


def _open_s3(spec: str, settings: Settings) -> Source:
    from aiscan.jobs.sources.s3 import S3Source  # boto3 is slow to import; only S3 users pay for it

    return S3Source(spec, settings)


def _fetch_s3(ref: str, settings: Settings) -> Fetched:
    from aiscan.jobs.sources.s3 import fetch_s3

    return fetch_s3(ref, settings)


def _open_url(spec: str, settings: Settings) -> Source:
    return UrlSource(spec)


def _open_url_list(spec: str, settings: Settings) -> Source:
    return UrlListSource(spec[len("urls:") :])


def _open_file_url(spec: str, settings: Settings) -> Source:
    return _open_path(spec[len("file://") :], settings)


def _fetch_file_url(ref: str, settings: Settings) -> Fetched:
    return _fetch_path(ref[len("file://") :], settings)


def _unsupported(spec: str, settings: Settings) -> Source:
    raise SourceError(
        f"unsupported source {redact_url(spec)!r}: give a local file or directory, s3://bucket/prefix, "
        "an http(s) URL or urls:LIST"
    )


def _not_fetchable(ref: str, settings: Settings) -> Fetched:
    # refs with another scheme come from URL lists: bad_url rows, never local paths or S3 objects
    raise not_http(ref)


_HTTP = _Scheme(_open_url, fetch_url)
_LOCAL = _Scheme(_open_path, _fetch_path)
_OTHER = _Scheme(_unsupported, _not_fetchable)

_SCHEMES: dict[str, _Scheme] = {
    "s3": _Scheme(_open_s3, _fetch_s3),
    "http": _HTTP,
    "https": _HTTP,
    "file": _Scheme(_open_file_url, _fetch_file_url),
    "urls": _Scheme(_open_url_list, _not_fetchable),
    INVALID_PREFIX.rstrip(":"): _OTHER,
}


def _scheme(text: str) -> _Scheme:
    """The table entry for ``text``: its scheme's, ``_OTHER`` for an unknown one, ``_LOCAL`` for none."""
    if m := _SCHEME_URL.match(text):
        return _SCHEMES.get(m.group(1).lower(), _OTHER)
    lower = text.lower()
    for prefix in _BARE_SCHEMES:
        if lower.startswith(prefix):
            return _SCHEMES[prefix.rstrip(":")]
    return _LOCAL


def open_source(spec: str, settings: Settings) -> Source:
    """The source named by a CLI argument; raises SourceError for one that cannot be scanned."""
    return _scheme(spec).open(spec, settings)


def fetch(ref: str, settings: Settings) -> Fetched:
    """The bytes behind one image ref; raises FetchError with an error kind, or TransientFetchError
    when the storage backend is down."""
    return _scheme(ref).fetch(ref, settings)
