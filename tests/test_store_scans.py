"""Whole scans on the embedded path whose refs the database could not store as they are, or repeat."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from images import jpeg_bytes
from results import job_rows
from sqlalchemy import select

from aiscan.jobs.settings import get_settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.models import Chunk
from aiscan.jobs.store.refs import decode_ref


def test_a_file_name_that_is_not_utf8_is_scanned_and_retried(
    home: Path, tmp_path: Path, invoke: Callable[..., str]
) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "plain.jpg").write_bytes(jpeg_bytes(1, (80, 60)))
    # The byte 0xE9 alone is no UTF-8: Python names the file with a lone surrogate.
    odd = os.fsencode(images) + b"/caf\xe9.jpg"
    with open(odd, "wb") as fh:
        fh.write(b"not a jpeg yet")
    summary = json.loads(invoke("scan", str(images), "--json"))
    job_id = summary["job_id"]
    assert summary["status"] == "done" and summary["counts"]["done"] == summary["counts"]["total"] == 2
    rows = job_rows(job_id)
    shown = f"{images}/caf\\xe9.jpg"
    assert set(rows) == {str(images / "plain.jpg"), shown}
    failed = rows[shown]
    assert failed.error_kind is not None and failed.ref is not None
    assert os.fsencode(decode_ref(failed.ref)) == odd

    with open(odd, "wb") as fh:
        fh.write(jpeg_bytes(2, (80, 60)))
    assert "1 images run again" in invoke("jobs", "retry", str(job_id), "--errors")
    rows = job_rows(job_id)
    assert len(rows) == 2
    scored = rows[shown]
    assert scored.error_kind is None and scored.p_real is not None and scored.width == 80
    report = invoke("report", str(job_id), "--format", "csv")
    assert shown in report
    assert json.loads(invoke("jobs", "show", str(job_id), "--json"))["status"] == "done"


def test_repeated_urls_count_as_duplicates(
    home: Path, http, tmp_path: Path, invoke: Callable[..., str]
) -> None:
    for i in range(3):
        http.add(f"/ok/{i}.jpg", body=jpeg_bytes(i, (80, 60)))
    http.add("/gone.jpg", status=404, body=b"")
    lines = ["/ok/0.jpg", "/ok/1.jpg", "/ok/0.jpg", "/gone.jpg", "/ok/2.jpg", "/ok/0.jpg", "/gone.jpg"]
    urls = tmp_path / "u.txt"
    urls.write_text("".join(http.url(p) + "\n" for p in lines))
    # Chunks of 2: the repeats fall in the same chunk and in others.
    summary = json.loads(invoke("scan", str(urls), "--json", "--chunk-size", "2"))
    assert summary["status"] == "done"
    assert summary["counts"]["total"] == summary["counts"]["done"] == 7
    assert summary["duplicates"] == 3
    assert len(job_rows(summary["job_id"])) == 4

    # A retry of the one failed URL, in a job whose chunks are many: its row is no duplicate.
    http.add("/gone.jpg", body=jpeg_bytes(7, (80, 60)))
    assert "1 images run again" in invoke("jobs", "retry", str(summary["job_id"]), "--errors")
    after = json.loads(invoke("jobs", "show", str(summary["job_id"]), "--json"))
    assert after["status"] == "done" and after["duplicates"] == 3
    assert after["counts"]["done"] == 7 and after["counts"]["errors"] == 0


def test_retry_errors_of_a_job_of_one_chunk(
    home: Path, http, tmp_path: Path, invoke: Callable[..., str]
) -> None:
    http.add("/ok.jpg", body=jpeg_bytes(1, (80, 60)))
    http.add("/late.jpg", status=503, body=b"")
    urls = tmp_path / "u.txt"
    urls.write_text(http.url("/ok.jpg") + "\n" + http.url("/late.jpg") + "\n")
    summary = json.loads(invoke("scan", str(urls), "--json"))
    job_id = summary["job_id"]
    assert summary["counts"]["errors"] == 1
    http.add("/late.jpg", body=jpeg_bytes(2, (80, 60)))
    assert "1 images run again" in invoke("jobs", "retry", str(job_id), "--errors")
    rows = job_rows(job_id)
    assert len(rows) == 2 and all(r.error_kind is None for r in rows.values())
    with open_database(get_settings().database_url).session() as s:
        assert sorted(s.scalars(select(Chunk.seq).where(Chunk.job_id == job_id))) == [0, 1]


def test_the_worker_retries_only_transient_database_errors(
    aiscan_home: Path, postgres_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AISCAN_BROKER_URL", redis_url)
    get_settings.cache_clear()
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from aiscan.jobs.store.db import Database, make_engine
    from aiscan.worker import tasks

    assert tasks.classify_chunk.autoretry_for == tasks.TRANSIENT
    assert not any(issubclass(OperationalError, kind) for kind in tasks.TRANSIENT)
    engine = make_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v text)"))
        conn.execute(text("CREATE INDEX t_v ON t (v)"))
    with pytest.raises(OperationalError), tasks._transient_database_errors(), engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": os.urandom(4000).hex()})
    engine.dispose()
    down = "postgresql+psycopg://postgres@127.0.0.1:1/none"
    with pytest.raises(tasks.TransientDatabaseError), tasks._transient_database_errors():
        make_engine(down).connect()
    # A worker whose first use of the database finds it down retries too.
    with pytest.raises(tasks.TransientDatabaseError) as first_use, tasks._transient_database_errors():
        Database(down, auto_upgrade=False)
    assert "Connection refused" in str(first_use.value)
    # A lost connection is named by the driver's error, never by the statement's parameters (signatures).
    engine = make_engine(postgres_url)
    with engine.connect() as victim, engine.connect() as admin:
        pid = victim.execute(text("SELECT pg_backend_pid()")).scalar_one()
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(tasks.TransientDatabaseError) as lost, tasks._transient_database_errors():
            victim.execute(text("SELECT :secret"), {"secret": "X-Amz-Signature=abc"})
    # The engine hides statement parameters as well, so neither the error nor its cause shows one.
    assert "X-Amz-Signature" not in str(lost.value) and "X-Amz-Signature" not in str(lost.value.__cause__)
    engine.dispose()
