"""The schema comes from Alembic migrations and behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError

from aiscan.jobs.errors import NotFound
from aiscan.jobs.store import db as store_db
from aiscan.jobs.store.models import Base, Job, Result, ResultRow
from aiscan.jobs.store.operations import upsert_results
from aiscan.jobs.store.queries import register_model, resolve_model, set_default_model


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


TABLES = {
    "models",
    "jobs",
    "chunks",
    "results",
    "thumbnails",
    "schedules",
    "schedule_runs",
    "schedule_marks",
    "schedule_seen",
}


def _tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def _fk_columns(diff: tuple) -> list[str]:
    return [str(c) for c in diff[1].columns] if diff[0] in ("add_fk", "remove_fk") else []


def _differences(conn, backend: str) -> list[tuple]:
    diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    if backend == "sqlite":
        # 0008 adds jobs.schedule_id with an in-line REFERENCES ... ON DELETE SET NULL (a rebuilt `jobs`
        # would cascade-delete every chunk and result); SQLite reflection does not read an in-line
        # ON DELETE, so that one FK shows as changed. test_schedules checks the SET NULL itself.
        diffs = [d for d in diffs if _fk_columns(d) != ["jobs.schedule_id"]]
    return diffs


def test_migrations_create_the_orm_schema_and_roll_back(url: str) -> None:
    engine = store_db.make_engine(url)
    assert store_db.current_revision(engine) is None
    store_db.upgrade(engine)
    assert store_db.current_revision(engine) == store_db.head_revision()
    assert _tables(engine) == TABLES
    with engine.connect() as conn:
        # The migrations and the ORM models describe the same schema: autogenerate finds nothing.
        assert _differences(conn, engine.url.get_backend_name()) == []
    store_db.downgrade(engine, "base")
    assert _tables(engine) == set()
    store_db.upgrade(engine)
    assert _tables(engine) == TABLES
    engine.dispose()


def _job(db: store_db.Database) -> tuple[int, int]:
    with db.session() as s:
        model = register_model(s, name="m", path="/nowhere", sha256="0" * 64, meta={"input_size": 75})
        job = Job(
            sources=["/x"], model_id=model.id, chunk_size=8, options={}, planned=False, total=0, skipped=0
        )
        s.add(job)
        s.flush()
        return job.id, model.id


def _row(uri: str, p: float) -> ResultRow:
    label = "real" if p > 0.6 else "fake"
    return ResultRow(uri, "a" * 64, 10, 4, 3, "PNG", p_real=p, label=label)


def test_upsert_keeps_one_row_per_job_and_uri(url: str) -> None:
    db = store_db.Database(url, auto_upgrade=True)
    job_id, model_id = _job(db)
    now = datetime.now(UTC)
    with db.session() as s:
        upsert_results(s, job_id, model_id, [_row(f"/img/{i}.png", 0.1) for i in range(5)], classified_at=now)
    # The same chunk delivered again, with a changed score: replaced, not duplicated.
    with db.session() as s:
        upsert_results(s, job_id, model_id, [_row(f"/img/{i}.png", 0.9) for i in range(5)], classified_at=now)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Result)) == 5
        assert {r.p_real for r in s.scalars(select(Result))} == {0.9}
    with pytest.raises(IntegrityError), db.session() as s:
        columns = asdict(_row("/img/0.png", 0.5))
        del columns["thumbnail"]  # not a results column (its own table)
        s.add(Result(job_id=job_id, model_id=model_id, **columns))
        s.flush()
    db.dispose()


def test_model_registry_versions_and_default(url: str) -> None:
    db = store_db.Database(url, auto_upgrade=True)
    with db.session() as s:
        with pytest.raises(NotFound, match="no default model"):
            resolve_model(s, None)
        a1 = register_model(s, name="a", path="/a1", sha256="1" * 64, meta={})
        a2 = register_model(s, name="a", path="/a2", sha256="2" * 64, meta={})
        b1 = register_model(s, name="b", path="/b1", sha256="3" * 64, meta={})
        assert (a1.version, a2.version, b1.version) == (1, 2, 1)
        assert a1.is_default and not a2.is_default and not b1.is_default
        assert resolve_model(s, None).ref == "a:1"
        assert resolve_model(s, "a").ref == "a:2"
        assert resolve_model(s, "a:1").ref == "a:1"
        with pytest.raises(NotFound):
            resolve_model(s, "a:9")
        with pytest.raises(NotFound):
            resolve_model(s, "zzz")
        set_default_model(s, "b")
    with db.session() as s:
        assert resolve_model(s, None).ref == "b:1"
    db.dispose()


def test_unmigrated_server_database_is_a_clear_error(postgres_url: str) -> None:
    with pytest.raises(store_db.DatabaseError, match="run `aiscan db upgrade`"):
        store_db.Database(postgres_url, auto_upgrade=False)


def test_embedded_sqlite_is_migrated_on_first_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'aiscan.db'}"
    db = store_db.Database(url, auto_upgrade=True)
    assert store_db.current_revision(db.engine) == store_db.head_revision()
    db.dispose()


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(store_db.DatabaseError, match="cannot connect") as err:
        store_db.Database("postgresql+psycopg://nobody:s3cret@127.0.0.1:1/none", auto_upgrade=False)
    assert "s3cret" not in str(err.value)
