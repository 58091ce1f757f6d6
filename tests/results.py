"""Reading a job's result rows back in tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from aiscan.jobs.settings import get_settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.models import Result


def job_rows(job_id: int) -> dict[str, Any]:
    """A job's result rows by image_uri, detached from their session."""
    with open_database(get_settings().database_url).session() as s:
        rows = {r.image_uri: r for r in s.scalars(select(Result).where(Result.job_id == job_id))}
        s.expunge_all()
    return rows
