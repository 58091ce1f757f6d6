"""Shared fixtures: an isolated AISCAN_HOME per test, the CLI in-process, real Redis and PostgreSQL."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench import services

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The local PostgreSQL server, started if it is down; the URL of its `test` database."""
    services.ensure_postgres()
    return services.postgres_url()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database of this test's own, dropped afterwards."""
    with services.scratch_database("aiscan_test") as url:
        yield url


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The local Redis server, started if it is down; the URL of its database 0."""
    services.ensure_redis()
    return services.redis_url()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """An empty Redis database number of this test's own, flushed afterwards."""
    with services.scratch_redis_db() as url:
        yield url


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


@pytest.fixture
def invoke(aiscan_home: Path) -> Callable[..., str]:
    """The aiscan CLI in this process under the test's AISCAN_HOME: ``invoke("scan", ...)`` gives its
    output, and fails the test with that output on a non-zero exit."""
    from click.testing import CliRunner

    from aiscan.jobs.cli import cli

    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    return run
