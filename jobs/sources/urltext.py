"""URL text without the network: the http(s) test, credential redaction and the refusal of other schemes."""

from __future__ import annotations

import re

from aiscan.jobs.errors import FetchError
from aiscan.model.errors import ErrorKind

# A URL-list line that is not an http(s) URL keeps its text behind this prefix, so that it ends as a
# "bad_url" row instead of being read as a local path or an S3 object.
INVALID_PREFIX = "invalid-url:"

_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
# A URL inside free text (a log line, an error message): its userinfo and its query string.
_EMBEDDED_CREDENTIALS = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s@'\"<>]*@")
_EMBEDDED_QUERY = re.compile(r"(?i)\b(https?://[^\s?#'\"<>]*)\?[^\s#'\"<>]*")
QUERY_MARK = "?<query redacted>"
# The longest message an unexpected exception leaves on a row.
MAX_MESSAGE = 500
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def is_http_url(text: str) -> bool:
    return text[:8].lower().startswith(("http://", "https://"))


def has_credentials(url: str) -> bool:
    return _CREDENTIALS.match(url) is not None


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``: safe for refs, messages and logs."""
    return _CREDENTIALS.sub(r"\1***@", url)


def redact_text(text: str) -> str:
    """``text`` with every URL's ``user:password@`` and query string (presigned signatures, tokens)
    hidden: what a log line may show. A ref itself keeps its query, which fetching it needs."""
    if "://" not in text:
        return text
    return _EMBEDDED_QUERY.sub(lambda m: m.group(1) + QUERY_MARK, _EMBEDDED_CREDENTIALS.sub(r"\1***@", text))


def not_http(url: str) -> FetchError:
    """bad_url for a ref or redirect that is not http(s); the URL is not echoed (it may hold secrets)."""
    m = _SCHEME.match(url.removeprefix(INVALID_PREFIX))
    what = f"a {m.group(1).lower()!r} URL" if m and "://" in url else "not a URL"
    return FetchError(ErrorKind.BAD_URL, f"{what}: only http and https URLs can be fetched")


def internal_error(exc: BaseException) -> str:
    """An unexpected exception as a row's message: its type and text, URL queries and userinfo hidden."""
    return f"{type(exc).__name__}: {redact_text(str(exc))}"[:MAX_MESSAGE]
