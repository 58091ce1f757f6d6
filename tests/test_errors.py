"""One error vocabulary: ErrorKind is what rows carry, what the README documents and what migrations keep."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, inspect, select
from sqlalchemy.orm import Session

from aiscan.jobs.store import db as store_db
from aiscan.jobs.store.models import Job, Result
from aiscan.jobs.store.queries import register_model
from aiscan.jobs.store.refs import uri_key
from aiscan.model import errors as model_errors
from aiscan.model.errors import DecodeError, ErrorKind

README = Path(__file__).resolve().parent.parent / "README.md"


def documented_kinds() -> dict[str, str]:
    """The README's error-kind table: kind -> meaning."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n### Error kinds\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (.*?) \|$", section, flags=re.MULTILINE)
    kinds = dict(rows)
    assert len(kinds) == len(rows), "a kind is documented twice"
    return kinds


def test_readme_documents_exactly_the_error_kinds() -> None:
    documented = documented_kinds()
    members = {kind.value for kind in ErrorKind}
    assert sorted(members - documented.keys()) == [], "members missing from the README's table"
    assert sorted(documented.keys() - members) == [], "README kinds that are not ErrorKind members"
    assert all(len(meaning.split()) >= 3 for meaning in documented.values())


def test_readme_mentions_no_retired_kind() -> None:
    assert "not_found" not in README.read_text(encoding="utf-8")


def test_every_decode_error_names_a_kind() -> None:
    subclasses = [
        c for c in vars(model_errors).values() if isinstance(c, type) and issubclass(c, DecodeError)
    ]
    kinds = {c.error_kind for c in subclasses if c is not DecodeError}
    assert kinds == {ErrorKind.NOT_AN_IMAGE, ErrorKind.TRUNCATED, ErrorKind.TOO_LARGE, ErrorKind.UNSUPPORTED}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


def add_results(engine: Engine, kinds: dict[str, str | None]) -> None:
    """One job whose images ``kinds`` failed with the given kinds (None: scored)."""
    with Session(engine) as s, s.begin():
        model = register_model(s, name="m", path="/nowhere", sha256="0" * 64, meta={})
        now = datetime.now(UTC)
        # A core insert names only these columns: the ORM would name every column of the head revision.
        job_id = s.execute(
            insert(Job.__table__)
            .values(
                status="running",
                sources=["/x"],
                model_id=model.id,
                chunk_size=8,
                options={},
                planned=True,
                total=1,
                skipped=0,
                created_at=now,
            )
            .returning(Job.__table__.c.id)
        ).scalar_one()
        # Only the columns every revision has: later migrations add more.
        rows = [
            {
                "job_id": job_id,
                "model_id": model.id,
                "image_uri": uri,
                "error_kind": kind,
                "classified_at": now,
            }
            for uri, kind in kinds.items()
        ]
        if "uri_key" in {c["name"] for c in inspect(s.connection()).get_columns("results")}:
            for row in rows:  # the key every row has since 0005
                row["uri_key"] = uri_key(row["image_uri"])
        s.execute(insert(Result.__table__), rows)


def stored_kinds(engine: Engine) -> dict[str, str | None]:
    with Session(engine) as s:
        return {uri: kind for uri, kind in s.execute(select(Result.image_uri, Result.error_kind))}


def test_migration_0003_merges_not_found_into_missing(url: str) -> None:
    engine = store_db.make_engine(url)
    store_db.upgrade(engine, "0002")
    kinds = {"/a.jpg": "not_found", "/b.jpg": "missing", "/c.jpg": "timeout", "/d.jpg": None}
    add_results(engine, kinds)
    store_db.upgrade(engine, "0003")
    assert stored_kinds(engine) == kinds | {"/a.jpg": "missing"}
    store_db.downgrade(engine, "0002")  # a no-op that must not fail
    engine.dispose()


def test_kinds_are_stored_as_their_values(url: str) -> None:
    engine = store_db.make_engine(url)
    store_db.upgrade(engine)
    add_results(engine, {"/a.jpg": ErrorKind.REFUSED_ADDRESS})
    stored = stored_kinds(engine)["/a.jpg"]
    assert stored == "refused_address" and type(stored) is str
    engine.dispose()
