"""Shared fixtures: an isolated AISCAN_HOME per test, the CLI in-process, real Redis and PostgreSQL."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture
def url_env() -> dict[str, str]:
    """Settings the `home` fixture sets on top of loopback URLs; a test module may override it."""
    return {"AISCAN_URL_RETRIES": "0"}


@pytest.fixture
def home(
    aiscan_home: Path,
    invoke: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url_env: dict[str, str],
) -> Path:
    """Embedded defaults with loopback URLs allowed and a tiny imported model as the default."""
    from tinymodels import save_tiny_classifier

    from aiscan.jobs.settings import get_settings

    monkeypatch.setenv("AISCAN_URL_ALLOW_NETWORKS", "127.0.0.0/8")
    for name, value in url_env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    save_tiny_classifier(tmp_path / "m.keras", 40, seed=4)
    invoke("model", "import", str(tmp_path / "m.keras"), "--name", "tiny")
    return aiscan_home


@pytest.fixture
def http() -> Iterator[Any]:
    """A loopback HTTP server whose routes a test adds (``netservers.FaultyHTTPServer``)."""
    import netservers

    with netservers.FaultyHTTPServer() as srv:
        yield srv
