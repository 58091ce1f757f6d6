"""A chunk through the real pipeline when images misbehave: poison refs cost only themselves, a chunk
that reaches its deadline keeps what it scored, and --skip-known looks content up one batch at a time."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import netservers
import pytest
from images import jpeg_bytes
from results import job_rows

from aiscan.jobs import scoring
from aiscan.jobs.settings import get_settings
from aiscan.jobs.store.db import open_database
from aiscan.training.synth import write_archive


@pytest.fixture
def url_env() -> dict[str, str]:
    # one retry, and a whole fetch of 3 s at most
    return {"AISCAN_URL_RETRIES": "1", "AISCAN_URL_TIMEOUT": "0.3"}


def test_poison_urls_beside_good_images_cost_only_themselves(
    home: Path,
    http: netservers.FaultyHTTPServer,
    tmp_path: Path,
    invoke: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = [http.add(f"/ok/{i}.jpg", jpeg_bytes(i, (80, 60))) for i in range(6)]
    long_host = f"http://{'a' * 64}.example/x.jpg"
    poison = {
        http.redirect("/to-data", "data:image/png;base64,iVBORw0KGgo="): "bad_url",
        http.redirect("/to-script", "javascript:alert(document.cookie)"): "bad_url",
        http.redirect("/to-long-host", long_host): "bad_url",
        long_host: "bad_url",
        http.add("/bomb.jpg", gzip.compress(b"\0" * 20_000_000), headers={"Content-Encoding": "gzip"}): (
            "http_error"
        ),
        http.add("/drip.jpg", chunks=[b"\xff\xd8"] + [b"\0"] * 600, drip=0.1): "timeout",
        http.url("/boom.jpg?token=s3cret"): "internal",
    }
    # An unforeseen exception inside one fetch (a bug, an input nobody thought of) stays that image's.
    real_fetch = scoring.fetch

    def fetch_with_a_bug(ref: str, settings: object) -> object:
        if "/boom.jpg" in ref:
            raise RuntimeError(f"unexpected failure fetching {ref}")
        return real_fetch(ref, settings)  # type: ignore[arg-type]

    monkeypatch.setattr(scoring, "fetch", fetch_with_a_bug)
    urls = tmp_path / "urls.txt"
    refs = [good[0], *poison, *good[1:]]
    urls.write_text("".join(url + "\n" for url in refs))

    summary = json.loads(invoke("scan", str(urls), "--json", "--chunk-size", "64"))
    assert summary["status"] == "done"
    assert summary["counts"]["total"] == summary["counts"]["done"] == len(refs)
    rows = job_rows(summary["job_id"])
    for url in good:
        assert rows[url].error_kind is None and rows[url].p_real is not None, rows[url].error
    assert {url: rows[url].error_kind for url in poison} == poison
    boom = rows[http.url("/boom.jpg?token=s3cret")].error
    assert boom.startswith("RuntimeError: unexpected failure fetching http://") and "s3cret" not in boom
    assert http.finished["/drip.jpg"] == 0  # cut off while the server was still sending


def test_internal_messages_drop_url_secrets() -> None:
    exc = ValueError("GET https://bob:hunter2@host.test/a.jpg?X-Amz-Signature=abc#frag failed; s3://b/k ok")
    message = scoring.internal_error(exc)
    assert message.startswith("ValueError: GET https://") and "host.test/a.jpg" in message
    assert "hunter2" not in message and "Signature" not in message and message.endswith("s3://b/k ok")


def _chunk_context(tmp_path: Path, n: int) -> tuple[object, int, int, object]:
    from aiscan.jobs.artifacts import classifier_factory
    from aiscan.jobs.pipeline import plan_job
    from aiscan.jobs.submit import create_job
    from aiscan.jobs.tasks import CLASSIFY_CHUNK, TaskContext

    write_archive(tmp_path / "a", n // 2, n - n // 2, n_corrupt=0, n_non_images=0, seed=6)
    settings = get_settings()
    db = open_database(settings.database_url)
    sent: list[tuple] = []
    ctx = TaskContext(settings, db, lambda *a: sent.append(a), classifier_factory(settings, 4))
    job_id = create_job(db, settings, [str(tmp_path / "a")], model_ref=None, chunk_size=n)
    plan_job(ctx, job_id)
    [(_, _, chunk_id)] = [task for task in sent if task[0] == CLASSIFY_CHUNK]
    return ctx, job_id, chunk_id, db


def test_a_chunk_past_its_deadline_keeps_what_it_scored(home: Path, tmp_path: Path) -> None:
    from aiscan.jobs.pipeline import classify_chunk

    ctx, job_id, chunk_id, _db = _chunk_context(tmp_path, 40)
    progress: list[int] = []

    def deadline_passes_after_the_first_batch(n: int) -> None:
        progress.append(n)
        ctx.deadline = time.monotonic()  # type: ignore[attr-defined]

    ctx.on_progress = deadline_passes_after_the_first_batch  # type: ignore[attr-defined]
    classify_chunk(ctx, job_id, chunk_id)  # type: ignore[arg-type]
    rows = list(job_rows(job_id).values())
    scored = [r for r in rows if r.p_real is not None]
    timed_out = [r for r in rows if r.error_kind == "timeout"]
    assert len(rows) == 40 and len(scored) + len(timed_out) == 40
    assert 4 <= len(scored) < 40  # the first batch at least, then nothing new started
    assert {r.error for r in timed_out} == {scoring._CHUNK_TIMEOUT}
    assert "AISCAN_TASK_SOFT_TIME_LIMIT" in scoring._CHUNK_TIMEOUT
    assert sum(progress) == 40  # the timeout rows count as handled too


def test_a_chunk_whose_deadline_passed_before_it_began_times_out_whole(home: Path, tmp_path: Path) -> None:
    from aiscan.jobs.pipeline import classify_chunk

    ctx, job_id, chunk_id, _db = _chunk_context(tmp_path, 6)
    ctx.deadline = time.monotonic() - 1  # type: ignore[attr-defined]
    classify_chunk(ctx, job_id, chunk_id)  # type: ignore[arg-type]
    assert {r.error_kind for r in job_rows(job_id).values()} == {"timeout"}
    assert len(job_rows(job_id)) == 6


def test_task_deadline_leaves_room_for_a_whole_fetch(home: Path) -> None:
    settings = get_settings()
    before = time.monotonic()
    deadline = scoring.task_deadline(settings)
    # 0.3 s URL timeout: a whole fetch takes at most 3.3 s, plus a minute to score and commit
    assert (
        before + settings.task_soft_time_limit - 64
        <= deadline
        <= time.monotonic() + settings.task_soft_time_limit - 63
    )


def test_skip_known_looks_up_one_batch_at_a_time(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, invoke: Callable[..., str]
) -> None:
    write_archive(tmp_path / "a", 10, 10, n_corrupt=0, n_non_images=0, seed=7)
    first = json.loads(invoke("scan", str(tmp_path / "a"), "--json", "--batch-size", "4"))
    lookups: list[int] = []
    real_known = scoring.known_scores

    def counted(db: object, sha256s: object, model_id: int) -> object:
        lookups.append(len(sha256s))  # type: ignore[arg-type]
        return real_known(db, sha256s, model_id)  # type: ignore[arg-type]

    monkeypatch.setattr(scoring, "known_scores", counted)
    second = json.loads(invoke("scan", str(tmp_path / "a"), "--json", "--batch-size", "4", "--skip-known"))
    assert sum(lookups) == 20 and max(lookups) <= 4  # never the whole chunk's content at once
    old = {r.sha256: r.p_real for r in job_rows(first["job_id"]).values()}
    assert {r.sha256: r.p_real for r in job_rows(second["job_id"]).values()} == old


def test_a_read_that_never_returns_becomes_a_timeout_row(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, invoke: Callable[..., str]
) -> None:
    write_archive(tmp_path / "a", 3, 3, n_corrupt=0, n_non_images=0, seed=8)
    stalled = sorted(str(p) for p in (tmp_path / "a").rglob("*.*"))[2]
    release = threading.Event()
    real_fetch = scoring.fetch

    def fetch_on_a_stalled_mount(ref: str, settings: object) -> object:
        if ref == stalled:
            release.wait()  # as open() on a hung NFS server: no deadline reaches into the kernel
        return real_fetch(ref, settings)

    monkeypatch.setattr(scoring, "fetch", fetch_on_a_stalled_mount)
    try:
        summary = json.loads(invoke("scan", str(tmp_path / "a"), "--json"))
    finally:
        release.set()
    assert summary["status"] == "done" and summary["counts"]["done"] == 6
    rows = job_rows(summary["job_id"])
    assert rows[stalled].error_kind == "timeout" and "stalled" in rows[stalled].error
    assert all(r.p_real is not None for uri, r in rows.items() if uri != stalled)
