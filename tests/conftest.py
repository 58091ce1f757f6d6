"""Shared fixtures: an isolated AISCAN_HOME per test, real PostgreSQL databases, small images."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# The machine notes' command for a PostgreSQL server that is down.
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


def _pg_reachable() -> bool:
    import psycopg

    try:
        psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3).close()
        return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The local PostgreSQL server, started if it is down."""
    if not _pg_reachable():
        subprocess.run(PG_START, shell=True, check=False, capture_output=True)
        for _ in range(30):
            if _pg_reachable():
                break
            time.sleep(1)
        else:
            pytest.fail("PostgreSQL on 127.0.0.1:5432 is down and could not be started")
    return PG_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database of this test's own, dropped afterwards."""
    import psycopg

    name = f"aiscan_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    from aiscan.jobs.store.db import open_database

    open_database.cache_clear()
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def aiscan_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """AISCAN_HOME in a temporary directory, embedded SQLite, settings re-read."""
    from aiscan.jobs.settings import get_settings
    from aiscan.jobs.store.db import open_database

    home = tmp_path / "aiscan-home"
    monkeypatch.setenv("AISCAN_HOME", str(home))
    for var in ("AISCAN_DATABASE_URL", "AISCAN_BROKER_URL", "AISCAN_CHUNK_SIZE", "AISCAN_BATCH_SIZE"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    open_database.cache_clear()
    yield home
    get_settings.cache_clear()
    open_database.cache_clear()
    shutil.rmtree(home, ignore_errors=True)
