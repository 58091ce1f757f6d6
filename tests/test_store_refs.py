"""Refs and rows that a database would refuse as they are, on SQLite and PostgreSQL: stored, keyed and
recoverable; a row that still cannot be written costs only itself; data errors are never transient."""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from results import insert_old_model_and_job
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from aiscan.jobs.store import db as store_db
from aiscan.jobs.store.db import Database, is_transient
from aiscan.jobs.store.models import Chunk, Job, JobStatus, Result, ResultRow
from aiscan.jobs.store.operations import (
    add_chunk,
    claim_chunk,
    commit_chunk,
    end_planning,
    mark_job,
    reopen_job,
    start_planning,
    unscored_refs,
)
from aiscan.jobs.store.queries import get_job, job_counts, register_model
from aiscan.jobs.store.refs import (
    decode_ref,
    display_ref,
    encode_ref,
    pack_refs,
    storable_text,
    unpack_refs,
    uri_key,
)
from aiscan.jobs.summary import job_summary

NUL_URL = "http://example.test/a\x00b.jpg"
# A file name with the byte 0xE9 (latin-1 "é"), as os.fsdecode gives it: a lone surrogate.
LATIN1_PATH = "/data/caf\udce9.jpg"
LONG_URL = "https://bucket.example.test/img.jpg?X-Amz-Signature=" + secrets.token_hex(2560)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'refs.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def db(url: str):
    database = Database(url, auto_upgrade=True)
    yield database
    database.dispose()


def _job(db: Database, chunk_size: int = 8) -> tuple[int, int]:
    with db.session() as s:
        model = register_model(s, name="m", path="/nowhere", sha256="0" * 64, meta={})
        job = Job(
            sources=["/x"],
            model_id=model.id,
            chunk_size=chunk_size,
            options={},
            planned=False,
            total=0,
            skipped=0,
        )
        s.add(job)
        s.flush()
        return job.id, model.id


def _results(db: Database, job_id: int) -> list[Result]:
    with db.session() as s:
        rows = list(s.scalars(select(Result).where(Result.job_id == job_id).order_by(Result.id)))
        s.expunge_all()
    return rows


def _scored(ref: str, **columns: object) -> ResultRow:
    row = ResultRow(ref, "a" * 64, 10, 4, 3, "PNG", p_real=0.9, label="real")
    for name, value in columns.items():
        setattr(row, name, value)
    return row


def test_the_ref_forms() -> None:
    assert display_ref(NUL_URL) == "http://example.test/a\\x00b.jpg"
    assert display_ref(LATIN1_PATH) == "/data/caf\\xe9.jpg"
    assert display_ref("/data/ok/é.jpg") == "/data/ok/é.jpg"
    for ref in (NUL_URL, LATIN1_PATH, LONG_URL, "\ud83d\ude00 split pair", "plain"):
        assert decode_ref(encode_ref(ref)) == ref
        assert unpack_refs(pack_refs([ref, "plain"])) == [ref, "plain"]
        display_ref(ref).encode("utf-8")  # valid UTF-8, whatever the ref held
    assert pack_refs(["plain", NUL_URL])[0] == "plain" and isinstance(pack_refs([NUL_URL])[0], dict)
    # Strings that surrogateescape would encode to the same bytes keep apart.
    assert uri_key("caf\udcc3\udca9") != uri_key("café")
    assert storable_text('W/"' + "e" * 500 + '"', 200) == 'W/"' + "e" * 197


