"""The JSON API against a real uvicorn server on 127.0.0.1, over real HTTP (httpx)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from images import jpeg_bytes, png_dir
from webserver import serve, web_url

from aiscan.jobs.settings import get_settings

__all__ = ["web_url"]  # the fixture, imported for the tests below
HOSTILE = "<img src=x onerror=alert(1)>.png"


def _client(base: str, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=120, **kwargs)


def _wait_done(client: httpx.Client, job_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        summary = client.get(f"/api/v1/jobs/{job_id}").json()
        if summary["status"] in ("done", "failed", "cancelled"):
            return summary
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {summary}")


def test_health_models_openapi_and_headers(web_url: str) -> None:
    with _client(web_url) as client:
        health = client.get("/api/v1/health")
        assert health.status_code == 200 and health.json() == {"status": "ok", "model": "tiny:1"}
        csp = health.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert health.headers["x-content-type-options"] == "nosniff"
        assert health.headers["referrer-policy"] == "no-referrer"
        models = client.get("/api/v1/models").json()
        assert [(m["ref"], m["default"]) for m in models] == [("tiny:1", True)]
        assert "path" not in models[0]  # no server path leaves the app
        paths = client.get("/api/v1/openapi.json").json()["paths"]
        for route in (
            "/api/v1/health",
            "/api/v1/classify",
            "/api/v1/jobs",
            "/api/v1/jobs/{job_id}",
            "/api/v1/jobs/{job_id}/results",
            "/api/v1/jobs/{job_id}/report.{fmt}",
            "/api/v1/jobs/{job_id}/thumbnails/{result_id}",
            "/api/v1/models",
        ):
            assert route in paths, route
        assert "text/html" in client.get("/api/v1/docs").headers["content-type"]
        missing = client.get("/api/v1/jobs/999")
        assert missing.status_code == 404 and "999" in missing.json()["detail"]
        assert client.get("/api/v1/jobs/0").status_code == 422


def test_classify_upload_and_url(web_url: str, http: Any) -> None:
    data = jpeg_bytes(1, (120, 90))
    with _client(web_url) as client:
        upload = client.post("/api/v1/classify", files={"file": (HOSTILE, data, "image/jpeg")})
        assert upload.status_code == 200, upload.text
        result = upload.json()
        assert 0.0 <= result["p_real"] <= 1.0
        assert result["label"] in ("real", "fake", "uncertain")
        assert (result["width"], result["height"], result["format"]) == (120, 90, "JPEG")
        assert result["verdict"] and result["model"] == "tiny:1"
        for column in (
            "provenance",
            "generator",
            "source_type",
            "c2pa_state",
            "evidence",
            "tiles",
            "tile_box",
        ):
            assert column in result
        # the same bytes by URL give the same score
        by_url = client.post("/api/v1/classify", json={"url": http.add("/a.jpg", data)})
        assert by_url.status_code == 200, by_url.text
        assert by_url.json()["p_real"] == pytest.approx(result["p_real"])

        not_image = client.post("/api/v1/classify", files={"file": ("x.jpg", b"hello" * 100, "image/jpeg")})
        assert not_image.status_code == 400 and not_image.json()["error_kind"] == "not_an_image"
        for body in ({"url": "file:///etc/passwd"}, {"url": "ftp://example.com/a.jpg"}, {"nothing": 1}):
            refused = client.post("/api/v1/classify", json=body)
            assert refused.status_code == 400, body
        assert (
            client.post(
                "/api/v1/classify", content=b"raw", headers={"content-type": "image/jpeg"}
            ).status_code
            == 400
        )
        assert client.post("/api/v1/classify", files={"other": ("a", b"x")}).status_code == 400


def test_private_url_refused_without_the_allow_setting(home: Path, http: Any) -> None:
    settings = dataclasses.replace(get_settings(), url_allow_networks=(), url_allow_private=False)
    with serve(settings) as base, _client(base) as client:
        refused = client.post("/api/v1/classify", json={"url": http.add("/b.jpg", jpeg_bytes(2))})
        assert refused.status_code == 400
        body = refused.json()
        assert body["error_kind"] == "refused_address", body


def test_database_faults_are_503_when_they_may_pass_and_name_no_statement() -> None:
    import asyncio
    import json as jsonlib

    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    from aiscan.jobs.web import app as web_app

    refused = sa.create_engine("postgresql+psycopg://aiscan@127.0.0.1:1/aiscan")
    with pytest.raises(SQLAlchemyError) as caught:
        refused.connect()
    answer = asyncio.run(web_app._database_error(None, caught.value))  # type: ignore[arg-type]
    assert answer.status_code == 503
    assert "unavailable just now" in jsonlib.loads(bytes(answer.body))["detail"]
    broken = sa.create_engine("sqlite://")
    with pytest.raises(SQLAlchemyError) as caught, broken.connect() as conn:
        conn.execute(sa.text("SELECT secret_value FROM no_such_table"))
    answer = asyncio.run(web_app._database_error(None, caught.value))  # type: ignore[arg-type]
    detail = jsonlib.loads(bytes(answer.body))["detail"]
    assert answer.status_code == 500 and "secret_value" not in detail and "OperationalError" in detail


def test_a_restarted_server_runs_the_jobs_it_had_queued(home: Path, tmp_path: Path) -> None:
    from aiscan.jobs.store.db import open_database
    from aiscan.jobs.submit import create_job
    from aiscan.jobs.web.runner import RUNNER

    png_dir(tmp_path / "a", 3, (48, 40))
    settings = get_settings()
    db = open_database(settings.database_url)
    # As a server that stopped right after accepting them left them: one queued, one from `aiscan scan`.
    queued = create_job(
        db, settings, [str(tmp_path / "a")], model_ref=None, chunk_size=2, options={"runner": RUNNER}
    )
    foreign = create_job(db, settings, [str(tmp_path / "a")], model_ref=None, chunk_size=2)
    with serve(settings) as base, _client(base) as client:
        deadline = time.monotonic() + 120
        while (summary := client.get(f"/api/v1/jobs/{queued}").json())["status"] != "done":
            assert time.monotonic() < deadline, summary
            time.sleep(0.2)
        assert summary["counts"]["done"] == summary["counts"]["total"] == 3
        assert client.get(f"/api/v1/jobs/{foreign}").json()["status"] == "pending"


def test_upload_cap_is_enforced_while_reading(home: Path) -> None:
    settings = dataclasses.replace(get_settings(), max_upload_bytes=4096)
    big = jpeg_bytes(3, (400, 300), quality=100)
    assert len(big) > 4096

    def chunked() -> Iterator[bytes]:  # no Content-Length: the cap counts the bytes as they come
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        for _ in range(1024):
            yield b"\0" * 1024

    with serve(settings) as base, _client(base) as client:
        declared = client.post("/api/v1/classify", files={"file": ("big.jpg", big, "image/jpeg")})
        assert declared.status_code == 413 and "AISCAN_MAX_UPLOAD_BYTES" in declared.json()["detail"]
        streamed = client.post(
            "/api/v1/classify", content=chunked(), headers={"content-type": "multipart/form-data; boundary=x"}
        )
        assert streamed.status_code == 413
        assert "content-security-policy" in streamed.headers
        small = client.post(
            "/api/v1/classify", files={"file": ("s.jpg", jpeg_bytes(4, (40, 30)), "image/jpeg")}
        )
        assert small.status_code == 200, small.text


def test_jobs_results_reports_and_metrics(web_url: str, tmp_path: Path, invoke: Callable[..., str]) -> None:
    images = tmp_path / "imgs"
    png_dir(images, 7, (64, 48))
    (images / "bad.png").write_bytes(b"not an image")
    with _client(web_url) as client:
        assert client.post("/api/v1/jobs", json={"sources": []}).status_code == 422
        # Another site's page may post text/plain with no CORS preflight: only JSON starts a scan.
        body = json.dumps({"sources": [str(images)]})
        for kind in ("text/plain", "application/x-www-form-urlencoded"):
            forged = client.post("/api/v1/jobs", content=body, headers={"content-type": kind})
            assert forged.status_code == 422
        assert client.post("/api/v1/jobs", json={"sources": [str(tmp_path / "nope")]}).status_code == 400
        created = client.post("/api/v1/jobs", json={"sources": [str(images)], "model": None})
        assert created.status_code == 201, created.text
        job_id = created.json()["job_id"]
        summary = _wait_done(client, job_id)
        assert summary["status"] == "done" and summary["counts"]["total"] == 8
        assert summary == {
            **json.loads(invoke("jobs", "show", str(job_id), "--json")),
            "elapsed_s": summary["elapsed_s"],
        }
        assert any(j["job_id"] == job_id for j in client.get("/api/v1/jobs").json())

        for fmt in ("csv", "jsonl"):
            streamed = client.get(f"/api/v1/jobs/{job_id}/report.{fmt}")
            assert streamed.status_code == 200
            assert streamed.text == invoke("report", str(job_id), "--format", fmt)
            assert f"aiscan-job-{job_id}.{fmt}" in streamed.headers["content-disposition"]
        assert client.get("/api/v1/jobs/999/report.csv").status_code == 404
        assert client.get(f"/api/v1/jobs/{job_id}/report.xml").status_code == 422

        # every page, two at a time, filtered and not
        _check_pages(client, job_id, 8)
        failed = client.get(f"/api/v1/jobs/{job_id}/results", params={"error_kind": "not_an_image"}).json()
        assert [item["image_uri"].endswith("bad.png") for item in failed["items"]] == [True]
        assert client.get(f"/api/v1/jobs/{job_id}/results", params={"limit": 0}).status_code == 422
        assert client.get(f"/api/v1/jobs/{job_id}/results", params={"limit": 1001}).status_code == 422
        assert client.get(f"/api/v1/jobs/{job_id}/results", params={"cursor": "garbage"}).status_code == 400
        assert client.get(f"/api/v1/jobs/{job_id}/results", params={"verdict": "nope"}).status_code == 400

        first = client.get(f"/api/v1/jobs/{job_id}/results", params={"limit": 1000}).json()["items"]
        scored = next(item for item in first if item["p_real"] is not None)
        jpeg = _store_thumbnail(job_id, scored["image_uri"])
        thumb = client.get(f"/api/v1/jobs/{job_id}/thumbnails/{scored['result_id']}")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert thumb.content == jpeg
        assert client.get(f"/api/v1/jobs/999/thumbnails/{scored['result_id']}").status_code == 404
        assert client.get(f"/api/v1/jobs/{job_id}/thumbnails/{10**6}").status_code == 404
        assert client.get(f"/api/v1/jobs/{job_id}/thumbnails/..%2F..%2Fetc%2Fpasswd").status_code in (
            404,
            422,
        )

        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        text = metrics.text
        assert 'aiscan_jobs{status="done"} 1.0' in text
        assert 'aiscan_image_errors{error_kind="not_an_image"} 1.0' in text
        assert "aiscan_images{verdict=" in text
        assert (
            'aiscan_http_request_duration_seconds_count{method="GET",route="/api/v1/jobs/{job_id}",status="200"}'
            in text
        )


def _store_thumbnail(job_id: int, image_uri: str) -> bytes:
    """The thumbnail a scan stores for an image, written (or replaced) in the job's store."""
    from sqlalchemy import select

    from aiscan.jobs.store.db import open_database
    from aiscan.jobs.store.models import Result, Thumbnail

    jpeg = jpeg_bytes(9, (32, 24))
    with open_database(get_settings().database_url).session() as s:
        key = s.scalar(select(Result.uri_key).where(Result.job_id == job_id, Result.image_uri == image_uri))
        assert key is not None
        s.merge(Thumbnail(job_id=job_id, uri_key=key, data=jpeg))
    return jpeg


