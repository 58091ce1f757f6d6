"""Redis and PostgreSQL on 127.0.0.1 for the bench and the tests: checked, started if down, scratch space.

The start commands are the machine notes'. Each run gets a Redis database number and a PostgreSQL
database of its own, so parallel runs share neither queues nor rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

REDIS_START = (
    "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no "
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
PG_STOP = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main stop"
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"

log = logging.getLogger(__name__)


class ServiceDown(RuntimeError):
    """A local service is down and its start command did not bring it up."""


def postgres_url(database: str = "test") -> str:
    """The SQLAlchemy URL of ``database`` on the local server."""
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"


def redis_url(db: int = 0) -> str:
    return f"redis://127.0.0.1:6379/{db}"


def redis_client(db: int = 0) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=6379, db=db, socket_connect_timeout=2)


def redis_up() -> bool:
    import redis

    try:
        return bool(redis_client().ping())
    except redis.ConnectionError:
        return False


def postgres_up() -> bool:
    import psycopg

    try:
        psycopg.connect(PG_ADMIN, connect_timeout=3).close()
        return True
    except psycopg.OperationalError:
        return False


def _ensure(up: Callable[[], bool], start: str, what: str, tries: int, pause: float) -> bool:
    if up():
        return False
    log.warning("%s is down; starting it", what)
    subprocess.run(start, shell=True, check=False, capture_output=True)
    for _ in range(tries):
        if up():
            return True
        time.sleep(pause)
    raise ServiceDown(f"{what} is down and could not be started with: {start}")


def ensure_redis() -> bool:
    """Start Redis if it is down; True if this call started it."""
    return _ensure(redis_up, REDIS_START, "Redis on 127.0.0.1:6379", tries=30, pause=0.5)


def ensure_postgres() -> bool:
    """Start PostgreSQL if it is down; True if this call started it."""
    return _ensure(postgres_up, PG_START, "PostgreSQL on 127.0.0.1:5432", tries=30, pause=1.0)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_INSTALL = "apt-get install -y chromium"


def chromium_up() -> bool:
    return os.access(CHROMIUM, os.X_OK)


def ensure_chromium() -> str:
    """Debian's Chromium for the browser tests, installed if missing; its executable path."""
    if not chromium_up():
        log.warning("%s is missing; installing it", CHROMIUM)
        subprocess.run(CHROMIUM_INSTALL, shell=True, check=False, capture_output=True)
        if not chromium_up():
            raise ServiceDown(f"Chromium is missing and could not be installed with: {CHROMIUM_INSTALL}")
    return CHROMIUM


def stop_redis() -> None:
    # SHUTDOWN drops the connection it came on, which redis-py may report as an error.
    with contextlib.suppress(Exception):
        redis_client().shutdown(nosave=True)


def stop_postgres() -> None:
    subprocess.run(PG_STOP, shell=True, check=False, capture_output=True)


@contextlib.contextmanager
def scratch_redis_db() -> Iterator[str]:
    """The URL of an empty Redis database number (1-15) of this run's own, flushed afterwards."""
    for _ in range(30):
        db = int.from_bytes(os.urandom(1), "big") % 15 + 1
        if redis_client(db).dbsize() == 0:
            break
    else:
        raise ServiceDown("no free Redis database number: databases 1-15 all hold keys")
    try:
        yield redis_url(db)
    finally:
        with contextlib.suppress(Exception):
            redis_client(db).flushdb()


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database named ``prefix_<random>``, dropped afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url(name)
    finally:
        from aiscan.jobs.store.db import open_database

        open_database.cache_clear()  # the engines go with their pools; DROP ... FORCE ends the rest
        with psycopg.connect(PG_ADMIN, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running_services(prefix: str) -> Iterator[dict[str, str]]:
    """AISCAN_BROKER_URL and AISCAN_DATABASE_URL of scratch space; services this started stop after."""
    with contextlib.ExitStack() as stack:
        if ensure_redis():
            stack.callback(stop_redis)
        if ensure_postgres():
            stack.callback(stop_postgres)
        broker = stack.enter_context(scratch_redis_db())
        database = stack.enter_context(scratch_database(prefix))
        yield {"AISCAN_DATABASE_URL": database, "AISCAN_BROKER_URL": broker}
