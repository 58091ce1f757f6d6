"""URL sources against a real HTTP server on 127.0.0.1; any other address fails the test."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import netservers
import pytest

from aiscan.jobs.errors import FetchError, SourceError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources import Fetched, fetch, open_source
from aiscan.jobs.sources.http import fetch_url
from aiscan.jobs.sources.local import LocalSource
from aiscan.jobs.sources.urllist import UrlListSource, UrlSource
from aiscan.jobs.sources.urltext import INVALID_PREFIX
from aiscan.model.errors import ErrorKind

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60


@pytest.fixture(autouse=True)
def guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[netservers.LoopbackGuard]:
    """Every test here fails if anything tried to connect beyond loopback, even if the code caught it."""
    g = netservers.guard_loopback(monkeypatch)
    yield g
    assert g.violations == []


@pytest.fixture
def server() -> Iterator[netservers.FaultyHTTPServer]:
    with netservers.FaultyHTTPServer() as srv:
        yield srv


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Loopback allowed (the test server lives there), short timeouts, a 1 MB size cap."""
    return Settings.from_env(
        {
            "AISCAN_HOME": str(tmp_path),
            "AISCAN_URL_ALLOW_NETWORKS": "127.0.0.0/8",
            "AISCAN_URL_TIMEOUT": "2",
            "AISCAN_URL_RETRIES": "2",
            "AISCAN_MAX_IMAGE_BYTES": str(1024 * 1024),
        }
    )


def kind_of(url: str, settings: Settings) -> tuple[ErrorKind, str]:
    with pytest.raises(FetchError) as info:
        fetch(url, settings)
    return info.value.error_kind, str(info.value)


# -- sources -----------------------------------------------------------------------------------------


