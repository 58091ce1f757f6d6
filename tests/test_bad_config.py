"""Every bad invocation of the real CLI is one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
from images import png_dir
from tinymodels import save_tiny_classifier

from bench.processes import aiscan_env, run_aiscan

BIG = str(10**12)
HUGE = str(10**30)

# Every numeric setting, refused when infinite: limits must be finite.
NUMERIC_SETTINGS = (
    "BATCH_SIZE",
    "CHUNK_SIZE",
    "FETCH_CONCURRENCY",
    "MAX_IMAGE_BYTES",
    "MAX_PIXELS",
    "URL_TIMEOUT",
    "URL_RETRIES",
    "URL_MAX_REDIRECTS",
    "VISIBILITY_TIMEOUT",
    "TASK_SOFT_TIME_LIMIT",
    "TASK_MAX_RETRIES",
    "TASK_RETRY_BACKOFF_MAX",
    "WORKER_GPUS",
    "DECODE_MEMORY_MB",
    "STALL_TIMEOUT",
)


@dataclass(frozen=True)
class Case:
    """``aiscan ARGS`` under ``env``; ``{dir}`` is a scratch directory, ``{file}`` a regular file
    (root ignores permission bits, so "unwritable" means a path under a file), ``{imgs}`` images,
    ``{model}`` a Keras file, and job 1 a finished job in the home."""

    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    message: str = ""  # a fragment the one line must contain

    def __str__(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        return f"{env} aiscan {' '.join(self.args)}".strip()


def case(*args: str, message: str = "", **env: str) -> Case:
    return Case(tuple(args), {f"AISCAN_{k}": v for k, v in env.items()}, message)


CASES = [
    # the broker
    case("scan", "{imgs}", BROKER_URL="redis://127.0.0.1:1", message="is unreachable"),
    case("scan", "{imgs}", BROKER_URL="amqp://127.0.0.1:1//", message="is unreachable"),
    case("scan", "{imgs}", BROKER_URL="foo://x", message="unknown broker scheme 'foo'"),
    case("scan", "{imgs}", BROKER_URL="redis://[bad", message="AISCAN_BROKER_URL is not a valid URL"),
    case("scan", "{imgs}", BROKER_URL="redis://h:port/0", message="AISCAN_BROKER_URL is not a valid URL"),
    case("scan", "{imgs}", BROKER_URL="localhost", message="is not a URL"),
    case("worker", BROKER_URL="foo://x", message="unknown broker scheme"),
    case("worker", message="set AISCAN_BROKER_URL"),
    case("worker", "--queues", "nosuch", BROKER_URL="redis://127.0.0.1:1", message="unknown queue"),
    case("worker", "--concurrency", BIG, BROKER_URL="redis://127.0.0.1:1", message="--concurrency"),
    case("jobs", "retry", "1", "--errors", BROKER_URL="foo://x", message="unknown broker scheme"),
    case("worker", "--loglevel", "chatty", BROKER_URL="redis://127.0.0.1:1", message="--loglevel"),
    case("beat", message="set AISCAN_BROKER_URL"),
    case("beat", BROKER_URL="foo://x", message="unknown broker scheme"),
    case("beat", "--loglevel", "chatty", BROKER_URL="redis://127.0.0.1:1", message="--loglevel"),
    # the database
    case("jobs", "list", DATABASE_URL="notaurl", message="is not a database URL"),
    case("jobs", "list", DATABASE_URL="mysql+nosuchdriver://x/y", message="cannot load"),
    case("jobs", "list", DATABASE_URL="postgresql+nosuchdriver://x/y", message="cannot load"),
    case("jobs", "list", DATABASE_URL="postgresql+psycopg://127.0.0.1:1/test", message="cannot connect"),
    case("scan", "{imgs}", DATABASE_URL="postgresql+psycopg://127.0.0.1:1/test", message="cannot connect"),
    case("jobs", "list", DATABASE_URL="sqlite:///{file}/aiscan.db", message="cannot create the directory"),
    case("db", "upgrade", DATABASE_URL="notaurl", message="is not a database URL"),
    case("db", "upgrade", DATABASE_URL="postgresql+psycopg://127.0.0.1:1/test", message="cannot"),
    case("db", "upgrade", "--revision", "nosuch", message="Can't locate revision"),
    # the home
    case("jobs", "list", HOME="{file}/home", message="cannot create the directory"),
    case("scan", "{imgs}", HOME="{file}/home", message="cannot create the directory"),
    case("model", "import", "{model}", "--name", "x", HOME="{file}/home", message="cannot create"),
    # reports
    case("report", "1", "-o", "{dir}/missing/report.csv", message="does not exist"),
    case("report", "1", "-o", "{file}/report.csv", message="does not exist"),
    case("report", "1", "-o", "{dir}", message="is a directory"),
    case("report", "999", "-o", "{dir}/report.csv", message="no job 999"),
    case("report", "1", "--format", "xml", message="--format"),
    case("report", "0", message="JOB_ID"),
    case("report", HUGE, message="JOB_ID"),
    # S3
    case("scan", "s3://bucket/prefix", S3_ENDPOINT_URL="http://[bad", message="AISCAN_S3_ENDPOINT_URL"),
    case("scan", "s3://bucket/prefix", S3_ENDPOINT_URL="ftp://host", message="AISCAN_S3_ENDPOINT_URL"),
    case("scan", "s3://bucket/prefix", S3_ENDPOINT_URL="http://h:port", message="AISCAN_S3_ENDPOINT_URL"),
    # scan's options and sources
    case("scan", "{imgs}", "--batch-size", "0", message="--batch-size"),
    case("scan", "{imgs}", "--batch-size", BIG, message="--batch-size"),
    case("scan", "{imgs}", "--chunk-size", "0", message="--chunk-size"),
    case("scan", "{imgs}", "--chunk-size", BIG, message="--chunk-size"),
    case("scan", "{imgs}", "--model", "nosuch", message="no model 'nosuch'"),
    case("scan", "{imgs}", "--model", "tiny:99", message="tiny:99"),
    case("scan", "{imgs}", "--model", "tiny:x", message="tiny:x"),
    case("scan", message="give at least one source"),
    case("scan", "{dir}/missing", message="missing"),
    case("scan", "--urls", "{dir}/missing.txt", message="--urls"),
    case("scan", "nosuch://x", message="unsupported source"),
    case("scan", "{imgs}", C2PA_TRUST_ANCHORS="{dir}/missing.pem", message="does not exist"),
    case("scan", "{imgs}", C2PA_TRUST_ANCHORS="{dir}", message="is a directory"),
    case("scan", "{imgs}", C2PA_TRUST_ANCHORS="{file}", message="no PEM certificate"),
    case("worker", BROKER_URL="redis://127.0.0.1:1", C2PA_TRUST_ANCHORS="{file}", message="no PEM"),
    # settings: finite, in range, of their type
    *(case("jobs", "list", **{name: "inf"}, message=f"AISCAN_{name}='inf'") for name in NUMERIC_SETTINGS),
    case("jobs", "list", STALL_TIMEOUT="0", message="at least 1"),
    case("jobs", "list", DECODE_MEMORY_MB="1", message="at least 64"),
    case("jobs", "list", FOLLOW_LINKS_OUTSIDE_ROOT="perhaps", message="must be 1 or 0"),
    case("jobs", "list", URL_TIMEOUT="nan", message="finite"),
    case("jobs", "list", URL_TIMEOUT="-1", message="at least"),
    case("jobs", "list", URL_TIMEOUT="1e300", message="at most"),
    case("jobs", "list", BATCH_SIZE=BIG, message="at most"),
    case("jobs", "list", CHUNK_SIZE="0", message="at least"),
    case("jobs", "list", CHUNK_SIZE="many", message="not an integer"),
    case("jobs", "list", URL_ALLOW_PRIVATE="maybe", message="must be 1 or 0"),
    case("jobs", "list", URL_ALLOW_NETWORKS="notanet", message="not an IP network"),
    # jobs
    case("jobs", "show", "999", message="no job 999"),
    case("jobs", "show", HUGE, message="JOB_ID"),
    case("jobs", "show", "abc", message="JOB_ID"),
    case("jobs", "cancel", "999", message="no job 999"),
    case("jobs", "retry", "999", message="no job 999"),
    case("jobs", "list", "--limit", "0", message="--limit"),
    case("jobs", "list", "--limit", BIG, message="--limit"),
    # models
    case("model", "show", "nope", message="no model 'nope'"),
    case("model", "default", "nope", message="no model 'nope'"),
    case("model", "import", "{dir}/none.h5", "--name", "x", message="FILE"),
    case("model", "import", "{file}", "--name", "x", message=""),
    case("model", "import", "{model}", "--name", "bad name!", message="--name"),
    case("model", "import", "{model}", "--name", "x", "--max-tiles", BIG, message="--max-tiles"),
    # training and evaluation
    case("train", "{dir}/empty", "--name", "x", message="no REAL/ and FAKE/ folders"),
    case("train", "{imgs}", "--name", "x", "--learning-rate", "nan", message="--learning-rate"),
    case("train", "{imgs}", "--name", "x", "--blur-prob", "inf", message="--blur-prob"),
    case("train", "{imgs}", "--name", "x", "--input-size", BIG, message="--input-size"),
    case("train", "{imgs}", "--name", "x", "--epochs", BIG, message="--epochs"),
    case("train", "{imgs}", "--name", "x", "--seed", HUGE, message="--seed"),
    case("evaluate", "nope", "{imgs}", message="no model 'nope'"),
    case("evaluate", "tiny", "{imgs}", "--batch-size", BIG, message="--batch-size"),
    case("evaluate", "tiny", "{dir}/empty", message="no REAL/ and FAKE/ folders"),
    # demo
    case("demo", "--workdir", "{file}/demo", message="demo"),
    case("demo", "--train-images", BIG, message="--train-images"),
    case("nosuchcommand", message="No such command"),
]


@dataclass(frozen=True)
class Home:
    """A home with the tiny model `tiny:1` as default and a finished job 1, and the paths cases use."""

    home: Path
    paths: dict[str, str]

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        settings = {"AISCAN_HOME": str(self.home)} | {k: v.format(**self.paths) for k, v in extra.items()}
        return aiscan_env(os.environ, **settings)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    base = tmp_path_factory.mktemp("badconfig")
    model = base / "tiny.keras"
    save_tiny_classifier(model, 32)
    imgs = base / "imgs"
    png_dir(imgs, 3, (40, 40))
    (base / "a-file").write_text("a regular file, where a directory is needed\n")
    (base / "empty").mkdir()
    paths = {"dir": str(base), "file": str(base / "a-file"), "imgs": str(imgs), "model": str(model)}
    h = Home(base / "home", paths)
    env = h.env({})
    run_aiscan(["model", "import", str(model), "--name", "tiny"], env, timeout=600)
    run_aiscan(["scan", str(imgs), "--json"], env, timeout=600)
    yield h


def _run(home: Home, c: Case) -> tuple[int, str]:
    args = [a.format(**home.paths) for a in c.args]
    proc = run_aiscan(args, home.env(c.env), timeout=600, check=False)
    return proc.returncode, proc.stderr


def test_every_bad_invocation_is_one_line(home: Home) -> None:
    # One test over the whole table, two at a time: each case is its own process, as a user runs it.
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda c: (c, *_run(home, c)), CASES))
    bad = []
    for c, code, stderr in outcomes:
        lines = [line for line in stderr.splitlines() if line.strip()]
        ok = (
            code != 0
            and len(lines) == 1
            and lines[0].startswith("error: ")
            and c.message in lines[0]
            and "Traceback" not in stderr
            and "unexpected" not in lines[0]  # the last-resort handler is for bugs, not for these
        )
        if not ok:
            bad.append(f"{c}: exit {code}, stderr:\n{stderr[-1500:]}")
    assert len(CASES) >= 52
    assert bad == [], f"{len(bad)} of {len(CASES)} bad invocations:\n" + "\n\n".join(bad)


def test_a_submission_the_broker_refuses_leaves_no_pending_job(home: Home) -> None:
    code, stderr = _run(home, case("scan", "{imgs}", BROKER_URL="redis://127.0.0.1:1"))
    assert code == 1
    assert stderr.startswith("error: job ") and "is marked failed" in stderr, stderr
    job_id = int(stderr.split()[2])
    with sqlite3.connect(home.home / "aiscan.db") as conn:
        statuses = dict(conn.execute("SELECT id, status FROM jobs").fetchall())
        error = conn.execute("SELECT error FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    assert statuses[job_id] == "failed"
    assert "pending" not in statuses.values()
    assert "redis://127.0.0.1:1 is unreachable" in error


def test_first_uses_of_a_fresh_home_at_once_all_succeed(tmp_path: Path) -> None:
    # Each process finds no schema and creates it: the migration lock makes them take turns.
    for trial in range(3):
        home = tmp_path / f"home{trial}"
        env = aiscan_env(os.environ, AISCAN_HOME=str(home))
        with ThreadPoolExecutor(6) as pool:
            procs = list(pool.map(partial(run_aiscan, ["jobs", "list"], check=False), [env] * 6))
        failures = [p.stderr for p in procs if p.returncode != 0]
        assert failures == [], failures
        with sqlite3.connect(home / "aiscan.db") as conn:
            assert conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1


def test_concurrent_upgrades_of_a_fresh_postgresql_database_all_succeed(postgres_url: str) -> None:
    # pg_advisory_xact_lock: one creates the schema, the others wait and find it at head.
    env = aiscan_env(os.environ, AISCAN_DATABASE_URL=postgres_url)
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda _: run_aiscan(["db", "upgrade"], env, check=False), range(4)))
    assert [p.stderr for p in procs if p.returncode != 0] == []
    revisions = {p.stdout.strip() for p in procs}
    assert len(revisions) == 1 and revisions.pop().startswith("database at revision ")
