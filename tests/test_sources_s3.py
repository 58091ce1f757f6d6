"""S3 sources through boto3 against moto's S3 server (and a faulty HTTP server) on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.response
import netservers
import pytest

from aiscan.jobs.errors import FetchError, SourceError, TransientFetchError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources import Fetched, fetch, open_source
from aiscan.jobs.sources.s3 import S3Source, fetch_s3, s3_client

SECRET = "SECRETdoNotLeak0123456789"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with netservers.moto_s3() as url:
        yield url


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Dummy credentials; nothing leaves loopback."""
    netservers.dummy_aws_env(monkeypatch, tmp_path, SECRET)
    guard = netservers.guard_loopback(monkeypatch)
    yield
    assert guard.violations == []


def make_settings(tmp_path: Path, endpoint: str, **env: str) -> Settings:
    return Settings.from_env(
        {
            "AISCAN_HOME": str(tmp_path),
            "AISCAN_S3_ENDPOINT_URL": endpoint,
            "AISCAN_URL_TIMEOUT": "5",
            "AISCAN_URL_RETRIES": "1",
            **env,
        }
    )


@pytest.fixture
def settings(tmp_path: Path, endpoint: str) -> Settings:
    return make_settings(tmp_path, endpoint)


@pytest.fixture
def bucket(settings: Settings) -> str:
    """A fresh bucket per test (moto's state lives as long as the server)."""
    name = f"aiscan-{uuid.uuid4().hex[:12]}"
    s3_client(settings).create_bucket(Bucket=name)
    return name


def put(settings: Settings, bucket: str, keys: list[str], body: bytes = JPEG) -> None:
    client = s3_client(settings)
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=body)


def test_listing_is_paged_lazy_and_filtered(settings: Settings, bucket: str) -> None:
    images = [f"photos/{i:03d}.jpg" for i in range(17)] + ["photos/x.PNG", "top.webp"]
    others = ["photos/notes.txt", "photos/README", "data.bin"]
    markers = ["photos/", "photos/empty/"]
    put(settings, bucket, images + others)
    put(settings, bucket, markers, body=b"")
    source = S3Source(f"s3://{bucket}", settings, page_size=4)
    assert source.spec == f"s3://{bucket}/"
    refs = source.iter_refs()
    assert next(refs) == f"s3://{bucket}/photos/000.jpg"
    assert source.pages == 1  # one page fetched for the first ref: the listing is lazy
    rest = list(refs)
    assert [f"s3://{bucket}/photos/000.jpg", *rest] == [f"s3://{bucket}/{k}" for k in sorted(images)]
    total = len(images) + len(others) + len(markers)
    assert source.pages == math.ceil(total / 4) > 1
    assert source.skipped == len(others)  # folder markers are not files, so not counted


def test_prefix(settings: Settings, bucket: str) -> None:
    put(settings, bucket, ["a/1.jpg", "a/2.jpg", "ab/3.jpg", "b/4.jpg"])
    source = open_source(f"s3://{bucket}/a/", settings)
    assert isinstance(source, S3Source)
    assert source.spec == f"s3://{bucket}/a/"
    assert list(source.iter_refs()) == [f"s3://{bucket}/a/1.jpg", f"s3://{bucket}/a/2.jpg"]
    # A prefix is a plain key prefix, as in S3 itself.
    assert len(list(open_source(f"s3://{bucket}/a", settings).iter_refs())) == 3
    assert len(list(open_source(f"S3://{bucket}", settings).iter_refs())) == 4


def test_fetch_returns_bytes_and_etag(settings: Settings, bucket: str) -> None:
    put(settings, bucket, ["dir/with space/ä.jpg"])
    ref = f"s3://{bucket}/dir/with space/ä.jpg"
    assert fetch(ref, settings) == Fetched(JPEG, hashlib.md5(JPEG).hexdigest())
    assert fetch(ref, settings).data == JPEG