def test_unstorable_refs_are_stored_shown_and_recovered(db: Database) -> None:
    job_id, model_id = _job(db)
    refs = [NUL_URL, LATIN1_PATH, LONG_URL, "/data/plain.jpg"]
    assert start_planning(db, job_id) is not None
    chunk_id = add_chunk(db, job_id, 0, refs, refs_so_far=4)
    assert chunk_id is not None
    end_planning(db, job_id, total=4, skip_reasons={})
    claim = claim_chunk(db, job_id, chunk_id, "w@host")
    assert claim is not None and claim.refs == refs, "a worker gets the exact refs back"

    rows = [
        ResultRow(NUL_URL, error_kind="http_error", error="HTTP 404 for a\x00b"),
        _scored(LATIN1_PATH, etag='"' + "e" * 400 + '"'),
        ResultRow(LONG_URL, error_kind="unavailable", error="later \udcff"),
        _scored("/data/plain.jpg"),
    ]
    commit_chunk(db, job_id, chunk_id, model_id, rows)
    commit_chunk(db, job_id, chunk_id, model_id, rows)  # a second delivery changes nothing
    stored = {r.image_uri: r for r in _results(db, job_id)}
    assert set(stored) == {display_ref(ref) for ref in refs}
    nul = stored["http://example.test/a\\x00b.jpg"]
    assert nul.error == "HTTP 404 for a\\x00b" and nul.ref is not None and decode_ref(nul.ref) == NUL_URL
    latin = stored["/data/caf\\xe9.jpg"]
    assert latin.p_real == 0.9 and latin.etag is not None and len(latin.etag) == 200
    assert stored[LONG_URL].ref is None and stored[LONG_URL].uri_key == uri_key(LONG_URL)
    assert stored["/data/plain.jpg"].ref is None
    assert unscored_refs(db, job_id, chunk_id) is None, "the chunk is done"

    # `jobs retry --errors`: the failed images come back as their exact refs in a new chunk.
    reopened = reopen_job(db, job_id, errors=True)
    assert reopened.images == 2
    [new_chunk] = reopened.chunk_ids
    again = claim_chunk(db, job_id, new_chunk, "w@host")
    assert again is not None and sorted(again.refs) == sorted([NUL_URL, LONG_URL])
    unscored = unscored_refs(db, job_id, new_chunk)
    assert unscored is not None and sorted(unscored.refs) == sorted([NUL_URL, LONG_URL])


def test_a_row_the_database_refuses_costs_only_itself(db: Database) -> None:
    job_id, model_id = _job(db)
    chunk_id = add_chunk(db, job_id, 0, ["/a.jpg", "/b.jpg", "/c.jpg"], refs_so_far=3)
    assert chunk_id is not None
    # An integer no Integer column holds: PostgreSQL says NumericValueOutOfRange, SQLite's driver overflows.
    rows = [_scored("/a.jpg"), _scored("/b.jpg", width=2**70), _scored("/c.jpg")]
    commit_chunk(db, job_id, chunk_id, model_id, rows)
    stored = {r.image_uri: r for r in _results(db, job_id)}
    assert set(stored) == {"/a.jpg", "/b.jpg", "/c.jpg"}
    assert stored["/a.jpg"].p_real == 0.9 and stored["/c.jpg"].p_real == 0.9
    refused = stored["/b.jpg"]
    assert refused.error_kind == "internal" and refused.p_real is None
    assert refused.error is not None and "could not store" in refused.error
    assert str(2**70) not in refused.error
    with db.session() as s:
        assert s.get_one(Chunk, chunk_id).status == "done"


def test_a_failed_chunk_of_poison_refs_closes(db: Database) -> None:
    job_id, model_id = _job(db)
    refs = [NUL_URL, LATIN1_PATH, LONG_URL]
    chunk_id = add_chunk(db, job_id, 0, refs, refs_so_far=3)
    assert chunk_id is not None
    unscored = unscored_refs(db, job_id, chunk_id)
    assert unscored is not None and unscored.refs == refs
    message = "gave up: \x00 \udcff"
    commit_chunk(
        db, job_id, chunk_id, model_id, [ResultRow(r, error_kind="internal", error=message) for r in refs]
    )
    assert unscored_refs(db, job_id, chunk_id) is None
    assert {r.error for r in _results(db, job_id)} == {"gave up: \\x00 \\xff"}


