"""URL sources: lists of http(s) URLs (text or CSV files) and single URLs, fetched behind an SSRF guard.

Every hop of a fetch resolves the host once, refuses private and other non-public addresses, and then
connects to exactly the address it checked (original Host header and SNI), so a DNS answer that changes
between the check and the connection cannot reach an internal service.
"""

from __future__ import annotations

import csv
import functools
import ipaddress
import os
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import httpx

from aiscan.jobs.errors import FetchError, SourceError
from aiscan.jobs.settings import Settings

# Local files with these suffixes are read as URL lists rather than scanned as (non-image) files.
LIST_SUFFIXES = (".txt", ".csv", ".urls", ".lst")
# A URL-list line that is not an http(s) URL keeps its text behind this prefix, so that it ends as a
# "bad_url" row instead of being read as a local path or an S3 object.
INVALID_PREFIX = "invalid-url:"

_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_HOST = re.compile(r"^[A-Za-z0-9._-]+$")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_REFUSED_TYPES = frozenset({"application/json", "application/xhtml+xml"})
_BACKOFF_BASE = 0.2
_BACKOFF_CAP = 5.0
_RETRY_AFTER_CAP = 5.0
# read timeouts bound each chunk, not the whole body; this bounds a server that trickles bytes forever
_TOTAL_TIME_FACTOR = 10
_READ_CHUNK = 64 * 1024
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HEADERS = {
    "User-Agent": "aiscan/0.1 (image audit)",
    "Accept": "image/*, application/octet-stream;q=0.9, */*;q=0.5",
    # images do not compress; identity keeps Content-Length meaningful and rules out decompression bombs
    "Accept-Encoding": "identity",
}


def is_http_url(text: str) -> bool:
    return text[:8].lower().startswith(("http://", "https://"))


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``: safe for refs, messages and logs."""
    return _CREDENTIALS.sub(r"\1***@", url)


# -- sources ---------------------------------------------------------------------------------------


def _as_ref(text: str) -> str:
    text = redact_url(text)
    return text if is_http_url(text) else INVALID_PREFIX + text


class UrlSource:
    """A single http(s) URL given on the command line."""

    def __init__(self, url: str) -> None:
        url = url.strip()
        if _CREDENTIALS.match(url):
            raise SourceError(
                f"{redact_url(url)}: URLs with user:password@ are not supported "
                "(the password would be stored with the job)"
            )
        self.spec = url
        self.skipped = 0

    def iter_refs(self) -> Iterator[str]:
        yield self.spec


class UrlListSource:
    """A text file with one URL per line, or a CSV file with a ``url`` column, read lazily."""

    def __init__(self, path: str) -> None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise SourceError(f"no such URL list file: {path}")
        self.path = Path(os.path.abspath(p))
        self.spec = f"urls:{self.path}"
        self.skipped = 0
        self._url_column = self._detect_csv()

    def _open(self) -> TextIO:
        # utf-8-sig drops the BOM that spreadsheet exports put before the header
        return open(self.path, encoding="utf-8-sig", errors="replace", newline="")

    def _detect_csv(self) -> int | None:
        """The index of the ``url`` column when the file is a CSV, None for a plain list."""
        header = None
        try:
            with self._open() as fh:
                for line in fh:
                    if line.strip() and not line.lstrip().startswith("#"):
                        header = line
                        break
        except OSError as exc:
            raise SourceError(f"cannot read URL list {self.path}: {exc.strerror or exc}") from None
        fields = [f.strip().lower() for f in next(csv.reader([header]))] if header else []
        if "url" in fields:
            return fields.index("url")
        if self.path.suffix.lower() == ".csv" and header is not None:
            raise SourceError(f"{self.path}: a CSV URL list needs a header line with a 'url' column")
        return None

    def iter_refs(self) -> Iterator[str]:
        """The URLs in file order; non-http(s) entries become refs too, so they end as error rows."""
        with self._open() as fh:
            if self._url_column is None:
                for line in fh:
                    text = line.strip()
                    if not text or text.startswith("#"):
                        continue
                    # URLs hold no whitespace, so "  # ..." after one is a trailing comment
                    text = re.split(r"\s+#", text, maxsplit=1)[0]
                    yield _as_ref(text)
                return
            column, header_seen = self._url_column, False
            for row in csv.reader(fh):
                if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
                    continue
                if not header_seen:
                    header_seen = True
                    continue
                cell = row[column].strip() if column < len(row) else ""
                if cell:
                    yield _as_ref(cell)
                else:
                    self.skipped += 1


# -- the shared client -----------------------------------------------------------------------------

_client_lock = threading.Lock()
_client: httpx.Client | None = None


def _reset_after_fork() -> None:
    # a forked worker must not share pooled sockets (or a held lock) with its parent
    global _client, _client_lock
    _client, _client_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def http_client(settings: Settings) -> httpx.Client:
    """The process's one httpx client (thread-safe); timeouts are set per request from settings."""
    global _client
    client = _client
    if client is None:
        with _client_lock:
            if _client is None:
                size = max(32, 2 * settings.fetch_concurrency)
                _client = httpx.Client(
                    follow_redirects=False,
                    # environment proxies would connect on our behalf and bypass the address pinning
                    trust_env=False,
                    limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                )
            client = _client
    return client