def test_missing_objects(settings: Settings, bucket: str) -> None:
    with pytest.raises(FetchError) as info:
        fetch(f"s3://{bucket}/absent.jpg", settings)
    assert info.value.error_kind == "missing"
    with pytest.raises(FetchError) as info:
        fetch(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/a.jpg", settings)
    assert info.value.error_kind == "missing"
    with pytest.raises(FetchError) as info:
        fetch(f"s3://{bucket}", settings)
    assert info.value.error_kind == "bad_url"


def test_oversized_object_is_refused_before_reading(
    settings: Settings, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(settings, bucket, ["big.jpg"], body=b"\0" * 300_000)
    reads: list[Any] = []
    real_read = botocore.response.StreamingBody.read

    def spy(self: Any, amt: int | None = None) -> bytes:
        reads.append(amt)
        return real_read(self, amt)

    monkeypatch.setattr(botocore.response.StreamingBody, "read", spy)
    small = dataclasses.replace(settings, max_image_bytes=100_000)
    with pytest.raises(FetchError) as info:
        fetch(f"s3://{bucket}/big.jpg", small)
    assert info.value.error_kind == "too_large"
    assert reads == []  # ContentLength decided it; not one byte of the body was read
    assert len(fetch(f"s3://{bucket}/big.jpg", settings).data) == 300_000


def test_missing_bucket_is_a_source_error(settings: Settings) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_source(f"s3://absent-{uuid.uuid4().hex[:8]}/photos", settings)
    with pytest.raises(SourceError, match="not a valid S3 source"):
        open_source("s3://", settings)


def test_endpoint_down_is_transient(tmp_path: Path, bucket: str) -> None:
    down = make_settings(
        tmp_path,
        f"http://127.0.0.1:{netservers.closed_port()}",
        AISCAN_URL_RETRIES="0",
        AISCAN_URL_TIMEOUT="1",
    )
    started = time.monotonic()
    with pytest.raises(TransientFetchError) as info:
        fetch(f"s3://{bucket}/a.jpg", down)
    assert SECRET not in str(info.value) and "retried" in str(info.value)
    with pytest.raises(TransientFetchError):
        open_source(f"s3://{bucket}", down)
    assert time.monotonic() - started < 5


def s3_error(code: str) -> bytes:
    return f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>".encode()


def test_slowdown_after_retries_is_transient(tmp_path: Path) -> None:
    with netservers.FaultyHTTPServer() as srv:
        srv.add("/bkt/a.jpg", s3_error("SlowDown"), status=503, content_type="application/xml")
        settings = make_settings(tmp_path, srv.url(""))
        with pytest.raises(TransientFetchError, match="SlowDown"):
            fetch("s3://bkt/a.jpg", settings)
        assert srv.hits["/bkt/a.jpg"] == settings.url_retries + 1  # botocore retried before giving up


def test_forbidden_and_other_errors(tmp_path: Path) -> None:
    with netservers.FaultyHTTPServer() as srv:
        srv.add("/bkt/denied.jpg", s3_error("AccessDenied"), status=403, content_type="application/xml")
        srv.add("/bkt/odd.jpg", s3_error("InvalidObjectState"), status=400, content_type="application/xml")
        settings = make_settings(tmp_path, srv.url(""))
        for key, kind in (("denied.jpg", "forbidden"), ("odd.jpg", "s3_error")):
            with pytest.raises(FetchError) as info:
                fetch(f"s3://bkt/{key}", settings)
            assert info.value.error_kind == kind
            assert SECRET not in str(info.value) and "AKIDTESTING" not in str(info.value)


def test_body_without_content_length_is_capped(tmp_path: Path) -> None:
    with netservers.FaultyHTTPServer() as srv:
        srv.add("/bkt/stream.jpg", chunks=[b"\0" * 65536] * 8, headers={"ETag": '"abc"'})
        srv.add("/bkt/small.jpg", chunks=[JPEG], headers={"ETag": '"def"'})
        settings = make_settings(tmp_path, srv.url(""), AISCAN_MAX_IMAGE_BYTES="100000")
        with pytest.raises(FetchError) as info:
            fetch_s3("s3://bkt/stream.jpg", settings)
        assert info.value.error_kind == "too_large"
        assert fetch_s3("s3://bkt/small.jpg", settings) == Fetched(JPEG, "def")


def test_one_client_per_process(settings: Settings) -> None:
    wide = dataclasses.replace(settings, fetch_concurrency=48)
    seen: list[Any] = []
    threads = [threading.Thread(target=lambda: seen.append(s3_client(wide))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in seen}) == 1
    config = seen[0].meta.config
    assert config.max_pool_connections >= 48
    assert config.retries["mode"] == "standard"
    assert s3_client(settings) is s3_client(settings)


def test_listing_client_works_with_plain_boto3(settings: Settings, endpoint: str, bucket: str) -> None:
    # Objects written by any S3 client are seen: nothing aiscan-specific in the layout.
    other = boto3.client("s3", endpoint_url=endpoint)
    other.put_object(Bucket=bucket, Key="x/y.jpeg", Body=JPEG)
    assert list(open_source(f"s3://{bucket}/x", settings).iter_refs()) == [f"s3://{bucket}/x/y.jpeg"]


def test_a_dripping_object_is_cut_off_at_the_deadline(tmp_path: Path) -> None:
    with netservers.FaultyHTTPServer() as srv:
        # headers at once, then a byte every 0.1 s for a minute: no single read ever times out
        srv.add("/bkt/drip.jpg", chunks=[b"\xff\xd8"] + [b"\0"] * 600, drip=0.1, headers={"ETag": '"d"'})
        settings = make_settings(tmp_path, srv.url(""), AISCAN_URL_TIMEOUT="0.2")
        with pytest.raises(FetchError, match="within 2 s") as info:
            fetch_s3("s3://bkt/drip.jpg", settings)
        assert info.value.error_kind == "timeout"
        assert srv.finished["/bkt/drip.jpg"] == 0 and srv.hits["/bkt/drip.jpg"] == 1
