"""Engine, sessions and schema migrations for the SQLite and PostgreSQL backends."""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from aiscan.jobs.errors import AiscanError, Unavailable


class DatabaseError(AiscanError):
    """The database cannot be reached or its schema is not the one this aiscan expects."""


class DatabaseUnavailable(DatabaseError, Unavailable):
    """The database could not be reached just now: trying again later may work."""


# SQLSTATE classes and codes of faults that pass: connection exceptions, an administrator's or a crash's
# shutdown, insufficient resources, serialization failures and deadlocks, a lock that timed out.
_TRANSIENT_SQLSTATES = ("08", "57P", "53", "40001", "40P01", "55P03")
# SQLite has no SQLSTATE: SQLITE_BUSY, SQLITE_LOCKED and SQLITE_CANTOPEN (primary result codes) pass.
_TRANSIENT_SQLITE_CODES = frozenset({5, 6, 14})


def is_transient(exc: BaseException) -> bool:
    """True when a database error may pass if the work is tried again; data errors never do."""
    if isinstance(exc, DisconnectionError | PoolTimeout | DatabaseUnavailable):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in _TRANSIENT_SQLITE_CODES
        return "database is locked" in str(orig)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return str(sqlstate).startswith(_TRANSIENT_SQLSTATES)
    # psycopg gives a lost or refused connection no SQLSTATE: the server never judged the statement.
    return isinstance(exc, OperationalError | InterfaceError)


def _alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("aiscan.migrations")))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    script = ScriptDirectory.from_config(_alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    return head


# pg_advisory_xact_lock key of schema migrations: any constant shared by every aiscan process.
MIGRATION_LOCK_KEY = 0x61697363616E  # "aiscan"
SUPPORTED = "sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"


def _parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        raise DatabaseError(f"AISCAN_DATABASE_URL is not a database URL: give {SUPPORTED}") from None


def _sqlite_file(parsed: URL) -> Path | None:
    """The file of an SQLite URL; None for an in-memory database."""
    if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
        return Path(parsed.database)
    return None


def make_engine(url: str) -> Engine:
    """An engine with the per-backend settings aiscan relies on (SQLite: WAL, busy timeout, FKs).

    A URL aiscan cannot use (malformed, unknown backend or driver, a directory it cannot create)
    raises DatabaseError.
    """
    parsed = _parse_url(url)
    safe_url = parsed.render_as_string(hide_password=True)
    try:
        return _make_engine(url, parsed)
    except (NoSuchModuleError, ImportError):
        raise DatabaseError(
            f"the database URL {safe_url} names a backend or driver aiscan cannot load: give {SUPPORTED}"
        ) from None
    except ArgumentError as exc:
        raise DatabaseError(f"the database URL {safe_url} cannot be used: {exc}") from None


def _make_engine(url: str, parsed: URL) -> Engine:
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(
                    f"cannot create the directory of the SQLite database {path} ({exc.strerror}): "
                    "set AISCAN_HOME or AISCAN_DATABASE_URL to a writable place"
                ) from None
        engine = create_engine(url, connect_args={"timeout": 60}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL lets readers (aiscan jobs show) run while a scan writes.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return engine
    # hide_parameters: a refused statement's message must not carry refs (presigned signatures) into
    # rows or logs.
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def migration_lock(engine: Engine) -> Iterator[Connection | None]:
    """Hold the schema-migration lock: one process creates or upgrades a schema, the others wait.

    SQLite: an exclusive flock on DATABASE.lock beside the file (the database's own locks do not
    cover Alembic's read-then-create). PostgreSQL: a transaction-level advisory lock, on the
    connection yielded, which the migration must then use. Other backends: no lock, None.
    """
    backend = engine.url.get_backend_name()
    if backend == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            yield conn
        return
    path = _sqlite_file(engine.url) if backend == "sqlite" else None
    if path is None:
        yield None
        return
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield None
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run Alembic migrations up to ``revision`` on ``engine``, under the migration lock."""
    safe_url = engine.url.render_as_string(hide_password=True)
    try:
        with migration_lock(engine) as locked:
            if locked is not None:
                _run_upgrade(locked, revision)
            else:
                with engine.begin() as conn:
                    _run_upgrade(conn, revision)
    except CommandError as exc:
        raise DatabaseError(f"cannot migrate the database {safe_url} to {revision!r}: {exc}") from None
    except OSError as exc:
        raise DatabaseError(f"cannot lock the database {safe_url} to migrate it: {exc}") from None
    except SQLAlchemyError as exc:
        error = DatabaseUnavailable if is_transient(exc) else DatabaseError
        raise error(f"cannot migrate the database {safe_url}: {driver_error(exc)}") from None


def _run_upgrade(conn: Connection, revision: str) -> None:
    cfg = _alembic_config(conn.engine.url.render_as_string(hide_password=False))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception behind a SQLAlchemy error (``exc`` itself when there is none): its
    message is the database's words, without the SQL, parameters and docs link SQLAlchemy adds."""
    return getattr(exc, "orig", None) or exc


def downgrade(engine: Engine, revision: str = "base") -> None:
    cfg = _alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


class Database:
    """An engine plus a session factory, with the schema checked (or created, for embedded SQLite)."""

    def __init__(self, url: str, *, auto_upgrade: bool) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._check_schema(auto_upgrade)

    def _check_schema(self, auto_upgrade: bool) -> None:
        safe_url = self.engine.url.render_as_string(hide_password=True)
        try:
            revision = current_revision(self.engine)
        except SQLAlchemyError as exc:
            # A server that is down now (or restarting) is worth retrying; one that refuses us is not.
            error = DatabaseUnavailable if is_transient(exc) else DatabaseError
            raise error(f"cannot connect to the database {safe_url}: {driver_error(exc)}") from None
        if revision == head_revision():
            return
        if auto_upgrade:
            # Another process may be creating the schema right now: upgrade() waits for its lock
            # and then finds the schema at head, which Alembic leaves as it is.
            upgrade(self.engine)
            return
        raise DatabaseError(
            f"the database {safe_url} is at schema revision {revision or 'none'}, "
            f"aiscan needs {head_revision()}: run `aiscan db upgrade`"
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


@lru_cache(maxsize=8)
def open_database(url: str, *, auto_upgrade: bool | None = None) -> Database:
    """This process's Database for ``url``; embedded SQLite is migrated on first use."""
    if auto_upgrade is None:
        auto_upgrade = _parse_url(url).get_backend_name() == "sqlite"
    return Database(url, auto_upgrade=auto_upgrade)
