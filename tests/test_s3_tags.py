"""`aiscan scan --tag-objects`: verdict tags on S3 objects, through boto3 against moto's server over HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import netservers
import pytest
from images import jpeg_bytes, png_bytes
from results import job_rows

from aiscan.jobs.reports import COLUMNS
from aiscan.jobs.settings import Settings, get_settings
from aiscan.jobs.sources.s3 import s3_client
from aiscan.jobs.store.models import ResultRow
from aiscan.jobs.tagging import MODEL_TAG, P_REAL_TAG, VERDICT_TAG, ObjectTagger

SECRET = "SECRETdoNotLeak0123456789"
OURS = {VERDICT_TAG, P_REAL_TAG, MODEL_TAG}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with netservers.moto_s3() as url:
        yield url


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials; nothing leaves loopback."""
    netservers.dummy_aws_env(monkeypatch, tmp_path, SECRET)


@pytest.fixture
def s3_home(home: Path, aws_env: None, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The `home` fixture's embedded aiscan pointed at moto."""
    monkeypatch.setenv("AISCAN_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AISCAN_URL_TIMEOUT", "5")
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def bucket(s3_home: Settings) -> str:
    name = f"tags-{uuid.uuid4().hex[:12]}"
    client = s3_client(s3_home)
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="cam.jpg", Body=jpeg_bytes(1))
    client.put_object(Bucket=name, Key="gen.png", Body=png_bytes(2))
    client.put_object(Bucket=name, Key="broken.jpg", Body=b"\xff\xd8\xff\xe0 not really a jpeg")
    return name


def tags_of(settings: Settings, bucket: str, key: str) -> dict[str, str]:
    tag_set = s3_client(settings).get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return {t["Key"]: t["Value"] for t in tag_set}


def set_tags(settings: Settings, bucket: str, key: str, tags: dict[str, str]) -> None:
    tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
    s3_client(settings).put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": tag_set})


def scan(invoke: Callable[..., str], *args: str) -> dict[str, Any]:
    rows: dict[str, Any] = job_rows(json.loads(invoke("scan", *args, "--json"))["job_id"])
    return rows


def test_scored_and_corrupt_objects_are_tagged_and_foreign_tags_kept(
    s3_home: Settings, bucket: str, invoke: Callable[..., str], tmp_path: Path
) -> None:
    set_tags(s3_home, bucket, "cam.jpg", {"owner": "archive team", "retention": "7y"})
    rows = scan(invoke, f"s3://{bucket}/", "--tag-objects", "--chunk-size", "2")

    for key in ("cam.jpg", "gen.png"):
        row = rows[f"s3://{bucket}/{key}"]
        assert row.error_kind is None and row.tag_error is None
        tags = tags_of(s3_home, bucket, key)
        assert tags[VERDICT_TAG] == row.verdict
        assert tags[P_REAL_TAG] == f"{row.p_real:.4f}"
        assert tags[MODEL_TAG] == "tiny:1"
    assert tags_of(s3_home, bucket, "cam.jpg").keys() == OURS | {"owner", "retention"}
    assert tags_of(s3_home, bucket, "cam.jpg")["owner"] == "archive team"

    broken = rows[f"s3://{bucket}/broken.jpg"]
    assert broken.error_kind is not None and broken.verdict == "error" and broken.tag_error is None
    assert tags_of(s3_home, bucket, "broken.jpg") == {
        VERDICT_TAG: "error",
        P_REAL_TAG: "",
        MODEL_TAG: "tiny:1",
    }

    # a second scan overwrites our own tags in place: still 5 tags, not 8
    scan(invoke, f"s3://{bucket}/", "--tag-objects")
    assert len(tags_of(s3_home, bucket, "cam.jpg")) == 5

    # the report carries the tag_error column right after error
    assert COLUMNS[COLUMNS.index("error") + 1] == "tag_error"