def test_text_list_skips_comments_and_keeps_bad_lines(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "list.txt"
    path.write_text(
        "# photos to audit\n"
        "\n"
        "https://example.com/a.jpg\n"
        "  http://example.com/b.png   # trailing comment\n"
        "not a url\n"
        "/etc/passwd\n"
        "s3://bucket/key.jpg\n"
        "https://alice:hunter2@example.com/c.jpg\n"
    )
    for spec in (f"urls:{path}", str(path)):
        source = open_source(spec, settings)
        assert isinstance(source, UrlListSource)
        assert source.spec == f"urls:{path}"
        refs = list(source.iter_refs())
        assert refs == [
            "https://example.com/a.jpg",
            "http://example.com/b.png",
            INVALID_PREFIX + "not a url",
            INVALID_PREFIX + "/etc/passwd",
            INVALID_PREFIX + "s3://bucket/key.jpg",
            "https://***@example.com/c.jpg",
        ]
        assert source.skipped == 0
    # Lines that are not URLs end as bad_url rows: never read as local files or S3 objects.
    for ref in refs[2:]:
        kind, message = kind_of(ref, settings)
        assert kind == "bad_url"
        assert "hunter2" not in message


def test_list_is_streamed(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "many.urls"
    path.write_text("".join(f"https://example.com/{i}.jpg\n" for i in range(50_000)))
    refs = open_source(str(path), settings).iter_refs()
    assert next(refs) == "https://example.com/0.jpg"
    assert not isinstance(refs, list)


def test_csv_list_with_url_column(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "photos.csv"
    path.write_text(
        "\ufeffid,URL,label\n"
        "1,https://example.com/a.jpg,x\n"
        '2,"https://example.com/b,c.jpg",y\n'
        "3,,empty\n"
        "\n"
        "4,ftp://example.com/d.jpg,z\n"
    )
    source = open_source(str(path), settings)
    assert list(source.iter_refs()) == [
        "https://example.com/a.jpg",
        "https://example.com/b,c.jpg",
        INVALID_PREFIX + "ftp://example.com/d.jpg",
    ]
    assert source.skipped == 1


def test_text_file_with_url_header_is_csv(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "export.txt"
    path.write_text("name,url\nx,https://example.com/x.jpg\n")
    assert list(open_source(str(path), settings).iter_refs()) == ["https://example.com/x.jpg"]


def test_csv_without_url_column_is_refused(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,link\n1,https://example.com/a.jpg\n")
    with pytest.raises(SourceError, match="'url' column"):
        open_source(str(path), settings)
    with pytest.raises(SourceError, match="no such URL list"):
        open_source(f"urls:{tmp_path / 'absent.txt'}", settings)


def test_single_url_and_dispatch(tmp_path: Path, settings: Settings, guard: netservers.LoopbackGuard) -> None:
    source = open_source("https://example.com/a.jpg", settings)
    assert isinstance(source, UrlSource)
    assert (source.spec, list(source.iter_refs()), source.skipped) == (
        "https://example.com/a.jpg",
        ["https://example.com/a.jpg"],
        0,
    )
    with pytest.raises(SourceError) as info:
        open_source("https://bob:s3cret@example.com/a.jpg", settings)
    assert "s3cret" not in str(info.value)
    with pytest.raises(SourceError, match="unsupported source"):
        open_source("ftp://example.com/x", settings)
    assert isinstance(open_source(str(tmp_path), settings), LocalSource)
    assert guard.connections == []  # opening sources never touches the network


# -- fetching ------------------------------------------------------------------------------------------


def test_image_fetched(server: netservers.FaultyHTTPServer, settings: Settings) -> None:
    url = server.add("/a.jpg", JPEG)
    assert fetch(url, settings) == Fetched(JPEG, None)
    assert fetch(url, settings).data == JPEG
    assert fetch_url(url, settings) == Fetched(JPEG)
    for ctype in ("application/octet-stream", "binary/octet-stream", None, "image/png; charset=binary"):
        assert fetch(server.add("/t.jpg", JPEG, content_type=ctype), settings).data == JPEG
    assert server.requests[0].headers["Host"] == f"127.0.0.1:{server.port}"


@pytest.mark.parametrize("status", [404, 410])
def test_gone_is_missing(server: netservers.FaultyHTTPServer, settings: Settings, status: int) -> None:
    url = server.add("/gone.jpg", status=status)
    assert kind_of(url, settings)[0] == ErrorKind.MISSING == "missing"
    assert server.hits["/gone.jpg"] == 1  # a 404 is not retried


def test_500_then_success(server: netservers.FaultyHTTPServer, settings: Settings) -> None:
    url = server.add("/flaky.jpg", JPEG, fail_first=1, fail_status=500)
    assert fetch(url, settings).data == JPEG
    assert server.hits["/flaky.jpg"] == 2


def test_429_honours_small_retry_after(server: netservers.FaultyHTTPServer, settings: Settings) -> None:
    url = server.add("/busy.jpg", JPEG, fail_first=2, fail_status=429, fail_headers={"Retry-After": "0"})
    started = time.monotonic()
    assert fetch(url, settings).data == JPEG
    assert server.hits["/busy.jpg"] == 3
    assert time.monotonic() - started < 0.5  # "Retry-After: 0" replaced the backoff


def test_persistent_5xx_is_http_error(server: netservers.FaultyHTTPServer, settings: Settings) -> None:
    url = server.add("/down.jpg", JPEG, fail_first=100, fail_status=503)
    kind, message = kind_of(url, settings)
    assert kind == "http_error" and "503" in message
    assert server.hits["/down.jpg"] == settings.url_retries + 1
    kind, message = kind_of(server.add("/teapot", status=418), settings)
    assert kind == "http_error" and "418" in message


def test_timeout(server: netservers.FaultyHTTPServer, settings: Settings) -> None:
    fast = dataclasses.replace(settings, url_timeout=0.3, url_retries=1)
    url = server.add("/slow.jpg", JPEG, delay=3.0)
    started = time.monotonic()
    assert kind_of(url, fast)[0] == "timeout"
    assert time.monotonic() - started < 2.0
    assert server.hits["/slow.jpg"] == 2


def test_connection_error(settings: Settings) -> None:
    quick = dataclasses.replace(settings, url_retries=1)
    assert kind_of(f"http://127.0.0.1:{netservers.closed_port()}/a.jpg", quick)[0] == "connection_error"


def test_too_large(server: netservers.FaultyHTTPServer, settings: Settings) -> None:
    big = b"\0" * (settings.max_image_bytes + 1)
    kind, message = kind_of(server.add("/big.jpg", big), settings)
    assert kind == "too_large" and "Content-Length" in message
    chunks = [b"\0" * 65536] * 40  # 2.5 MB, chunked: no Content-Length to refuse early
    kind, message = kind_of(server.add("/stream.jpg", chunks=chunks), settings)
    assert kind == "too_large" and "exceeds" in message
    assert fetch(server.add("/ok.jpg", chunks=[JPEG, JPEG]), settings).data == JPEG + JPEG


@pytest.mark.parametrize("ctype", ["text/html; charset=utf-8", "text/plain", "application/json", "text/csv"])
def test_bad_content_type(server: netservers.FaultyHTTPServer, settings: Settings, ctype: str) -> None:
    kind, message = kind_of(server.add("/page", b"<html></html>", content_type=ctype), settings)
    assert kind == "bad_content_type" and ctype.split(";")[0] in message


def test_redirects(server: netservers.FaultyHTTPServer, settings: Settings) -> None:
    server.add("/final.jpg", JPEG)
    server.redirect("/r3", "/final.jpg", status=301)
    server.redirect("/r2", server.url("/r3"), status=307)
    first = server.redirect("/r1", "r2")  # relative Location
    assert fetch(first, settings).data == JPEG
    limited = dataclasses.replace(settings, url_max_redirects=2)
    kind, message = kind_of(first, limited)
    assert kind == "too_many_redirects" and "2" in message
    assert server.hits["/final.jpg"] == 1
    no_redirects = dataclasses.replace(settings, url_max_redirects=0)
    assert kind_of(server.url("/r3"), no_redirects)[0] == "too_many_redirects"


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/internal.jpg",
        "http://[::ffff:169.254.169.254]/",
        "http://0.0.0.0:8080/",
    ],
)
def test_redirect_to_internal_address_is_refused_without_traffic(
    server: netservers.FaultyHTTPServer, settings: Settings, guard: netservers.LoopbackGuard, target: str
) -> None:
    url = server.redirect("/evil", target)
    kind, message = kind_of(url, settings)
    assert kind == "refused_address" and "redirect" in message
    # The only connection made was to the test server; the guard saw no other address.
    assert {addr[:2] for addr in guard.connections} == {("127.0.0.1", server.port)}


def test_redirect_to_credentials_or_other_scheme(
    server: netservers.FaultyHTTPServer, settings: Settings
) -> None:
    kind, message = kind_of(server.redirect("/c", "http://eve:pa55word@127.0.0.1/x"), settings)
    assert kind == "bad_url" and "pa55word" not in message
    assert kind_of(server.redirect("/f", "file:///etc/passwd"), settings)[0] == "bad_url"


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/a.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[64:ff9b::a01:203]/a.jpg",  # NAT64 form of 10.1.2.3
    ],
)
def test_internal_addresses_refused_without_traffic(
    settings: Settings, guard: netservers.LoopbackGuard, url: str
) -> None:
    # which addresses are refused is test_netguard.py's subject; here: a fetch asks the guard first
    assert kind_of(url, settings)[0] == "refused_address"
    assert guard.connections == []


def test_loopback_refused_by_default_allowed_by_setting(
    server: netservers.FaultyHTTPServer, tmp_path: Path, guard: netservers.LoopbackGuard
) -> None:
    url = server.add("/a.jpg", JPEG)
    default = Settings.from_env({"AISCAN_HOME": str(tmp_path)})
    kind, message = kind_of(url, default)
    assert kind == "refused_address" and "loopback" in message
    assert server.hits["/a.jpg"] == 0 and guard.connections == []
    assert fetch(url, dataclasses.replace(default, url_allow_networks=("127.0.0.0/8",))).data == JPEG
    assert fetch(url, dataclasses.replace(default, url_allow_private=True)).data == JPEG
    other_net = dataclasses.replace(default, url_allow_networks=("10.0.0.0/8",))
    assert kind_of(url, other_net)[0] == "refused_address"


def test_credentials_refused_without_echoing_the_password(
    server: netservers.FaultyHTTPServer, settings: Settings
) -> None:
    server.add("/a.jpg", JPEG)
    kind, message = kind_of(f"http://alice:Tr0ub4dor@127.0.0.1:{server.port}/a.jpg", settings)
    assert kind == "bad_url" and "Tr0ub4dor" not in message
    assert server.hits["/a.jpg"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "http://",
        "http://exa mple.com/a.jpg",
        "http://example.com:99999/a.jpg",
        INVALID_PREFIX + "whatever",
    ],
)
def test_bad_urls(settings: Settings, url: str) -> None:
    assert kind_of(url, settings)[0] == "bad_url"


