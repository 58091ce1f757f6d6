"""Provenance in the store: migration 0006 on rows written before it, verdicts counted, and evidence
that PostgreSQL and SQLite both keep as written."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from results import insert_old_model_and_job
from sqlalchemy import select, text

from aiscan.jobs.store import db as store_db
from aiscan.jobs.store.db import Database
from aiscan.jobs.store.models import Result, ResultRow
from aiscan.jobs.store.operations import add_chunk, commit_chunk
from aiscan.jobs.summary import job_summary


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'p.db'}"
    return request.getfixturevalue("postgres_url")


def test_migration_0006_gives_old_rows_a_verdict_and_no_provenance(url: str) -> None:
    engine = store_db.make_engine(url)
    store_db.upgrade(engine, "0005")
    with engine.begin() as conn:
        insert_old_model_and_job(conn, total=4)
        conn.execute(
            text(
                "INSERT INTO results (job_id, image_uri, uri_key, model_id, classified_at, p_real, label,"
                " error_kind) VALUES (1, :uri, :key, 1, CURRENT_TIMESTAMP, :p, :label, :kind)"
            ),
            [
                {"uri": "/r.jpg", "key": "a" * 64, "p": 0.9, "label": "real", "kind": None},
                {"uri": "/f.jpg", "key": "b" * 64, "p": 0.1, "label": "fake", "kind": None},
                {"uri": "/bad.jpg", "key": "c" * 64, "p": None, "label": None, "kind": "truncated"},
            ],
        )
    store_db.upgrade(engine)
    db = Database(url, auto_upgrade=False)
    with db.session() as s:
        old = {r.image_uri: r for r in s.scalars(select(Result))}
        assert {uri: r.verdict for uri, r in old.items()} == {
            "/r.jpg": "real",
            "/f.jpg": "fake",
            "/bad.jpg": "error",
        }
        assert {r.provenance for r in old.values()} == {None}  # not read, which is not "none"
    # New rows beside them: declared, with evidence holding text PostgreSQL's json refuses raw.
    evidence = {"metadata": {"prompt": "a fox\u0000 in snow ☃", "steps": 25}, "errors": []}
    declared = ResultRow(
        "/new.png",
        p_real=0.8,
        label="real",
        verdict="ai_declared",
        provenance="metadata",
        generator="ComfyUI (sd_xl_base_1.0)",
        evidence=evidence,
    )
    chunk = add_chunk(db, 1, 0, ["/new.png", "/late.jpg"], refs_so_far=4) or 0
    commit_chunk(db, 1, chunk, 1, [declared, ResultRow("/late.jpg", error_kind="timeout", error="late")])
    with db.session() as s:
        summary = job_summary(s, 1)
        new = s.scalar(select(Result).where(Result.image_uri == "/new.png"))
        assert new is not None and new.evidence is not None
        assert new.evidence["metadata"]["steps"] == 25 and "fox" in new.evidence["metadata"]["prompt"]
    assert summary["verdicts"] == {"real": 1, "fake": 1, "error": 2, "ai_declared": 1}
    assert summary["counts"]["real"] == 2  # the label stays the model's
    db.dispose()

    store_db.downgrade(engine, "0005")
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("results")}
        assert not columns & {"verdict", "provenance", "generator", "source_type", "c2pa_state", "evidence"}
        assert conn.execute(text("SELECT count(*) FROM results")).scalar_one() == 5
    store_db.upgrade(engine)
    assert store_db.current_revision(engine) == store_db.head_revision()
