"""HTTP fetching behind the SSRF guard: pinned addresses, redirects followed by hand, retries and caps.

Every hop resolves the host once, refuses private and other non-public addresses (``netguard``), and
then connects to exactly the address it checked (original Host header and SNI), so a DNS answer that
changes between the check and the connection cannot reach an internal service.
"""

from __future__ import annotations

import random
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx

from aiscan.jobs.errors import FetchError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources import netguard
from aiscan.jobs.sources.base import Fetched
from aiscan.jobs.sources.capped import read_capped
from aiscan.jobs.sources.clients import process_client
from aiscan.jobs.sources.deadline import fetch_deadline, time_left
from aiscan.jobs.sources.urltext import has_credentials, is_http_url, not_http
from aiscan.model.errors import ErrorKind

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_REFUSED_TYPES = frozenset({"application/json", "application/xhtml+xml"})
_BACKOFF_BASE = 0.2
_BACKOFF_CAP = 5.0
_RETRY_AFTER_CAP = 5.0
_HOST = re.compile(r"^[A-Za-z0-9._-]+$")
# DNS limits: IDNA encoding (getaddrinfo) raises UnicodeError past them
_MAX_LABEL, _MAX_HOST = 63, 253
_HEADERS = {
    "User-Agent": "aiscan/0.1 (image audit)",
    "Accept": "image/*, application/octet-stream;q=0.9, */*;q=0.5",
    # images do not compress; identity keeps Content-Length meaningful and rules out decompression bombs
    "Accept-Encoding": "identity",
}


def http_client(settings: Settings) -> httpx.Client:
    """The process's httpx client for this pool size (thread-safe); timeouts are set per request."""
    size = max(32, 2 * settings.fetch_concurrency)
    return process_client(
        ("httpx", size),
        lambda: httpx.Client(
            follow_redirects=False,
            # environment proxies would connect on our behalf and bypass the address pinning
            trust_env=False,
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
        ),
    )


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix."""

    def __init__(self, kind: ErrorKind, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.retry_after = kind, message, retry_after


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    https: bool
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int
    host_header: str


@dataclass(frozen=True)
class _Redirect:
    location: str


def _target(url: str) -> _Target:
    """The parsed URL, or FetchError(bad_url); never echoes the URL (it may hold secrets)."""
    if not is_http_url(url):
        raise not_http(url)
    if has_credentials(url):
        raise FetchError(ErrorKind.BAD_URL, "URLs with credentials (user:password@) are not supported")
    try:
        parts = urlsplit(url)
        port = parts.port
        u = httpx.URL(url)
        host = u.raw_host.decode("ascii")
    except (ValueError, httpx.InvalidURL, UnicodeError):
        raise FetchError(ErrorKind.BAD_URL, "not a valid URL (host or port)") from None
    if u.userinfo:
        raise FetchError(ErrorKind.BAD_URL, "URLs with credentials (user:password@) are not supported")
    is_ip6 = ":" in host
    if not host or not (is_ip6 or _HOST.match(host)):
        raise FetchError(ErrorKind.BAD_URL, "not a valid URL: bad or missing host name")
    if not is_ip6 and (len(host) > _MAX_HOST or any(len(label) > _MAX_LABEL for label in host.split("."))):
        raise FetchError(ErrorKind.BAD_URL, "not a valid URL: host name or one of its labels is too long")
    https = u.scheme == "https"
    default = 443 if https else 80
    port = port or default
    shown = f"[{host}]" if is_ip6 else host
    return _Target(u, https, host, port, shown if port == default else f"{shown}:{port}")


def _retry_after(headers: httpx.Headers) -> float | None:
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(raw).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(seconds, 0.0), _RETRY_AFTER_CAP)


_NO_ANSWER = "no complete answer"


def _until(deadline: float, settings: Settings, chunks: Iterator[bytes]) -> Iterator[bytes]:
    # checked after every network read, so a server dripping bytes cannot hold the fetch open
    for chunk in chunks:
        time_left(deadline, settings, _NO_ANSWER)
        yield chunk


def _read_body(resp: httpx.Response, settings: Settings, deadline: float) -> bytes:
    """The body, refused early by Content-Type, Content-Encoding or Content-Length; capped while streaming."""
    ctype = resp.headers.get("content-type")
    if ctype:
        mime = ctype.split(";", 1)[0].strip().lower()[:100]
        if mime.startswith("text/") or mime in _REFUSED_TYPES:
            raise FetchError(ErrorKind.BAD_CONTENT_TYPE, f"the server sent {mime}, not an image")
    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # we asked for identity; inflating what came anyway could turn kilobytes into gigabytes
        raise FetchError(
            ErrorKind.HTTP_ERROR,
            f"the server sent a {encoding[:40]!r}-encoded body, not the identity asked for",
        )
    limit = settings.max_image_bytes
    length = resp.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise FetchError(ErrorKind.TOO_LARGE, f"Content-Length is {int(length)} bytes, the limit is {limit}")
    # raw reads: each chunk is what one network read returned, and nothing is decoded
    return read_capped(_until(deadline, settings, resp.iter_raw()), limit, "the body")


def _request(target: _Target, address: str, settings: Settings, deadline: float) -> bytes | _Redirect:
    """One GET sent to ``address`` (already checked) for ``target``'s host."""
    headers = {**_HEADERS, "Host": target.host_header}
    # SNI and certificate checks use the real host name even though the socket goes to the IP
    extensions = {"sni_hostname": target.host} if target.https else None
    # no connect or read waits longer than the time left when the request starts (nor one URL timeout)
    timeout = httpx.Timeout(min(settings.url_timeout, time_left(deadline, settings, _NO_ANSWER)))
    url = target.url.copy_with(host=address)
    try:
        with http_client(settings).stream(
            "GET", url, headers=headers, timeout=timeout, extensions=extensions
        ) as resp:
            return _response(resp, settings, deadline)
    except httpx.InvalidURL:
        # httpx parses a redirect's Location itself (data:, javascript: ...) before we can look at it
        raise FetchError(ErrorKind.BAD_URL, "redirect to an invalid or non-http(s) Location") from None