class FakeDNS:
    """getaddrinfo answers for made-up names; IP literals go to the real resolver (no traffic)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]) -> None:
        self.answers, self.calls = answers, []
        self.real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self)

    def __call__(self, host: str, port: int, *args: object, **kwargs: object) -> list:
        if host not in self.answers:
            return self.real(host, port, *args, **kwargs)
        self.calls.append(host)
        seq = self.answers[host]
        ips = seq[min(len(self.calls) - 1, len(seq) - 1)]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ips]


def test_connection_is_pinned_to_the_checked_address(
    server: netservers.FaultyHTTPServer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # First answer 127.0.0.1 (allowed here), every later one 10.0.0.1: a DNS-rebinding attack.
    dns = FakeDNS(monkeypatch, {"images.test": [["127.0.0.1"], ["10.0.0.1"]]})
    server.add("/a.jpg", JPEG)
    assert fetch(server.url("/a.jpg", host="images.test"), settings).data == JPEG
    assert dns.calls == ["images.test"]  # resolved once, by the guard; the client reused that address
    assert server.requests[-1].headers["Host"] == f"images.test:{server.port}"


def test_any_internal_address_refuses_the_host(
    server: netservers.FaultyHTTPServer,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    guard: netservers.LoopbackGuard,
) -> None:
    FakeDNS(monkeypatch, {"mixed.test": [["127.0.0.1", "10.0.0.1"]]})
    server.add("/a.jpg", JPEG)
    assert kind_of(server.url("/a.jpg", host="mixed.test"), settings)[0] == "refused_address"
    assert guard.connections == []


def test_https_sends_sni_of_the_host_name_and_checks_its_certificate(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("cryptography")
    ctx = netservers.self_signed_context("images.test")
    names: list[str | None] = []
    ctx.sni_callback = lambda _sock, name, _ctx: names.append(name)
    FakeDNS(monkeypatch, {"images.test": [["127.0.0.1"]]})
    with netservers.FaultyHTTPServer(ssl_context=ctx) as srv:
        srv.add("/a.jpg", JPEG)
        kind, message = kind_of(srv.url("/a.jpg", host="images.test"), settings)
    # The socket went to 127.0.0.1, yet TLS spoke to "images.test" and refused its self-signed cert.
    assert kind == "tls_error" and "images.test" in message
    assert names == ["images.test"]


def test_the_guard_itself_stops_outside_connections(
    settings: Settings, guard: netservers.LoopbackGuard
) -> None:
    # With the SSRF guard switched off, the test guard is what stops the packet: proof it is armed.
    anything = dataclasses.replace(settings, url_allow_private=True, url_retries=0)
    assert kind_of("http://10.1.2.3:9/a.jpg", anything)[0] == "connection_error"
    assert guard.violations == [("10.1.2.3", 9)]
    guard.violations.clear()


# -- hostile servers and references: typed rows, never a hang or an exception ---------------------------


@pytest.mark.parametrize("location", ["data:image/png;base64,iVBORw0KGgo=", "javascript:alert(1)"])
def test_redirect_to_data_or_javascript_is_bad_url(
    server: netservers.FaultyHTTPServer, settings: Settings, location: str
) -> None:
    kind, message = kind_of(server.redirect("/to-script", location), settings)
    assert kind == "bad_url" and "Location" in message


def test_host_label_longer_than_dns_allows_is_bad_url(
    server: netservers.FaultyHTTPServer, settings: Settings
) -> None:
    long_host = "a" * 64 + ".example"
    assert kind_of(f"http://{long_host}/a.jpg", settings)[0] == "bad_url"
    assert kind_of(f"http://{'b' * 250}.example.com/a.jpg", settings)[0] == "bad_url"
    kind, message = kind_of(server.redirect("/to-long", f"http://{long_host}/a.jpg"), settings)
    assert kind == "bad_url" and "redirect" in message


def test_a_dripping_body_is_cut_off_at_the_deadline(
    server: netservers.FaultyHTTPServer, settings: Settings
) -> None:
    # 0.2 s per read, 10 x that for the whole fetch; the server would need 60 s to finish
    fast = dataclasses.replace(settings, url_timeout=0.2)
    url = server.add("/drip.jpg", chunks=[JPEG[:4]] + [b"\0"] * 600, drip=0.1)
    kind, message = kind_of(url, fast)
    assert kind == "timeout" and "within 2 s" in message
    assert server.finished["/drip.jpg"] == 0  # the fetch gave up while the server was still sending
    assert server.hits["/drip.jpg"] == 1  # no time was left for a retry


def test_a_compressed_body_is_refused_not_inflated(
    server: netservers.FaultyHTTPServer, settings: Settings
) -> None:
    import gzip

    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))  # 50 MB inflated, about 50 KB sent
    for headers in ({"Content-Encoding": "gzip"}, {"Content-Encoding": "deflate, gzip"}):
        kind, message = kind_of(server.add("/bomb.jpg", bomb, headers=headers), settings)
        assert kind == "http_error" and "gzip" in message
    plain = server.add("/plain.jpg", JPEG, headers={"Content-Encoding": "identity"})
    assert fetch(plain, settings).data == JPEG
