"""Private Redis and PostgreSQL servers on free ports, for the fault matrix: it restarts them at will and
so must never touch the machine's shared services on 6379 and 5432.

PostgreSQL refuses to run as root, so its binaries run as the ``postgres`` user when this runs as root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

PG_BIN = Path(os.environ.get("AISCAN_FAULTS_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
START_S = 60


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(up: object, what: str, timeout: float = START_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if up():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up in {timeout:.0f} s")


class PrivateRedis:
    """``redis-server`` on a free port, nothing on disk; :meth:`restart` loses every key, as a real
    restart of the shared broker does."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _up(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        argv += ["no", "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(self._up, f"private Redis on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class PrivatePostgres:
    """A throw-away PostgreSQL cluster (initdb into a temporary directory) on a free port, trust auth."""

    def __init__(self) -> None:
        self.port = free_port()
        # Not under a root-only temporary directory: the postgres user must reach it.
        self.datadir = Path(tempfile.mkdtemp(prefix="aiscan-faults-pg-", dir="/tmp"))
        self.log = self.datadir.with_suffix(".log")

    def url(self, database: str = "aiscan") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, argv: Sequence[str], timeout: float = 120) -> None:
        prefix = ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []
        proc = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.datadir, PG_USER, PG_USER)
            self.log.touch()
            shutil.chown(self.log, PG_USER, PG_USER)
        self._run(
            [str(PG_BIN / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", PG_USER, "-E", "UTF8"]
        )
        self.start()
        import psycopg

        with psycopg.connect(self._admin(), autocommit=True) as c:
            c.execute('CREATE DATABASE "aiscan"')

    def _admin(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={PG_USER} dbname=postgres connect_timeout=2"

    def _up(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self._admin()).close()
            return True
        except psycopg.OperationalError:
            return False

    def start(self) -> None:
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-o",
                options,
                "-l",
                str(self.log),
                "-w",
                "start",
            ]
        )
        _wait(self._up, f"private PostgreSQL on port {self.port}")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)
        self.log.unlink(missing_ok=True)