def test_duplicates_are_counted_so_done_equals_total(db: Database) -> None:
    job_id, model_id = _job(db, chunk_size=3)
    start_planning(db, job_id)
    # "/a" twice in the first chunk, and again in the second.
    first = add_chunk(db, job_id, 0, ["/a", "/b", "/a"], refs_so_far=3)
    second = add_chunk(db, job_id, 1, ["/a", "/c"], refs_so_far=5)
    assert first is not None and second is not None
    end_planning(db, job_id, total=5, skip_reasons={"not_an_image": 1, "symlink_loop": 1})
    commit_chunk(
        db, job_id, first, model_id, [_scored("/a"), ResultRow("/b", error_kind="missing"), _scored("/a")]
    )
    commit_chunk(db, job_id, second, model_id, [_scored("/a"), _scored("/c")])
    commit_chunk(db, job_id, second, model_id, [_scored("/a"), _scored("/c")])  # redelivered
    mark_job(db, job_id, JobStatus.DONE)
    with db.session() as s:
        summary = job_summary(s, job_id)
    assert summary["counts"]["done"] == summary["counts"]["total"] == 5
    assert summary["duplicates"] == 2
    assert summary["skip_reasons"] == {"not_an_image": 1, "symlink_loop": 1}

    # `retry --errors` re-runs "/b", which already has its row: not a duplicate.
    reopened = reopen_job(db, job_id, errors=True)
    [retry_chunk] = reopened.chunk_ids
    commit_chunk(db, job_id, retry_chunk, model_id, [_scored("/b")])
    mark_job(db, job_id, JobStatus.DONE)
    with db.session() as s:
        counts = job_counts(s, get_job(s, job_id))
        assert get_job(s, job_id).duplicates == 2
    assert (counts.done, counts.total, counts.errors) == (5, 5, 0)


def test_retry_errors_of_a_job_of_one_chunk(db: Database) -> None:
    job_id, model_id = _job(db)
    start_planning(db, job_id)
    chunk_id = add_chunk(db, job_id, 0, ["/a", "/b"], refs_so_far=2)
    assert chunk_id is not None
    end_planning(db, job_id, total=2, skip_reasons={})
    commit_chunk(db, job_id, chunk_id, model_id, [_scored("/a"), ResultRow("/b", error_kind="timeout")])
    mark_job(db, job_id, JobStatus.DONE)
    reopened = reopen_job(db, job_id, errors=True)
    assert reopened.images == 1 and len(reopened.chunk_ids) == 1
    with db.session() as s:
        seqs = sorted(s.scalars(select(Chunk.seq).where(Chunk.job_id == job_id)))
        assert seqs == [0, 1]
        assert get_job(s, job_id).status == "running"


# -- transient or not ------------------------------------------------------------------------------


def test_index_row_too_large_is_not_transient_and_a_lost_connection_is(postgres_url: str) -> None:
    engine = store_db.make_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v text)"))
        conn.execute(text("CREATE INDEX t_v ON t (v)"))
    # Random text does not compress below the btree's row limit.
    with pytest.raises(OperationalError) as too_large, engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": secrets.token_hex(5000)})
    assert type(too_large.value.orig).__name__ == "ProgramLimitExceeded"
    assert not is_transient(too_large.value)

    # A connection the server ended (as a restart or an administrator does) is transient.
    with engine.connect() as victim, engine.connect() as admin:
        pid = victim.execute(text("SELECT pg_backend_pid()")).scalar_one()
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(OperationalError) as lost:
            victim.execute(text("SELECT 1"))
    assert is_transient(lost.value)
    engine.dispose()

    refused = store_db.make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    with pytest.raises(OperationalError) as unreachable:
        refused.connect()
    assert is_transient(unreachable.value)


def test_sqlite_lock_is_transient_and_integrity_is_not(tmp_path: Path) -> None:
    path = tmp_path / "lock.db"
    holder = sqlite3.connect(path)
    holder.execute("CREATE TABLE t (v INTEGER UNIQUE)")
    holder.commit()
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(OperationalError) as locked, engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    assert is_transient(locked.value)
    holder.rollback()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    with pytest.raises(sa.exc.IntegrityError) as duplicate, engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    assert not is_transient(duplicate.value)
    with pytest.raises(OperationalError) as no_table, engine.begin() as conn:
        conn.execute(text("SELECT * FROM nowhere"))
    assert not is_transient(no_table.value)
    holder.close()
    engine.dispose()


# -- migration 0005 --------------------------------------------------------------------------------


