"""The fault matrix (`make faults`, ``python -m bench.faults``): real workers and `aiscan beat` on private
Redis and PostgreSQL, with the broker restarted, the database restarted, workers killed and stopped, and
poison references mixed into good ones. Each case asserts one row per image and a finished job, and the
table gives its figures. Slow (minutes), so not part of `make test`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.memory import child_pids
from bench.private import PrivatePostgres, PrivateRedis
from bench.processes import Worker, aiscan_argv, aiscan_env, run_aiscan

ROOT = Path(__file__).resolve().parent.parent
# The tests' fault-injecting HTTP server, images and tiny model: one copy of each, shared.
sys.path.insert(0, str(ROOT / "tests"))

STALL_TIMEOUT_S = 10
VISIBILITY_TIMEOUT_S = 8
URL_TIMEOUT_S = 3
PG_DOWN_S = 5
CASE_TIMEOUT_S = 240
# A poison job is a few images; longer means a reference hangs (past the URL timeout of 3 s).
POISON_TIMEOUT_S = 120
SLOW_IMAGES = 48
SLOW_CHUNK = 4
SLOW_DELAY_S = 0.4  # per image; one fetch at a time, so a chunk takes about 1.6 s
GOOD_NEIGHBOURS = 3
POISON_CHUNK = 8
BOMB_BYTES = 1024**3  # what the gzip bomb inflates to

BEATS = 2  # several beats at once must be harmless: the matrix runs two
# Wide enough for the table when the output is a file, not a terminal.
console = Console(width=150)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@dataclass
class Outcome:
    """One case of the matrix: whether it held, and its figures."""

    case: str
    ok: bool = False
    rows: int = 0
    expected: int = 0
    wall_s: float = 0.0
    recovery_s: float | None = None
    redispatch_s: float | None = None
    note: str = ""


@dataclass
class Check:
    """What a finished job left: its status, rows, distinct refs and counts."""

    status: str
    rows: int
    distinct: int
    total: int
    skipped: int
    kinds: dict[str, str | None] = field(default_factory=dict)
    scored: set[str] = field(default_factory=set)
    # When `aiscan beat` last re-sent the job's tasks (ISO 8601), if it did.
    recovered_at: str | None = None


class DripServer:
    """An HTTP server that promises a large body and sends one byte every half second."""

    def __init__(self) -> None:
        stopping = self._stopping = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                with contextlib.suppress(ConnectionError, TimeoutError):
                    self.wfile.write(b"\xff")
                    while not stopping.wait(0.5):
                        self.wfile.write(b"\xd8")
                        self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def __enter__(self) -> DripServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()


def gzip_bomb(size: int) -> bytes:
    """A gzip stream of ``size`` zero bytes (about a thousandth of that on the wire)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [packer.compress(block) for _ in range(size // len(block))]
    parts.append(packer.flush())
    return b"".join(parts)


class Matrix:
    """The private services, workers, beat and HTTP servers all cases share."""

    def __init__(
        self, tmp: Path, redis: PrivateRedis, pg: PrivatePostgres, http: Any, drip: DripServer
    ) -> None:
        from aiscan.jobs.app import CeleryQueue, make_app
        from aiscan.jobs.settings import Settings

        self.tmp, self.redis, self.pg, self.http, self.drip = tmp, redis, pg, http, drip
        self.env = aiscan_env(
            os.environ,
            HOME=str(tmp),
            AISCAN_HOME=str(tmp / "home"),
            AISCAN_DATABASE_URL=pg.url(),
            AISCAN_BROKER_URL=redis.url,
            AISCAN_STALL_TIMEOUT=str(STALL_TIMEOUT_S),
            AISCAN_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT_S),
            AISCAN_URL_TIMEOUT=str(URL_TIMEOUT_S),
            AISCAN_URL_RETRIES="1",
            AISCAN_URL_ALLOW_NETWORKS="127.0.0.0/8",
            AISCAN_FETCH_CONCURRENCY="1",
            AISCAN_BATCH_SIZE="4",
            AISCAN_MAX_IMAGE_BYTES=str(8 * 1024 * 1024),
            # The chunk deadline (half of this) must outlast a dripping fetch (10 x the URL timeout), so
            # the images queued behind it are still scored.
            AISCAN_TASK_SOFT_TIME_LIMIT="120",
            AISCAN_TASK_RETRY_BACKOFF_MAX="4",
        )
        self.settings = Settings.from_env(self.env)
        self.queue = CeleryQueue(make_app(self.settings))
        self.workers: dict[str, Worker] = {}
        self.beats: list[subprocess.Popen[bytes]] = []
        self.last_job: int | None = None

    # -- processes ---------------------------------------------------------------------------------

    def prepare(self) -> None:
        from tinymodels import save_tiny_classifier

        run_aiscan(["db", "upgrade"], self.env, timeout=300)
        save_tiny_classifier(self.tmp / "tiny.keras", 64, seed=1)
        run_aiscan(
            ["model", "import", str(self.tmp / "tiny.keras"), "--name", "tiny", "--scale", "unit"], self.env
        )

    def start_worker(self, name: str) -> None:
        self.workers[name] = Worker(name, self.env, self.tmp / f"{name}.log")

    def start_beat(self) -> None:
        log = open(self.tmp / f"beat{len(self.beats)}.log", "ab")  # noqa: SIM115 - the child's, for life
        beat = subprocess.Popen(
            aiscan_argv(["beat", "--loglevel", "INFO"]),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.beats.append(beat)

    def stop(self) -> None:
        while self.beats:
            beat = self.beats.pop()
            if beat.poll() is None:
                os.killpg(beat.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    beat.wait(timeout=30)
        while self.workers:
            self.workers.popitem()[1].stop()

    def logs(self) -> str:
        names = list(self.workers)  # the beats' logs say only that they sent ticks
        return "\n".join(
            f"--- {n}\n" + (self.tmp / f"{n}.log").read_text(errors="replace")[-2500:] for n in names
        )

    # -- jobs --------------------------------------------------------------------------------------

    def db(self) -> Any:
        from aiscan.jobs.store.db import open_database

        return open_database(self.settings.database_url)

    def submit(self, sources: list[str], chunk_size: int) -> int:
        from aiscan.jobs.submit import submit_job

        self.last_job = submit_job(
            self.db(), self.settings, self.queue.send, sources, model_ref=None, chunk_size=chunk_size
        )
        return self.last_job

    def submit_planned_here(self, sources: list[str], chunk_size: int, between: Callable[[], None]) -> int:
        """Create and plan a job in this process, run ``between``, then send its chunks to the workers."""
        from aiscan.jobs.pipeline import plan_job
        from aiscan.jobs.submit import create_job
        from aiscan.jobs.tasks import TaskContext

        db = self.db()
        job_id = self.last_job = create_job(db, self.settings, sources, model_ref=None, chunk_size=chunk_size)
        sent: list[tuple[Any, ...]] = []
        plan_job(TaskContext(self.settings, db, lambda *a: sent.append(a), lambda _m: None), job_id)
        between()
        for task in sent:
            self.queue.send(*task)
        return job_id

    def cancel_last(self) -> None:
        """Cancel the job of a case that broke, so its tasks stop taking the workers from the next."""
        from aiscan.jobs.submit import cancel_job

        if self.last_job is not None:
            with contextlib.suppress(Exception):
                cancel_job(self.db(), self.last_job)

    def _poll(self, read: Callable[[Any], Any]) -> Any:
        """``read(session)``, or None while the database is down (a case may have stopped it)."""
        from sqlalchemy.exc import OperationalError

        try:
            with self.db().session() as s:
                return read(s)
        except OperationalError:
            return None

    def wait_until(self, what: str, read: Callable[[Any], Any], timeout: float = CASE_TIMEOUT_S) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self._poll(read)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"{what}: not after {timeout:.0f} s")

    def wait_done(self, job_id: int, timeout: float = CASE_TIMEOUT_S) -> float:
        """Until the job finishes; the monotonic time it was seen finished."""
        from aiscan.jobs.store.models import Job, JobStatus

        def finished(s: Any) -> bool:
            return bool(s.get_one(Job, job_id).status in JobStatus.FINISHED)

        self.wait_until(f"job {job_id} finished", finished, timeout)
        return time.monotonic()

    def chunks_done(self, job_id: int, n: int) -> None:
        from sqlalchemy import func, select

        from aiscan.jobs.store.models import Chunk, ChunkStatus

        def count(s: Any) -> bool:
            q = select(func.count()).where(Chunk.job_id == job_id, Chunk.status == ChunkStatus.DONE)
            return bool(s.scalar(q) >= n)

        self.wait_until(f"job {job_id}: {n} chunks done", count)

    def chunk_held_by(self, job_id: int, worker: str) -> int:
        """Until ``worker`` holds an open chunk of the job; that chunk's id."""
        from sqlalchemy import select

        from aiscan.jobs.store.models import Chunk, ChunkStatus, Job, JobStatus

        def held(s: Any) -> int | None:
            if s.get_one(Job, job_id).status in JobStatus.FINISHED:
                raise RuntimeError(f"job {job_id} finished before {worker} took a chunk")
            q = select(Chunk.id).where(
                Chunk.job_id == job_id,
                Chunk.status == ChunkStatus.PENDING,
                Chunk.started_at.is_not(None),
                Chunk.worker.like(f"{worker}@%"),
            )
            return s.scalars(q).first()

        return int(self.wait_until(f"job {job_id}: a chunk held by {worker}", held))

    def warm_ups(self, worker: str) -> int:
        """How many pool processes of ``worker`` have warmed up the model so far."""
        return self.workers[worker].log().count("warmed up model")

    def resends(self, job_id: int) -> int:
        """How often recovery re-sent the job's tasks, from the workers' logs."""
        needle = f"job {job_id}: no progress for "
        return sum((self.tmp / f"{n}.log").read_text(errors="replace").count(needle) for n in self.workers)

    def check(self, job_id: int) -> Check:
        from sqlalchemy import select

        from aiscan.jobs.store.models import Job, Result

        with self.db().session() as s:
            job = s.get_one(Job, job_id)
            rows = list(
                s.execute(
                    select(Result.image_uri, Result.error_kind, Result.p_real).where(Result.job_id == job_id)
                )
            )
            recovered = (job.options or {}).get("recovered_at")
            check = Check(job.status, len(rows), len({r[0] for r in rows}), job.total, job.skipped)
            check.kinds = {r[0]: r[1] for r in rows}
            check.scored = {r[0] for r in rows if r[1] is None and r[2] is not None}
            check.recovered_at = recovered
        return check

    # -- sources -----------------------------------------------------------------------------------

    def slow_list(self, tag: str, n: int = SLOW_IMAGES) -> tuple[str, list[str]]:
        """A URL list of ``n`` images that each take SLOW_DELAY_S to serve; its source spec and URLs."""
        from images import jpeg_bytes

        urls = [
            self.http.add(f"/{tag}/{i}.jpg", body=jpeg_bytes(i, (96, 72)), delay=SLOW_DELAY_S)
            for i in range(n)
        ]
        path = self.tmp / f"{tag}.txt"
        path.write_text("\n".join(urls) + "\n")
        return f"urls:{path}", urls


def _verdict(out: Outcome, check: Check, expected: int, good: Sequence[str]) -> Outcome:
    """One row per image (or counted skip), no duplicates, a done job, every good image scored."""
    out.rows, out.expected = check.rows, expected
    problems = []
    if check.status != "done":
        problems.append(f"job {check.status}")
    if check.rows != check.distinct:
        problems.append(f"{check.rows - check.distinct} duplicate rows")
    if check.rows != check.total:
        problems.append(f"{check.rows} rows for a total of {check.total}")
    if check.total + check.skipped != expected:
        problems.append(f"total {check.total} + skipped {check.skipped} != {expected} refs")
    lost = [g for g in good if g not in check.scored]
    if lost:
        problems.append(f"{len(lost)} good images not scored")
    out.ok = not problems
    out.note = "; ".join([*problems, out.note] if out.note else problems)
    return out


# -- the cases -------------------------------------------------------------------------------------


def _timed(m: Matrix, name: str, fault: Callable[[int], float | None], tag: str) -> Outcome:
    """A slow URL list as one job, ``fault(job_id)`` applied mid-job (it returns when the fault began)."""
    out = Outcome(name)
    spec, urls = m.slow_list(tag)
    start = time.monotonic()
    job_id = m.submit([spec], SLOW_CHUNK)
    fault_at = fault(job_id)
    done_at = m.wait_done(job_id)
    out.wall_s = done_at - start
    if fault_at is not None:
        out.recovery_s = done_at - fault_at
    check = m.check(job_id)
    if check.recovered_at and fault_at is not None:
        from datetime import datetime

        fault_wall = time.time() - (time.monotonic() - fault_at)
        out.redispatch_s = datetime.fromisoformat(check.recovered_at).timestamp() - fault_wall
        out.note = f"re-sent {m.resends(job_id)} time(s) by beat"
    return _verdict(out, check, len(urls), urls)


def case_baseline(m: Matrix) -> Outcome:
    return _timed(m, "no fault (baseline)", lambda _job: None, "base")


def case_broker_restart(m: Matrix) -> Outcome:
    def fault(job_id: int) -> float:
        m.chunks_done(job_id, 2)
        at = time.monotonic()
        m.redis.restart()  # every queued and unacknowledged message is gone
        return at

    return _timed(m, "broker restart, beat recovers", fault, "broker")


def case_postgres_restart(m: Matrix) -> Outcome:
    def fault(job_id: int) -> float:
        m.chunks_done(job_id, 2)
        at = time.monotonic()
        m.pg.stop()
        time.sleep(PG_DOWN_S)
        m.pg.start()
        return at

    return _timed(m, f"PostgreSQL down {PG_DOWN_S} s", fault, "pg")


def case_worker_child_kill(m: Matrix) -> Outcome:
    warm = m.warm_ups("w1")

    def fault(job_id: int) -> float:
        m.chunk_held_by(job_id, "w1")
        at = time.monotonic()
        for pid in child_pids(m.workers["w1"].pid):
            os.kill(pid, signal.SIGKILL)
        return at

    out = _timed(m, "SIGKILL of a worker child", fault, "child")
    # The worker must get its pool back, warm, or it serves nothing from now on.
    try:
        m.wait_until("w1's new pool process warm", lambda _s: m.warm_ups("w1") > warm)
    except TimeoutError as exc:
        out.ok, out.note = False, "; ".join(filter(None, [out.note, str(exc)]))
    return out


def case_worker_stop(m: Matrix) -> Outcome:
    def fault(job_id: int) -> float:
        m.chunk_held_by(job_id, "w2")
        at = time.monotonic()
        os.killpg(m.workers["w2"].pid, signal.SIGSTOP)
        # Past the visibility timeout Redis gives the held chunk to the other worker.
        time.sleep(VISIBILITY_TIMEOUT_S + 6)
        os.killpg(m.workers["w2"].pid, signal.SIGCONT)
        return at

    return _timed(m, f"SIGSTOP of a worker ({VISIBILITY_TIMEOUT_S + 6} s)", fault, "stop")


def _good_urls(m: Matrix, tag: str) -> list[str]:
    from images import jpeg_bytes

    return [
        m.http.add(f"/{tag}/good{i}.jpg", body=jpeg_bytes(100 + i, (96, 72))) for i in range(GOOD_NEIGHBOURS)
    ]


def _poison_list(m: Matrix, name: str, tag: str, poison: str) -> Outcome:
    """One bad URL between good ones, all in one chunk: the bad one gets a row, its neighbours scores."""
    out = Outcome(f"poison: {name}")
    good = _good_urls(m, tag)
    lines = [good[0], poison, *good[1:]]
    path = m.tmp / f"{tag}.txt"
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    start = time.monotonic()
    job_id = m.submit([f"urls:{path}"], POISON_CHUNK)
    out.wall_s = m.wait_done(job_id, POISON_TIMEOUT_S) - start
    check = m.check(job_id)
    out.note = ", ".join(sorted({k or "scored" for u, k in check.kinds.items() if u not in good}))
    return _verdict(out, check, len(lines), good)


def _poison_dir(
    m: Matrix,
    name: str,
    tag: str,
    make: Callable[[Path], None],
    *,
    late: Callable[[Path], None] | None = None,
) -> Outcome:
    """Good files and one bad entry in a directory, all in one chunk; ``late`` runs after planning."""
    from images import jpeg_bytes

    out = Outcome(f"poison: {name}")
    root = m.tmp / tag
    root.mkdir()
    good = [root / f"good{i}.jpg" for i in range(GOOD_NEIGHBOURS)]
    for i, p in enumerate(good):
        p.write_bytes(jpeg_bytes(200 + i, (96, 72)))
    make(root)
    entries = len(os.listdir(os.fsencode(root)))
    start = time.monotonic()
    if late is None:
        job_id = m.submit([str(root)], POISON_CHUNK)
    else:
        job_id = m.submit_planned_here([str(root)], POISON_CHUNK, lambda: late(root))
    out.wall_s = m.wait_done(job_id, POISON_TIMEOUT_S) - start
    check = m.check(job_id)
    refs = {str(p) for p in good}
    out.note = ", ".join(sorted({k or "scored" for u, k in check.kinds.items() if u not in refs}))
    if check.skipped:
        out.note = (out.note + f", {check.skipped} skipped").lstrip(", ")
    return _verdict(out, check, entries, sorted(refs))


def poison_cases(m: Matrix) -> list[tuple[str, Callable[[], Outcome]]]:
    from images import jpeg_bytes

    h = m.http
    data_redirect = h.redirect("/p/to-data", "data:image/png;base64,iVBORw0KGgo=")
    long_label = f"http://{'a' * 70}.example/x.jpg"
    nul = h.url("/p/nul\x00.jpg")
    long_url = h.add("/p/long.jpg", body=jpeg_bytes(7, (96, 72))) + "?sig=" + secrets.token_hex(2500)

    def bomb() -> str:  # built only when its case runs: a second or two of CPU
        return h.add("/p/bomb.jpg", body=gzip_bomb(BOMB_BYTES), headers={"Content-Encoding": "gzip"})

    drip = m.drip.url("/p/drip.jpg")

    def bad_name(root: Path) -> None:
        with open(os.path.join(os.fsencode(root), b"bad-\xff-name.jpg"), "wb") as f:
            f.write(jpeg_bytes(9, (96, 72)))

    def fifo(root: Path) -> None:
        os.mkfifo(root / "pipe.jpg")

    def regular(root: Path) -> None:
        (root / "late.jpg").write_bytes(jpeg_bytes(10, (96, 72)))

    def to_fifo(root: Path) -> None:
        (root / "late.jpg").unlink()
        os.mkfifo(root / "late.jpg")

    return [
        ("redirect to data:", lambda: _poison_list(m, "redirect to data:", "pdata", data_redirect)),
        ("64+-char host label", lambda: _poison_list(m, "70-char host label", "plabel", long_label)),
        ("NUL in URL", lambda: _poison_list(m, "NUL in a URL", "pnul", nul)),
        ("5 KB URL", lambda: _poison_list(m, "5 KB URL", "plong", long_url)),
        ("gzip bomb", lambda: _poison_list(m, f"gzip bomb ({BOMB_BYTES >> 20} MiB)", "pbomb", bomb())),
        ("non-UTF-8 name", lambda: _poison_dir(m, "non-UTF-8 file name", "dname", bad_name)),
        ("FIFO", lambda: _poison_dir(m, "FIFO in the walk", "dfifo", fifo)),
        ("late FIFO", lambda: _poison_dir(m, "file replaced by a FIFO", "dlate", regular, late=to_fifo)),
        ("dripping server", lambda: _poison_list(m, "dripping server", "pdrip", drip)),
    ]


# -- the run ---------------------------------------------------------------------------------------


def _run_case(m: Matrix, name: str, case: Callable[[], Outcome]) -> Outcome:
    console.print(f"[bold]{name}[/bold] ...")
    try:
        out = case()
    except Exception as exc:  # a case that breaks is a failed row, and the matrix goes on
        out = Outcome(name, note=f"{type(exc).__name__}: {exc}"[:300])
        console.print(m.logs(), markup=False, highlight=False)
        m.cancel_last()
    console.print(f"  {'ok' if out.ok else 'FAILED'}: {out.note}", markup=False)
    return out


def print_table(outcomes: Sequence[Outcome]) -> None:
    table = Table(title="aiscan fault matrix")
    for col in ("case", "result", "rows", "refs", "recovery s", "re-sent after s", "wall s", "note"):
        table.add_column(col, justify="left" if col in ("case", "note", "result") else "right")

    def num(v: float | None) -> str:
        return "" if v is None else f"{v:.1f}"

    for o in outcomes:
        table.add_row(
            o.case,
            "ok" if o.ok else "FAILED",
            str(o.rows),
            str(o.expected),
            num(o.recovery_s),
            num(o.redispatch_s),
            num(o.wall_s),
            o.note,
        )
    console.print(table)


@contextlib.contextmanager
def matrix(tmp: Path) -> Iterator[Matrix]:
    import netservers

    redis = PrivateRedis(tmp)
    pg = PrivatePostgres()
    with contextlib.ExitStack() as stack:
        redis.start()
        stack.callback(redis.stop)
        pg.init()
        stack.callback(pg.remove)
        http = stack.enter_context(netservers.FaultyHTTPServer())
        drip = stack.enter_context(DripServer())
        m = Matrix(tmp, redis, pg, http, drip)
        stack.callback(m.stop)
        m.prepare()
        m.start_worker("w1")
        m.start_worker("w2")
        for w in m.workers.values():
            w.wait_ready()
        for _ in range(BEATS):
            m.start_beat()
        yield m


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0])
    p.add_argument(
        "--only", default="", help="comma-separated words; run only the cases whose names have one"
    )
    p.add_argument("--out", type=Path, help="also write the figures as JSON here")
    p.add_argument("--repeat", type=int, default=1, help="run each chosen case this many times")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    words = [w.strip().lower() for w in args.only.split(",") if w.strip()]
    with tempfile.TemporaryDirectory(prefix="aiscan-faults-") as tmp_name, matrix(Path(tmp_name)) as m:
        cases: list[tuple[str, Callable[[], Outcome]]] = [
            ("baseline", lambda: case_baseline(m)),
            ("broker restart", lambda: case_broker_restart(m)),
            ("postgres restart", lambda: case_postgres_restart(m)),
            ("worker SIGKILL", lambda: case_worker_child_kill(m)),
            ("worker SIGSTOP", lambda: case_worker_stop(m)),
            *poison_cases(m),
        ]
        chosen = [(n, c) for n, c in cases if not words or any(w in n.lower() for w in words)]
        outcomes = [_run_case(m, name, case) for name, case in chosen for _ in range(args.repeat)]
    print_table(outcomes)
    if args.out:
        args.out.write_text(json.dumps([asdict(o) for o in outcomes], indent=2) + "\n")
    failed = [o.case for o in outcomes if not o.ok]
    if failed:
        console.print(f"[red]{len(failed)} of {len(outcomes)} cases failed:[/red] {', '.join(failed)}")
        return 1
    console.print(f"all {len(outcomes)} cases held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