def _response(resp: httpx.Response, settings: Settings, deadline: float) -> bytes | _Redirect:
    status = resp.status_code
    if status in _REDIRECTS:
        location = resp.headers.get("location")
        if not location:
            raise FetchError(ErrorKind.HTTP_ERROR, f"HTTP {status} redirect without a Location header")
        return _Redirect(location)
    if status == 429 or status >= 500:
        raise _Retry(ErrorKind.HTTP_ERROR, f"HTTP {status}", _retry_after(resp.headers))
    if status in (404, 410):
        raise FetchError(ErrorKind.MISSING, f"HTTP {status}")
    if not 200 <= status < 300:
        raise FetchError(ErrorKind.HTTP_ERROR, f"HTTP {status}")
    return _read_body(resp, settings, deadline)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _attempt(target: _Target, settings: Settings, deadline: float) -> bytes | _Redirect:
    """Resolve, check and request; on a connect failure the host's next checked address is tried."""
    try:
        addresses = netguard.resolve(target.host, target.port, settings)
    except netguard.DNSUnavailable as exc:
        raise _Retry(ErrorKind.CONNECTION_ERROR, str(exc)) from None
    except UnicodeError:  # a host name IDNA cannot encode
        raise FetchError(ErrorKind.BAD_URL, "not a valid URL: the host name cannot be encoded") from None
    for i, address in enumerate(addresses):
        try:
            return _request(target, address, settings, deadline)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            if i == len(addresses) - 1:
                raise
    raise AssertionError("getaddrinfo returned no address")  # pragma: no cover


def _get(target: _Target, settings: Settings, deadline: float) -> bytes | _Redirect:
    """One hop, retried with exponential backoff on 5xx, 429, connect failures and timeouts, while the
    fetch's deadline leaves time."""
    attempts = settings.url_retries + 1
    failure = _Retry(ErrorKind.CONNECTION_ERROR, "no attempt made")
    for attempt in range(attempts):
        try:
            return _attempt(target, settings, deadline)
        except _Retry as exc:
            failure = exc
        except httpx.TimeoutException:
            time_left(deadline, settings, _NO_ANSWER)
            failure = _Retry(ErrorKind.TIMEOUT, f"no answer within {settings.url_timeout:g} s")
        except httpx.TransportError as exc:
            if _caused_by(exc, ssl.SSLError):
                # a certificate or handshake failure is not going to change on the next try
                raise FetchError(ErrorKind.TLS_ERROR, f"TLS failure with {target.host}: {exc}") from None
            failure = _Retry(ErrorKind.CONNECTION_ERROR, f"connection to {target.host} failed: {exc}")
        except httpx.HTTPError as exc:  # e.g. a body whose Content-Encoding does not decode
            raise FetchError(ErrorKind.HTTP_ERROR, f"bad response: {exc}") from None
        if attempt + 1 < attempts:
            delay = failure.retry_after
            if delay is None:
                delay = min(_BACKOFF_BASE * 2**attempt, _BACKOFF_CAP)
                delay += random.uniform(0, delay / 10)  # spread out workers that failed together
            if delay >= deadline - time.monotonic():
                attempts = attempt + 1  # no time left for another attempt
                break
            time.sleep(delay)
    suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
    raise FetchError(failure.kind, failure.message + suffix)


def fetch_url(url: str, settings: Settings) -> Fetched:
    """The body of an http(s) URL, following redirects by hand so each hop passes the SSRF guard.

    Every hop, attempt and backoff shares one deadline (``deadline.FETCH_TIME_FACTOR`` URL timeouts)."""
    deadline = fetch_deadline(settings)
    current = url
    for hop in range(settings.url_max_redirects + 1):
        try:
            target = _target(current)
            outcome = _get(target, settings, deadline)
        except FetchError as exc:
            if hop == 0:
                raise
            raise FetchError(exc.error_kind, f"after {hop} redirect(s): {exc}") from None
        if isinstance(outcome, bytes):
            return Fetched(outcome)
        try:
            current = str(target.url.join(outcome.location))
        except (httpx.InvalidURL, ValueError):
            raise FetchError(ErrorKind.BAD_URL, "redirect to an invalid Location") from None
    raise FetchError(ErrorKind.TOO_MANY_REDIRECTS, f"more than {settings.url_max_redirects} redirects")
