"""Job control on the embedded path: retry of failed images, cancel, and --skip-known."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from images import jpeg_bytes
from results import job_rows
from sqlalchemy import select

from aiscan.jobs.settings import get_settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.models import Chunk, Job
from aiscan.jobs.submit import cancel_job, create_job
from aiscan.training.synth import write_archive


def test_retry_errors_runs_failed_images_again(
    home: Path, http, tmp_path: Path, invoke: Callable[..., str]
) -> None:
    for i in range(3):
        http.add(f"/ok/{i}.jpg", body=jpeg_bytes(i, (80, 60)))
    http.add("/late.jpg", status=503, body=b"")
    urls = tmp_path / "u.txt"
    urls.write_text("".join(http.url(p) + "\n" for p in ["/ok/0.jpg", "/ok/1.jpg", "/ok/2.jpg", "/late.jpg"]))
    summary = json.loads(invoke("scan", str(urls), "--json", "--chunk-size", "2"))
    job_id = summary["job_id"]
    assert summary["counts"]["errors"] == 1
    assert job_rows(job_id)[http.url("/late.jpg")].error_kind == "http_error"

    http.add("/late.jpg", body=jpeg_bytes(9, (80, 60)))  # the server has recovered
    out = invoke("jobs", "retry", str(job_id), "--errors")
    assert "1 images run again" in out
    rows = job_rows(job_id)
    assert len(rows) == 4
    assert rows[http.url("/late.jpg")].error_kind is None and rows[http.url("/late.jpg")].p_real is not None
    assert json.loads(invoke("jobs", "show", str(job_id), "--json"))["status"] == "done"


def test_cancelled_job_runs_no_more_chunks(home: Path, tmp_path: Path, invoke: Callable[..., str]) -> None:
    from aiscan.jobs.artifacts import classifier_factory
    from aiscan.jobs.inprocess import InProcessQueue, run_queue
    from aiscan.jobs.tasks import TaskContext

    write_archive(tmp_path / "a", 4, 4, n_corrupt=0, n_non_images=0, seed=1)
    settings = get_settings()
    db = open_database(settings.database_url)
    job_id = create_job(db, settings, [str(tmp_path / "a")], model_ref=None, chunk_size=2)
    queue = InProcessQueue()
    queue.send("aiscan.plan_job", job_id)
    # Run the plan and one chunk, then cancel: the three chunks still queued must do nothing.
    ctx = TaskContext(settings, db, queue.send, classifier_factory(settings, 4))
    queue.run_next(ctx)
    queue.run_next(ctx)
    assert cancel_job(db, job_id) == "cancelled"
    run_queue(settings, queue, job_id, batch_size=4, show_progress=False)
    assert len(job_rows(job_id)) == 2
    with db.session() as s:
        assert s.get(Job, job_id).status == "cancelled"
        assert len(list(s.scalars(select(Chunk).where(Chunk.job_id == job_id)))) == 4
    assert "cancelled" in invoke("jobs", "cancel", str(job_id))


def test_skip_known_reuses_results_of_the_same_content(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, invoke: Callable[..., str]
) -> None:
    truth = write_archive(tmp_path / "a", 3, 3, n_corrupt=1, n_non_images=0, seed=2)
    first = json.loads(invoke("scan", str(tmp_path / "a"), "--json"))
    # The same images under other names: their content, and so their sha256, is known.
    copy = tmp_path / "copy"
    copy.mkdir()
    for i, path in enumerate(sorted(truth)):
        (copy / f"c{i}{Path(path).suffix}").write_bytes(Path(path).read_bytes())
    (copy / "new.jpg").write_bytes(jpeg_bytes(42, (80, 60)))

    from aiscan.model import classifier

    calls: list[int] = []
    original = classifier.ImageClassifier.predict

    def counting(self, pixels):  # type: ignore[no-untyped-def]
        calls.append(len(pixels))
        return original(self, pixels)

    # Whatever runtime scores them (AISCAN_RUNTIME), every batch goes through the classifier.
    monkeypatch.setattr(classifier.ImageClassifier, "predict", counting)
    second = json.loads(invoke("scan", str(copy), "--json", "--skip-known"))
    assert calls == [1], "only the one new image may reach the model"
    old = {r.sha256: r for r in job_rows(first["job_id"]).values()}
    new = job_rows(second["job_id"])
    assert len(new) == 8
    for row in new.values():
        if row.sha256 in old and old[row.sha256].p_real is not None:
            assert row.p_real == old[row.sha256].p_real and row.label == old[row.sha256].label
    assert second["counts"]["errors"] == 1  # a corrupt file is decoded again, and fails again


def test_deliveries_that_died_fail_a_chunk_but_retries_do_not(home: Path, tmp_path: Path) -> None:
    from aiscan.jobs.artifacts import classifier_factory
    from aiscan.jobs.pipeline import classify_chunk, plan_job
    from aiscan.jobs.store.operations import claim_chunk
    from aiscan.jobs.tasks import CLASSIFY_CHUNK, TaskContext

    write_archive(tmp_path / "a", 2, 2, n_corrupt=0, n_non_images=0, seed=3)
    settings = get_settings()
    db = open_database(settings.database_url)
    sent: list[tuple] = []
    ctx = TaskContext(settings, db, lambda *a: sent.append(a), classifier_factory(settings, 4))
    chunks = {}
    for name in ("died", "retried"):
        job_id = create_job(db, settings, [str(tmp_path / "a")], model_ref=None, chunk_size=4)
        plan_job(ctx, job_id)
        [(_, _, chunk_id)] = [task for task in sent if task[0] == CLASSIFY_CHUNK and task[1] == job_id]
        for _ in range(4):  # four earlier deliveries that never committed
            claim_chunk(db, job_id, chunk_id, "gone@host")
        chunks[name] = (job_id, chunk_id)

    classify_chunk(ctx, *chunks["died"], retries=0)
    classify_chunk(ctx, *chunks["retried"], retries=4)  # the four were retries after transient faults
    died = job_rows(chunks["died"][0]).values()
    assert len(died) == 4 and {r.error_kind for r in died} == {"worker_lost"}
    assert {r.error for r in died} == {"the chunk was started 4 times and never finished"}
    retried = job_rows(chunks["retried"][0]).values()
    assert len(retried) == 4 and all(r.error_kind is None and r.p_real is not None for r in retried)
