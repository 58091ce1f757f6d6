"""Reading a job's result rows back in tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, text

from aiscan.jobs.settings import get_settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.models import Result


def job_rows(job_id: int) -> dict[str, Any]:
    """A job's result rows by image_uri, detached from their session."""
    with open_database(get_settings().database_url).session() as s:
        rows = {r.image_uri: r for r in s.scalars(select(Result).where(Result.job_id == job_id))}
        s.expunge_all()
    return rows


def insert_old_model_and_job(conn: Connection, total: int) -> None:
    """Model 1 and its running job 1, written with plain SQL as a migration test's data at an older
    revision (whose tables lack the ORM's newer columns)."""
    conn.execute(
        text(
            "INSERT INTO models (id, name, version, sha256, path, meta, is_default, created_at) "
            "VALUES (1, 'm', 1, :sha, '/m', '{}', true, CURRENT_TIMESTAMP)"
        ),
        {"sha": "0" * 64},
    )
    conn.execute(
        text(
            "INSERT INTO jobs (id, status, sources, model_id, chunk_size, options, planned, total,"
            " skipped, created_at)"
            " VALUES (1, 'running', '[\"/x\"]', 1, 8, '{}', true, :total, 0, CURRENT_TIMESTAMP)"
        ),
        {"total": total},
    )