# -- the SSRF guard --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``ip`` is not a public address (None when it is), looking inside IPv6 forms of IPv4 too."""
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            candidates.append(ip.ipv4_mapped)
        if ip.sixtofour:
            candidates.append(ip.sixtofour)
        if ip in _NAT64:
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    for a in candidates:
        for reason, flag in (
            ("loopback", a.is_loopback),
            ("link-local", a.is_link_local),
            ("multicast", a.is_multicast),
            ("unspecified", a.is_unspecified),
            ("private", a.is_private),
            ("reserved", a.is_reserved),
            ("non-public", not a.is_global),
        ):
            if flag:
                return reason
    return None


def check_address(host: str, address: str, settings: Settings) -> None:
    """Raise FetchError("refused_address") unless ``address`` may be connected to under ``settings``."""
    if settings.url_allow_private:
        return
    ip = ipaddress.ip_address(address)
    reason = _refusal(ip)
    if reason is None:
        return
    nets = _networks(settings.url_allow_networks)
    forms = [ip, *([ip.ipv4_mapped] if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else [])]
    if any(form in net for form in forms for net in nets):
        return
    shown = host if host == address else f"{host} ({address})"
    raise FetchError(
        "refused_address",
        f"refused to connect to {shown}: a {reason} address (allow it with AISCAN_URL_ALLOW_NETWORKS)",
    )


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.retry_after = kind, message, retry_after