def test_too_many_tags_is_a_tag_error_and_the_row_is_still_scored(
    s3_home: Settings, bucket: str, invoke: Callable[..., str]
) -> None:
    foreign = {f"team-{i}": str(i) for i in range(9)}
    set_tags(s3_home, bucket, "cam.jpg", foreign)
    rows = scan(invoke, f"s3://{bucket}/", "--tag-objects")

    row = rows[f"s3://{bucket}/cam.jpg"]
    assert row.error_kind is None and row.p_real is not None and row.verdict not in (None, "error")
    assert "9 other tags" in row.tag_error and "10" in row.tag_error
    assert tags_of(s3_home, bucket, "cam.jpg") == foreign  # nothing of ours half-written
    assert rows[f"s3://{bucket}/gen.png"].tag_error is None


def test_missing_object_or_bucket_is_a_tag_error_without_secrets(s3_home: Settings, bucket: str) -> None:
    gone = ResultRow(f"s3://{bucket}/deleted.jpg", error_kind="missing", verdict="error")
    no_bucket = ResultRow(f"s3://no-such-{uuid.uuid4().hex[:8]}/a.jpg", p_real=0.5, verdict="real")
    local = ResultRow("/data/photo.jpg", p_real=0.5, verdict="real")
    with ObjectTagger(s3_home, "tiny:1") as tagger:
        for row in (gone, no_bucket, local):
            tagger.submit(row)
    assert gone.tag_error is not None and "no longer exists" in gone.tag_error
    assert no_bucket.tag_error is not None and "no longer exists" in no_bucket.tag_error
    assert local.tag_error is None  # not an S3 object: nothing to tag, nothing to fail
    assert SECRET not in gone.tag_error + no_bucket.tag_error


def test_a_denied_tagging_is_a_tag_error(aws_env: None, tmp_path: Path) -> None:
    """A store that refuses GetObjectTagging (an IAM or bucket policy without the tagging actions)."""
    denied = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>m</Message></Error>"
    with netservers.FaultyHTTPServer() as srv:
        srv.add("/bkt/a.jpg", denied, status=403, content_type="application/xml")
        settings = Settings.from_env(
            {"AISCAN_HOME": str(tmp_path), "AISCAN_S3_ENDPOINT_URL": srv.url(""), "AISCAN_URL_RETRIES": "0"}
        )
        row = ResultRow("s3://bkt/a.jpg", p_real=0.9, label="real", verdict="real")
        with ObjectTagger(settings, "tiny:1") as tagger:
            tagger.submit(row)
    assert row.tag_error is not None and "denied (AccessDenied)" in row.tag_error
    assert "s3:PutObjectTagging" in row.tag_error and SECRET not in row.tag_error
    assert (row.p_real, row.verdict) == (0.9, "real")


def test_without_the_flag_nothing_is_written(
    s3_home: Settings, bucket: str, invoke: Callable[..., str]
) -> None:
    set_tags(s3_home, bucket, "gen.png", {"owner": "me"})
    rows = scan(invoke, f"s3://{bucket}/")
    assert all(row.tag_error is None for row in rows.values())
    assert tags_of(s3_home, bucket, "cam.jpg") == {}
    assert tags_of(s3_home, bucket, "gen.png") == {"owner": "me"}


def test_a_schedule_with_tag_objects_tags_what_it_scans(
    s3_home: Settings, bucket: str, invoke: Callable[..., str]
) -> None:
    invoke("schedule", "add", "nightly", f"s3://{bucket}/", "--every", "1d", "--tag-objects")
    job_id = json.loads(invoke("schedule", "run", "nightly", "--json"))["job_id"]
    rows = job_rows(job_id)
    assert tags_of(s3_home, bucket, "gen.png")[VERDICT_TAG] == rows[f"s3://{bucket}/gen.png"].verdict
    assert tags_of(s3_home, bucket, "broken.jpg")[VERDICT_TAG] == "error"
