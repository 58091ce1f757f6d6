"""What every source shares: the scheme table, the per-process client cache and byte-capped reads."""

from __future__ import annotations

import itertools
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiscan.jobs.errors import FetchError, SourceError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources import Fetched, clients, fetch, open_source
from aiscan.jobs.sources.capped import read_capped
from aiscan.jobs.sources.clients import process_client
from aiscan.jobs.sources.local import LocalSource, read_local
from aiscan.jobs.sources.urllist import UrlListSource
from aiscan.model.errors import ErrorKind

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"AISCAN_HOME": str(tmp_path / "home"), "AISCAN_MAX_IMAGE_BYTES": "1000"})


def kind_of(ref: str, settings: Settings) -> tuple[ErrorKind, str]:
    with pytest.raises(FetchError) as info:
        fetch(ref, settings)
    return info.value.error_kind, str(info.value)


# -- the scheme table ---------------------------------------------------------------------------------


def test_local_paths_and_file_urls_open_and_fetch_alike(tmp_path: Path, settings: Settings) -> None:
    image = tmp_path / "photo:1.jpg"  # a colon in a file name is not a scheme
    image.write_bytes(JPEG)
    for text in (str(image), f"file://{image}"):
        source = open_source(text, settings)
        assert isinstance(source, LocalSource) and list(source.iter_refs()) == [str(image)]
        assert fetch(text, settings) == Fetched(JPEG)
    listing = tmp_path / "list.txt"
    listing.write_text("https://example.com/a.jpg\n")
    assert isinstance(open_source(f"file://{listing}", settings), UrlListSource)


def test_other_schemes_are_refused_in_both_directions(tmp_path: Path, settings: Settings) -> None:
    for spec in ("ftp://example.com/x", "gopher://bob:s3cret@example.com/", "invalid-url:whatever"):
        with pytest.raises(SourceError, match="unsupported source") as info:
            open_source(spec, settings)
        assert "s3cret" not in str(info.value)
    listing = tmp_path / "list.txt"
    listing.write_text("https://example.com/a.jpg\n")
    for ref, what in (("ftp://example.com/a.jpg", "a 'ftp' URL"), (f"urls:{listing}", "not a URL")):
        kind, message = kind_of(ref, settings)
        assert kind == ErrorKind.BAD_URL and message.startswith(what)


# -- the client cache ---------------------------------------------------------------------------------


def test_one_client_per_key_across_threads() -> None:
    built: list[object] = []
    start = threading.Barrier(8)

    def build() -> object:
        built.append(object())
        return built[-1]

    def use() -> None:
        start.wait()
        seen.append(process_client(("test", "threads"), build))

    seen: list[object] = []
    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and all(c is built[0] for c in seen)
    assert process_client(("test", "other"), object) is not built[0]


def test_a_forked_child_builds_its_own_clients() -> None:
    parent = process_client(("test", "fork"), object)
    read_end, write_end = os.pipe()
    # a thread of the parent holds the cache's lock at the moment of the fork
    clients._lock.acquire()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            signal.alarm(10)  # a deadlock on the inherited lock ends here, with a failing status
            fresh = process_client(("test", "fork"), object)
            os.write(write_end, b"new" if fresh is not parent else b"inherited")
            os._exit(0)
    finally:
        clients._lock.release()
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as fh:
        report = fh.read()
    assert os.waitstatus_to_exitcode(status) == 0 and report == b"new"
    assert process_client(("test", "fork"), object) is parent


# -- capped reads -------------------------------------------------------------------------------------


def test_capped_read_stops_at_the_limit() -> None:
    assert read_capped([b"ab", b"cd", b"e"], 5, "the body") == b"abcde"
    pulled: list[int] = []

    def endless() -> Iterator[bytes]:
        for i in itertools.count():
            pulled.append(i)
            yield b"x" * 4

    with pytest.raises(FetchError, match="the body exceeds the limit of 5 bytes") as info:
        read_capped(endless(), 5, "the body")
    assert info.value.error_kind == ErrorKind.TOO_LARGE
    assert len(pulled) == 2  # nothing read past the chunk that crossed the limit


def test_local_reads(tmp_path: Path) -> None:
    exact = tmp_path / "exact.jpg"
    exact.write_bytes(b"\0" * 1000)
    assert read_local(str(exact), 1000) == b"\0" * 1000
    with pytest.raises(FetchError, match="file is 1000 bytes") as info:
        read_local(str(exact), 999)
    assert info.value.error_kind == ErrorKind.TOO_LARGE
    # a device is not a file: refused before any read (it could be endless, or block)
    with pytest.raises(FetchError, match="is a device") as info:
        read_local("/dev/zero", 100_000)
    assert info.value.error_kind == ErrorKind.NOT_AN_IMAGE
    for path, kind in ((tmp_path / "gone.jpg", ErrorKind.MISSING), (tmp_path, ErrorKind.NOT_AN_IMAGE)):
        with pytest.raises(FetchError) as info:
            read_local(str(path), 1000)
        assert info.value.error_kind == kind
