"""The named state transitions of jobs and chunks, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from aiscan.jobs.store.db import Database
from aiscan.jobs.store.models import Job, JobStatus, ResultRow
from aiscan.jobs.store.operations import (
    add_chunk,
    claim_chunk,
    commit_chunk,
    end_planning,
    known_scores,
    mark_job,
    ready_to_finish,
    start_planning,
    unscored_refs,
)
from aiscan.jobs.store.queries import register_model


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ops.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = Database(url, auto_upgrade=True)
    yield database
    database.dispose()


def _job(db: Database, model_name: str = "m") -> tuple[int, int]:
    with db.session() as s:
        model = register_model(s, name=model_name, path="/nowhere", sha256="0" * 64, meta={})
        job = Job(
            sources=["/x"],
            model_id=model.id,
            chunk_size=2,
            options={"skip_known": True},
            planned=False,
            total=0,
            skipped=0,
        )
        s.add(job)
        s.flush()
        return job.id, model.id


def _status(db: Database, job_id: int) -> tuple[str, str | None, bool]:
    with db.session() as s:
        # Raw SQL: the database holds the plain values, whatever Python type the ORM hands back.
        status, error, finished = s.execute(
            text("SELECT status, error, finished_at IS NOT NULL FROM jobs WHERE id = :id"), {"id": job_id}
        ).one()
    return status, error, bool(finished)


def test_a_job_from_planning_to_done(db: Database) -> None:
    job_id, model_id = _job(db)
    plan = start_planning(db, job_id)
    assert plan is not None and plan.sources == ["/x"] and plan.chunk_size == 2
    assert _status(db, job_id) == ("planning", None, False)
    first = add_chunk(db, job_id, 0, ["/a", "/b"], refs_so_far=2)
    second = add_chunk(db, job_id, 1, ["/c"], refs_so_far=3)
    # A redelivered plan walks the same order and gets the same chunks back.
    assert add_chunk(db, job_id, 0, ["/a", "/b"], refs_so_far=2) == first
    assert first is not None and second is not None and first != second
    assert not ready_to_finish(db, job_id), "not planned yet"
    end_planning(db, job_id, total=3, skip_reasons={"not_an_image": 1})
    assert _status(db, job_id) == ("running", None, False)
    assert start_planning(db, job_id) is None, "a planned job is not planned again"

    claim = claim_chunk(db, job_id, first, "w1@host")
    again = claim_chunk(db, job_id, first, "w2@host")
    assert claim is not None and again is not None
    assert (claim.refs, claim.attempts, claim.done) == (["/a", "/b"], 1, False)
    assert again.attempts == 2 and claim.model.id == model_id and claim.skip_known
    commit_chunk(db, job_id, first, model_id, [ResultRow("/a", p_real=0.9, label="real"), ResultRow("/b")])
    done = claim_chunk(db, job_id, first, "w3@host")
    assert done is not None and done.done and done.attempts == 2, "a committed chunk is not claimed again"
    assert unscored_refs(db, job_id, first) is None
    assert not ready_to_finish(db, job_id)

    # One image of the open chunk is already classified elsewhere in the job: it is not failed.
    commit_chunk(db, job_id, first, model_id, [ResultRow("/c", p_real=0.2, label="fake")])
    unscored = unscored_refs(db, job_id, second)
    assert unscored is not None and unscored.refs == [] and unscored.model_id == model_id
    commit_chunk(db, job_id, second, model_id, [])
    assert ready_to_finish(db, job_id)
    mark_job(db, job_id, JobStatus.DONE)
    assert _status(db, job_id) == ("done", None, True)
    assert not ready_to_finish(db, job_id)
    mark_job(db, job_id, JobStatus.FAILED, error="too late")
    assert _status(db, job_id) == ("done", None, True), "a finished job keeps its end"


def test_a_failed_or_cancelled_job_takes_no_more_work(db: Database) -> None:
    job_id, _model_id = _job(db)
    assert start_planning(db, job_id) is not None
    chunk = add_chunk(db, job_id, 0, ["/a"], refs_so_far=1)
    assert chunk is not None
    mark_job(db, job_id, JobStatus.FAILED, error="aiscan.plan_job failed: gave up after 8 retries")
    assert _status(db, job_id) == ("failed", "aiscan.plan_job failed: gave up after 8 retries", True)
    assert add_chunk(db, job_id, 1, ["/b"], refs_so_far=2) is None
    assert claim_chunk(db, job_id, chunk, "w1@host") is None
    assert start_planning(db, job_id) is None

    other, _ = _job(db, "n")
    mark_job(db, other, JobStatus.CANCELLED)
    assert _status(db, other) == ("cancelled", None, True)


def test_known_scores_are_this_models_classified_content(db: Database) -> None:
    job_id, model_id = _job(db)
    other_job, other_model = _job(db, "n")
    assert start_planning(db, job_id) is not None
    chunk = add_chunk(db, job_id, 0, ["/a", "/b", "/c"], refs_so_far=3)
    assert chunk is not None
    rows = [
        ResultRow(
            "/a",
            sha256="1" * 64,
            p_real=0.9,
            label="real",
            width=4,
            height=3,
            format="PNG",
            tiles=2,
            tile_box="0,0,4,3",
            tile_p_real=0.85,
            verdict="ai_declared",
            provenance="metadata",
            generator="ComfyUI (sd_xl_base_1.0)",
            evidence={"metadata": {"steps": 20}},
            thumbnail=b"\xff\xd8 a small JPEG",
        ),
        ResultRow("/b", sha256="2" * 64, error_kind="truncated", error="cut short"),
    ]
    commit_chunk(db, job_id, chunk, model_id, rows)
    assert start_planning(db, other_job) is not None
    other_chunk = add_chunk(db, other_job, 0, ["/x"], refs_so_far=1)
    assert other_chunk is not None
    commit_chunk(db, other_job, other_chunk, other_model, [ResultRow("/x", sha256="3" * 64, p_real=0.1)])
    known = known_scores(db, {"1" * 64, "2" * 64, "3" * 64}, model_id)
    assert list(known) == ["1" * 64]
    assert known["1" * 64] == {
        "p_real": 0.9,
        "label": "real",
        "tiles": 2,
        "tile_box": "0,0,4,3",
        "tile_p_real": 0.85,
        "width": 4,
        "height": 3,
        "format": "PNG",
        # the provenance read from the same bytes comes along
        "verdict": "ai_declared",
        "provenance": "metadata",
        "generator": "ComfyUI (sd_xl_base_1.0)",
        "source_type": None,
        "c2pa_state": None,
        "evidence": {"metadata": {"steps": 20}},
        # and the thumbnail the scan kept, so a reused image is never decoded to make one
        "thumbnail": b"\xff\xd8 a small JPEG",
    }
    assert known_scores(db, set(), model_id) == {}


def test_the_task_module_stays_light() -> None:
    # Senders and the Celery app import task names and routes from here: no SQL, numpy or Keras.
    code = (
        "import sys, aiscan.jobs.tasks;"
        "heavy = {m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'numpy', 'keras', 'tensorflow'};"
        "sys.exit(str(sorted(heavy)) if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