def test_migration_0005_keys_existing_rows_and_rolls_back(url: str) -> None:
    engine = store_db.make_engine(url)
    store_db.upgrade(engine, "0004")
    with engine.begin() as conn:
        insert_old_model_and_job(conn, total=2)
        conn.execute(
            text(
                "INSERT INTO results (job_id, image_uri, model_id, classified_at, p_real) "
                "VALUES (1, :uri, 1, CURRENT_TIMESTAMP, 0.5)"
            ),
            [{"uri": "/old/é.jpg"}, {"uri": "/old/b.jpg"}],
        )
    store_db.upgrade(engine)
    db = Database(url, auto_upgrade=False)
    with db.session() as s:
        keys = dict(s.execute(select(Result.image_uri, Result.uri_key)).all())
        assert keys == {"/old/é.jpg": uri_key("/old/é.jpg"), "/old/b.jpg": uri_key("/old/b.jpg")}
        job = get_job(s, 1)
        assert job.duplicates == 0 and job.skip_reasons is None
    # The backfilled key is the one new rows use: the same image written again replaces its row.
    commit_chunk(db, 1, add_chunk(db, 1, 0, ["/old/é.jpg"], refs_so_far=2) or 0, 1, [_scored("/old/é.jpg")])
    add_chunk(db, 1, 1, [NUL_URL, LATIN1_PATH], refs_so_far=4)
    with db.session() as s:
        assert s.scalar(select(sa.func.count()).select_from(Result)) == 2
        assert s.scalar(select(Result.p_real).where(Result.image_uri == "/old/é.jpg")) == 0.9
    long_chunk = add_chunk(db, 1, 2, [LONG_URL], refs_so_far=5)
    commit_chunk(db, 1, long_chunk or 0, 1, [_scored(LONG_URL)])
    db.dispose()

    store_db.downgrade(engine, "0004")
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("results")}
        assert "uri_key" not in columns and "ref" not in columns
        # The old key cannot index a 5 KB URL on PostgreSQL: that row goes, the others stay.
        kept = 2 if url.startswith("postgresql") else 3
        assert conn.execute(text("SELECT count(*) FROM results")).scalar_one() == kept
        refs = conn.execute(text("SELECT refs FROM chunks WHERE seq = 1")).scalar_one()
        assert "http://example.test/a\\\\x00b.jpg" in str(refs) and "b64" not in str(refs)
        uniques = {u["name"] for u in sa.inspect(conn).get_unique_constraints("results")}
        assert "uq_results_job_uri" in uniques
    store_db.upgrade(engine)
    assert store_db.current_revision(engine) == store_db.head_revision()
    db = Database(url, auto_upgrade=False)
    commit_chunk(db, 1, long_chunk or 0, 1, [_scored(LONG_URL), _scored("/new.jpg")])
    with db.session() as s:
        # New rows get fresh ids after the copy PostgreSQL made; the long URL has its one row again.
        assert s.scalar(select(sa.func.count()).select_from(Result)) == 4
    db.dispose()
    engine.dispose()


def test_a_refused_row_leaves_nothing_on_stderr(postgres_url: str, tmp_path: Path) -> None:
    # psycopg's pipelined executemany of a full chunk warns on stderr as it aborts, past pytest's log capture.
    script = tmp_path / "refuse.py"
    script.write_text(
        "import sys\n"
        "from aiscan.jobs.store.db import Database\n"
        "from aiscan.jobs.store.models import Job, ResultRow\n"
        "from aiscan.jobs.store.operations import add_chunk, commit_chunk\n"
        "from aiscan.jobs.store.queries import register_model\n"
        "db = Database(sys.argv[1], auto_upgrade=True)\n"
        "with db.session() as s:\n"
        "    m = register_model(s, name='m', path='/x', sha256='0' * 64, meta={})\n"
        "    j = Job(sources=['/x'], model_id=m.id, chunk_size=256, options={}, planned=False, total=0,\n"
        "            skipped=0)\n"
        "    s.add(j)\n"
        "    s.flush()\n"
        "    job_id, model_id = j.id, m.id\n"
        "for seq in range(5):\n"
        "    refs = [f'/{seq}/{i}.jpg' for i in range(256)]\n"
        "    chunk = add_chunk(db, job_id, seq, refs, refs_so_far=0)\n"
        "    rows = [ResultRow(r, width=2**70 if i == 7 else 1) for i, r in enumerate(refs)]\n"
        "    commit_chunk(db, job_id, chunk, model_id, rows)\n"
        "db.dispose()\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, str(script), postgres_url], capture_output=True, text=True, timeout=120, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")