def _resolve(host: str, port: int, settings: Settings) -> list[str]:
    """The addresses of ``host``, all of them checked: one refused address refuses the host."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise _Retry("connection_error", f"cannot resolve {host}: temporary DNS failure") from None
        raise FetchError("connection_error", f"cannot resolve host {host}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        check_address(host, address, settings)
    return addresses


# -- fetching --------------------------------------------------------------------------------------


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
    """The parsed URL, or FetchError("bad_url"); never echoes the URL (it may hold secrets)."""
    if not is_http_url(url):
        m = _SCHEME.match(url.removeprefix(INVALID_PREFIX))
        what = f"a {m.group(1).lower()!r} URL" if m and "://" in url else "not a URL"
        raise FetchError("bad_url", f"{what}: only http and https URLs can be fetched")
    if _CREDENTIALS.match(url):
        raise FetchError("bad_url", "URLs with credentials (user:password@) are not supported")
    try:
        parts = urlsplit(url)
        port = parts.port
        u = httpx.URL(url)
        host = u.raw_host.decode("ascii")
    except (ValueError, httpx.InvalidURL, UnicodeError):
        raise FetchError("bad_url", "not a valid URL (host or port)") from None
    if u.userinfo:
        raise FetchError("bad_url", "URLs with credentials (user:password@) are not supported")
    is_ip6 = ":" in host
    if not host or not (is_ip6 or _HOST.match(host)):
        raise FetchError("bad_url", "not a valid URL: bad or missing host name")
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


def _read_body(resp: httpx.Response, settings: Settings, deadline: float) -> bytes:
    """The body, refused early by Content-Type or Content-Length and capped while streaming."""
    ctype = resp.headers.get("content-type")
    if ctype:
        mime = ctype.split(";", 1)[0].strip().lower()[:100]
        if mime.startswith("text/") or mime in _REFUSED_TYPES:
            raise FetchError("bad_content_type", f"the server sent {mime}, not an image")
    limit = settings.max_image_bytes
    length = resp.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise FetchError("too_large", f"Content-Length is {int(length)} bytes, the limit is {limit}")
    data = bytearray()
    for chunk in resp.iter_bytes(_READ_CHUNK):
        data += chunk
        if len(data) > limit:
            raise FetchError("too_large", f"the body exceeds the limit of {limit} bytes")
        if time.monotonic() > deadline:
            raise _Retry("timeout", "the download took too long")
    return bytes(data)


def _request(target: _Target, address: str, settings: Settings) -> bytes | _Redirect:
    """One GET sent to ``address`` (already checked) for ``target``'s host."""
    headers = {**_HEADERS, "Host": target.host_header}
    # SNI and certificate checks use the real host name even though the socket goes to the IP
    extensions = {"sni_hostname": target.host} if target.https else None
    deadline = time.monotonic() + settings.url_timeout * _TOTAL_TIME_FACTOR
    url = target.url.copy_with(host=address)
    with http_client(settings).stream(
        "GET", url, headers=headers, timeout=httpx.Timeout(settings.url_timeout), extensions=extensions
    ) as resp:
        status = resp.status_code
        if status in _REDIRECTS:
            location = resp.headers.get("location")
            if not location:
                raise FetchError("http_error", f"HTTP {status} redirect without a Location header")
            return _Redirect(location)
        if status == 429 or status >= 500:
            raise _Retry("http_error", f"HTTP {status}", _retry_after(resp.headers))
        if status in (404, 410):
            raise FetchError("not_found", f"HTTP {status}")
        if not 200 <= status < 300:
            raise FetchError("http_error", f"HTTP {status}")
        return _read_body(resp, settings, deadline)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _attempt(target: _Target, settings: Settings) -> bytes | _Redirect:
    """Resolve, check and request; on a connect failure the host's next checked address is tried."""
    addresses = _resolve(target.host, target.port, settings)
    for i, address in enumerate(addresses):
        try:
            return _request(target, address, settings)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            if i == len(addresses) - 1:
                raise
    raise AssertionError("getaddrinfo returned no address")  # pragma: no cover


def _get(target: _Target, settings: Settings) -> bytes | _Redirect:
    """One hop, retried with exponential backoff on 5xx, 429, connect failures and timeouts."""
    attempts = settings.url_retries + 1
    failure = _Retry("connection_error", "no attempt made")
    for attempt in range(attempts):
        try:
            return _attempt(target, settings)
        except _Retry as exc:
            failure = exc
        except httpx.TimeoutException:
            failure = _Retry("timeout", f"no answer within {settings.url_timeout:g} s")
        except httpx.TransportError as exc:
            if _caused_by(exc, ssl.SSLError):
                # a certificate or handshake failure is not going to change on the next try
                raise FetchError("tls_error", f"TLS failure with {target.host}: {exc}") from None
            failure = _Retry("connection_error", f"connection to {target.host} failed: {exc}")
        except httpx.HTTPError as exc:  # e.g. a body whose Content-Encoding does not decode
            raise FetchError("http_error", f"bad response: {exc}") from None
        if attempt + 1 < attempts:
            delay = failure.retry_after
            if delay is None:
                delay = min(_BACKOFF_BASE * 2**attempt, _BACKOFF_CAP)
                delay += random.uniform(0, delay / 10)  # spread out workers that failed together
            time.sleep(delay)
    suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
    raise FetchError(failure.kind, failure.message + suffix)


def fetch_url(url: str, settings: Settings) -> tuple[bytes, None]:
    """The body of an http(s) URL, following redirects by hand so each hop passes the SSRF guard."""
    current = url
    for hop in range(settings.url_max_redirects + 1):
        try:
            target = _target(current)
            outcome = _get(target, settings)
        except FetchError as exc:
            if hop == 0:
                raise
            raise FetchError(exc.error_kind, f"after {hop} redirect(s): {exc}") from None
        if isinstance(outcome, bytes):
            return outcome, None
        try:
            current = str(target.url.join(outcome.location))
        except (httpx.InvalidURL, ValueError):
            raise FetchError("bad_url", "redirect to an invalid Location") from None
    raise FetchError("too_many_redirects", f"more than {settings.url_max_redirects} redirects")