def _check_pages(client: httpx.Client, job_id: int, total: int) -> None:
    for sort in ("p_real", "-p_real", "image_uri"):
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, "sort": sort}
            if cursor:
                params["cursor"] = cursor
            page = client.get(f"/api/v1/jobs/{job_id}/results", params=params).json()
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == total and len({item["result_id"] for item in seen}) == total
        scored = [item["p_real"] for item in seen if item["p_real"] is not None]
        assert scored == sorted(scored, reverse=sort == "-p_real") or sort == "image_uri"
        if sort == "image_uri":
            assert [item["image_uri"] for item in seen] == sorted(item["image_uri"] for item in seen)
    labels = {item["label"] for item in seen if item["label"]}
    for label in labels:
        page = client.get(f"/api/v1/jobs/{job_id}/results", params={"label": label, "limit": 1000}).json()
        assert page["items"] and {item["label"] for item in page["items"]} == {label}


TOKEN = "t0ken-for-tests-0123456789"


def test_token_rules(home: Path) -> None:
    for args in (
        ["--host", "0.0.0.0"],
        ["--host", "192.0.2.1"],
        ["--port", "0"],
        ["--host", "no.such.host."],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "aiscan.jobs", "serve", *args], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode != 0, args
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
        if args[0] == "--host" and args[1][0].isdigit():
            assert "AISCAN_API_TOKEN" in proc.stderr
    # the other commands do not import the web stack
    code = "import sys, aiscan.jobs.cli; print('fastapi' in sys.modules or 'uvicorn' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert imported.stdout.strip() == "False", imported.stderr

    settings = dataclasses.replace(get_settings(), api_token=TOKEN)
    assert TOKEN not in repr(settings)
    with serve(settings) as base, _client(base) as client:
        for path in ("/api/v1/health", "/metrics", "/static/aiscan.css", "/api/v1/openapi.json", "/"):
            anonymous = client.get(path)
            assert anonymous.status_code == 401, path
            assert "AISCAN_API_TOKEN" in anonymous.json()["detail"]
            assert "content-security-policy" in anonymous.headers
            assert client.get(path, headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 401
            assert client.get(path, headers={"Authorization": TOKEN}).status_code == 401
        good = client.get("/api/v1/health", headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200
