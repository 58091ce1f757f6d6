"""Schedules: timing, claims and ticks (SQLite and PostgreSQL), incremental runs over a local directory
and moto's S3 server, and the `aiscan schedule` CLI with its one-line errors."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import netservers
import pytest
from images import png_bytes
from sqlalchemy import select

from aiscan.jobs.artifacts import classifier_factory
from aiscan.jobs.cli import main
from aiscan.jobs.inprocess import InProcessQueue, run_queue
from aiscan.jobs.schedules import (
    ScheduleError,
    ScheduleSpec,
    add_schedule,
    claim_run,
    get_schedule,
    next_due,
    parse_cron,
    parse_every,
    pause_schedule,
    remove_schedule,
    resume_schedule,
    run_now,
    tick,
)
from aiscan.jobs.settings import Settings, get_settings
from aiscan.jobs.store.db import Database, downgrade, open_database, upgrade
from aiscan.jobs.store.models import DetectorModel, Job, Result, Schedule, ScheduleMark, ScheduleSeen
from aiscan.jobs.submit import cancel_job
from aiscan.jobs.tasks import TaskContext

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # a Tuesday


# -- timing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), (" 1D2H ", 93600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a duration"),
        ("15", "is not a duration"),
        ("1.5h", "is not a duration"),
        ("-1m", "is not a duration"),
        ("1w", "is not a duration"),
        ("0s", "at least 1s"),
        ("367d", "at most 366d"),
        ("99999999999999999999d", "at most 366d"),
    ],
)
def test_bad_durations(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_every(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("* * * *", "needs 5 fields"),
        ("61 * * * *", "not a valid cron line"),
        ("x * * * *", "not a valid cron line"),
        ("0 0 30 2 *", "not a valid cron line|never comes round"),
        ("0 0 31 4,6 *", "not a valid cron line|never comes round"),
    ],
)
def test_bad_cron_lines(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_cron(text)


def _schedule(every_s: int | None = None, cron: str | None = None) -> Schedule:
    return Schedule(name="s", sources=[], every_s=every_s, cron=cron, next_due_at=T0)


def test_next_due() -> None:
    assert next_due(_schedule(every_s=900), T0) == T0 + timedelta(minutes=15)
    daily = _schedule(cron="0 3 * * *")
    assert next_due(daily, T0) == datetime(2026, 3, 11, 3, 0, tzinfo=UTC)
    assert next_due(daily, datetime(2026, 3, 11, 2, 59, 30, tzinfo=UTC)) == datetime(
        2026, 3, 11, 3, 0, tzinfo=UTC
    )
    # strictly after: at 03:00 itself the next run is tomorrow's
    assert next_due(daily, datetime(2026, 3, 11, 3, 0, tzinfo=UTC)) == datetime(2026, 3, 12, 3, 0, tzinfo=UTC)
    quarter = _schedule(cron="*/15 * * * *")
    assert next_due(quarter, T0 + timedelta(minutes=7)) == T0 + timedelta(minutes=15)
    # day of week 0 = Sunday: from Tuesday 10 March, the next Sunday is 15 March
    sundays = _schedule(cron="30 6 * * 0")
    assert next_due(sundays, T0) == datetime(2026, 3, 15, 6, 30, tzinfo=UTC)
    assert next_due(_schedule(cron="0 0 1 1 *"), T0) == datetime(2027, 1, 1, tzinfo=UTC)
    # naive times (as SQLite hands them back) are UTC
    assert next_due(daily, T0.replace(tzinfo=None)) == datetime(2026, 3, 11, 3, 0, tzinfo=UTC)


# -- claims and ticks ---------------------------------------------------------------------------------


def _db_with_model(url: str) -> Database:
    db = open_database(url, auto_upgrade=True)
    with db.session() as s:
        s.add(DetectorModel(name="m", version=1, sha256="0" * 64, path="/nowhere", meta={}, is_default=True))
    return db


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'aiscan.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = _db_with_model(url)
    yield database
    database.dispose()
    open_database.cache_clear()


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"AISCAN_HOME": str(tmp_path / "home"), **env})


def test_claim_run_once(db: Database, tmp_path: Path) -> None:
    sid = add_schedule(db, _settings(tmp_path), ScheduleSpec("c", [str(tmp_path)], every="1h"), now=T0)
    with db.session() as s:
        first = claim_run(s, sid, T0)
        second = claim_run(s, sid, T0)
        other = claim_run(s, sid, T0 + timedelta(hours=1))
    assert (first, second, other) == (True, False, True)
    with db.session() as s:
        assert claim_run(s, sid, T0) is False


def test_tick_starts_each_due_schedule_once(db: Database, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    add_schedule(db, settings, ScheduleSpec("hourly", [str(tmp_path)], every="1h"), now=T0)
    add_schedule(db, settings, ScheduleSpec("nightly", [str(tmp_path)], cron="0 3 * * *"), now=T0)
    add_schedule(db, settings, ScheduleSpec("paused", [str(tmp_path)], every="1m"), now=T0)
    pause_schedule(db, "paused")
    sent: list[tuple[Any, ...]] = []

    def send(*task: Any) -> None:
        sent.append(task)

    assert tick(db, settings, send, now=T0 + timedelta(minutes=59)) == []
    # five hours late: one run, not five; the next is due on the hour's phase, after now
    now = T0 + timedelta(hours=5, minutes=10)
    (job_id,) = tick(db, settings, send, now=now)
    assert sent == [("aiscan.plan_job", job_id)]
    hourly = get_schedule(db, "hourly")
    assert _utc(hourly.next_due_at) == T0 + timedelta(hours=6)
    assert hourly.last_job_id == job_id
    with db.session() as s:
        job = s.get_one(Job, job_id)
        assert job.schedule_id == hourly.id
        assert job.options["incremental"] is True and job.options["schedule"] == "hourly"
    assert tick(db, settings, send, now=now) == []
    # while its run is unfinished, a due time of hourly passes without a run, and run_now says why
    assert tick(db, settings, send, now=T0 + timedelta(hours=6)) == []
    assert _utc(get_schedule(db, "hourly").next_due_at) == T0 + timedelta(hours=7)
    with pytest.raises(ScheduleError, match=f"still running job {job_id}"):
        run_now(db, settings, send, "hourly")
    cancel_job(db, job_id)
    # the nightly one comes at 03:00 the next day, and the paused one never
    started = tick(db, settings, send, now=datetime(2026, 3, 11, 3, 0, tzinfo=UTC))
    assert len(started) == 2  # hourly again, and nightly
    resume_schedule(db, "paused", now=datetime(2026, 3, 11, 3, 0, tzinfo=UTC))
    assert _utc(get_schedule(db, "paused").next_due_at) == datetime(2026, 3, 11, 3, 1, tzinfo=UTC)


def test_tick_passes_over_a_schedule_whose_source_is_gone(db: Database, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    gone = tmp_path / "gone"
    gone.mkdir()
    add_schedule(db, settings, ScheduleSpec("broken", [str(gone)], every="1h"), now=T0)
    add_schedule(db, settings, ScheduleSpec("fine", [str(tmp_path)], every="1h"), now=T0)
    gone.rmdir()
    (job_id,) = tick(db, settings, lambda *task: None, now=T0 + timedelta(hours=1))
    assert get_schedule(db, "fine").last_job_id == job_id
    broken = get_schedule(db, "broken")
    assert broken.last_job_id is None and _utc(broken.next_due_at) == T0 + timedelta(hours=2)


def test_racing_ticks_start_one_run(postgres_url: str, tmp_path: Path) -> None:
    db = _db_with_model(postgres_url)
    settings = _settings(tmp_path)
    add_schedule(db, settings, ScheduleSpec("race", [str(tmp_path)], every="1h"), now=T0)
    now = T0 + timedelta(hours=1)
    started: list[int] = []
    barrier = threading.Barrier(6)

    def one() -> None:
        barrier.wait()
        started.extend(tick(db, settings, lambda *task: None, now=now))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(started) == 1
    with db.session() as s:
        assert len(s.scalars(select(Job.id)).all()) == 1
    db.dispose()
    open_database.cache_clear()


def test_migration_down_and_up(db: Database, tmp_path: Path) -> None:
    add_schedule(db, _settings(tmp_path), ScheduleSpec("m", [str(tmp_path)], every="1h"))
    downgrade(db.engine, "0007")
    upgrade(db.engine)
    with db.session() as s:
        assert s.scalars(select(Schedule)).all() == []
        assert len(s.scalars(select(DetectorModel)).all()) == 1


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


# -- incremental runs ---------------------------------------------------------------------------------


class LocalStore:
    """A directory a schedule scans."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.spec = str(root)

    def put(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.write_bytes(data)
        # A rewrite within the file system's time granularity still differs: the size or mtime moves.
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    def delete(self, name: str) -> None:
        (self.root / name).unlink()

    def ref(self, name: str) -> str:
        return str(self.root / name)


class S3Store:
    """A bucket on moto's server a schedule scans."""

    def __init__(self, settings: Settings) -> None:
        from aiscan.jobs.sources.s3 import s3_client

        self.client = s3_client(settings)
        self.bucket = f"sched-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=self.bucket)
        self.spec = f"s3://{self.bucket}/imgs/"

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"imgs/{name}", Body=data)

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=f"imgs/{name}")

    def ref(self, name: str) -> str:
        return f"s3://{self.bucket}/imgs/{name}"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with netservers.moto_s3() as url:
        yield url


@pytest.fixture(params=["local", "s3"])
def store(
    request: pytest.FixtureRequest, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> LocalStore | S3Store:
    if request.param == "local":
        return LocalStore(tmp_path / "archive")
    endpoint = request.getfixturevalue("moto_endpoint")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AISCAN_S3_ENDPOINT_URL", endpoint)
    get_settings.cache_clear()
    return S3Store(get_settings())


def _run(invoke: Callable[..., str], name: str) -> dict[str, Any]:
    return json.loads(invoke("schedule", "run", name, "--json"))


def _scanned(job_id: int) -> set[str]:
    with open_database(get_settings().database_url).session() as s:
        return set(s.scalars(select(Result.image_uri).where(Result.job_id == job_id)))


def _images(n: int, seed: int) -> list[bytes]:
    return [png_bytes(seed * 100 + i, (48, 48)) for i in range(n)]


def test_three_incremental_runs(store: LocalStore | S3Store, invoke: Callable[..., str]) -> None:
    for i, data in enumerate(_images(5, 1)):
        store.put(f"a{i}.png", data)
    invoke("schedule", "add", "arch", store.spec, "--every", "1h")

    first = _run(invoke, "arch")
    assert first["status"] == "done" and first["schedule"] == "arch"
    assert first["schedule_stats"] == {"listed": 5, "changed": 5, "unchanged": 0, "deleted": 0}
    assert _scanned(first["job_id"]) == {store.ref(f"a{i}.png") for i in range(5)}

    new, rewritten = _images(2, 2), _images(2, 3)
    store.put("b0.png", new[0])
    store.put("b1.png", new[1])
    store.put("a0.png", rewritten[0])
    store.put("a1.png", rewritten[1])
    store.delete("a4.png")
    second = _run(invoke, "arch")
    assert second["schedule_stats"] == {"listed": 6, "changed": 4, "unchanged": 2, "deleted": 1}
    assert _scanned(second["job_id"]) == {store.ref(n) for n in ("b0.png", "b1.png", "a0.png", "a1.png")}
    assert second["counts"]["done"] == 4

    third = _run(invoke, "arch")
    assert third["status"] == "done"
    assert third["schedule_stats"] == {"listed": 6, "changed": 0, "unchanged": 6, "deleted": 0}
    assert third["counts"]["total"] == 0 and _scanned(third["job_id"]) == set()

    shown = json.loads(invoke("jobs", "show", str(third["job_id"]), "--json"))
    assert shown["schedule"] == "arch" and shown["schedule_stats"]["unchanged"] == 6
    listed = json.loads(invoke("jobs", "list", "--json"))
    assert [j["schedule"] for j in listed] == ["arch"] * 3
    sm = json.loads(invoke("schedule", "show", "arch", "--json"))
    assert sm["last_job_id"] == third["job_id"] and sm["last_job_status"] == "done"
    assert sm["marked_objects"] == 6 and sm["state"] == "active"
    with open_database(get_settings().database_url).session() as s:
        assert s.scalars(select(ScheduleSeen)).all() == []  # settled runs leave no seen rows


def _start_and_cancel_after_planning(name: str) -> int:
    """Start a run of ``name`` here, plan it, cancel it before any chunk runs, and drain its queue."""
    settings = get_settings()
    db = open_database(settings.database_url)
    queue = InProcessQueue()
    job_id = run_now(db, settings, queue.send, name)
    ctx = TaskContext(settings, db, queue.send, classifier_factory(settings, settings.batch_size))
    assert queue.run_next(ctx)  # the plan: seen rows written, chunks queued
    with db.session() as s:
        assert s.scalars(select(ScheduleSeen).where(ScheduleSeen.job_id == job_id)).all()
    cancel_job(db, job_id)
    run_queue(settings, queue, job_id, batch_size=settings.batch_size, show_progress=False)
    return job_id


def test_failed_run_keeps_the_marks(home: Path, tmp_path: Path, invoke: Callable[..., str]) -> None:
    store = LocalStore(tmp_path / "archive")
    for i, data in enumerate(_images(3, 4)):
        store.put(f"a{i}.png", data)
    invoke("schedule", "add", "arch", store.spec, "--every", "15m")
    _run(invoke, "arch")
    store.put("a0.png", _images(1, 5)[0])
    store.put("new.png", _images(1, 6)[0])
    db = open_database(get_settings().database_url)
    with db.session() as s:
        before = sorted((k, f) for k, f in s.execute(select(ScheduleMark.uri_key, ScheduleMark.fingerprint)))

    cancelled = _start_and_cancel_after_planning("arch")
    with db.session() as s:
        assert s.get_one(Job, cancelled).status == "cancelled"
        assert (
            sorted((k, f) for k, f in s.execute(select(ScheduleMark.uri_key, ScheduleMark.fingerprint)))
            == before
        )
        assert s.scalars(select(ScheduleSeen)).all() == []

    again = _run(invoke, "arch")
    assert again["schedule_stats"]["changed"] == 2
    assert _scanned(again["job_id"]) == {store.ref("a0.png"), store.ref("new.png")}


def test_errored_image_is_scanned_again(home: Path, tmp_path: Path, invoke: Callable[..., str]) -> None:
    store = LocalStore(tmp_path / "archive")
    store.put("good.png", _images(1, 7)[0])
    store.put("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    invoke("schedule", "add", "arch", store.spec, "--every", "1d")
    first = _run(invoke, "arch")
    assert first["counts"]["errors"] == 1
    second = _run(invoke, "arch")
    assert second["schedule_stats"] == {"listed": 2, "changed": 1, "unchanged": 1, "deleted": 0}
    assert _scanned(second["job_id"]) == {store.ref("broken.png")}
    assert second["counts"]["errors"] == 1


def test_rescan_on_model_change(home: Path, tmp_path: Path, invoke: Callable[..., str]) -> None:
    from tinymodels import save_tiny_classifier

    store = LocalStore(tmp_path / "archive")
    for i, data in enumerate(_images(3, 8)):
        store.put(f"a{i}.png", data)
    invoke(
        "schedule",
        "add",
        "follows",
        store.spec,
        "--every",
        "1h",
        "--model",
        "tiny",
        "--rescan-on-model-change",
    )
    invoke("schedule", "add", "keeps", store.spec, "--every", "1h", "--model", "tiny")
    assert _run(invoke, "follows")["model"] == "tiny:1"
    _run(invoke, "keeps")
    save_tiny_classifier(tmp_path / "m2.keras", 40, seed=9)
    invoke("model", "import", str(tmp_path / "m2.keras"), "--name", "tiny")

    rescanned = _run(invoke, "follows")
    assert rescanned["model"] == "tiny:2"
    assert rescanned["schedule_stats"] == {"listed": 3, "changed": 3, "unchanged": 0, "deleted": 0}
    kept = _run(invoke, "keeps")
    assert kept["model"] == "tiny:2" and kept["schedule_stats"]["changed"] == 0
    # the model the marks were made with is now version 2: no change, nothing scanned
    assert _run(invoke, "follows")["schedule_stats"]["changed"] == 0


# -- the CLI ------------------------------------------------------------------------------------------


def test_schedule_commands(home: Path, tmp_path: Path, invoke: Callable[..., str]) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "x.png").write_bytes(_images(1, 10)[0])
    assert "added" in invoke("schedule", "add", "nightly", str(archive), "--cron", "0 3 * * *")
    invoke("schedule", "add", "often", str(archive), "--every", "1h30m", "--tag-objects")
    listed = json.loads(invoke("schedule", "list", "--json"))
    assert [(s["name"], s["every_s"], s["cron"], s["tag_objects"]) for s in listed] == [
        ("nightly", None, "0 3 * * *", False),
        ("often", 5400, None, True),
    ]
    assert "nightly  active  cron '0 3 * * *'" in invoke("schedule", "list")
    assert "paused" in invoke("schedule", "pause", "often")
    assert json.loads(invoke("schedule", "show", "often", "--json"))["state"] == "paused"
    assert "never run" in invoke("schedule", "show", "often")
    invoke("schedule", "resume", "often")
    # nothing is due yet
    assert json.loads(invoke("schedule", "tick", "--json")) == {"job_ids": []}
    db = open_database(get_settings().database_url)
    with db.session() as s:
        s.execute(Schedule.__table__.update().values(next_due_at=datetime.now(UTC) - timedelta(seconds=1)))
    started = json.loads(invoke("schedule", "tick", "--json"))["job_ids"]
    assert len(started) == 2
    with db.session() as s:
        assert {s.get_one(Job, j).status for j in started} == {"done"}
    out = invoke("schedule", "run", "often")
    assert "schedule: often" in out and "listed 1: 0 new or changed, 1 unchanged, 0 deleted" in out
    assert "removed" in invoke("schedule", "remove", "often")
    assert [s["name"] for s in json.loads(invoke("schedule", "list", "--json"))] == ["nightly"]
    # its jobs stay, still saying which schedule started them
    assert json.loads(invoke("jobs", "show", str(started[0]), "--json"))["schedule"] in ("often", "nightly")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("schedule", "add", "a", "{dir}", "--every", "soon"), 1, "error: --every 'soon' is not a duration"),
        (("schedule", "add", "a", "{dir}", "--every", "0s"), 1, "error: --every '0s' must be at least 1s"),
        (("schedule", "add", "a", "{dir}"), 1, "error: give exactly one of --every DURATION or --cron"),
        (
            ("schedule", "add", "a", "{dir}", "--every", "1h", "--cron", "0 3 * * *"),
            1,
            "error: give exactly one of --every DURATION or --cron",
        ),
        (("schedule", "add", "a", "{dir}", "--cron", "0 3 * *"), 1, "error: --cron '0 3 * *' needs 5 fields"),
        (("schedule", "add", "a", "/no/such/dir", "--every", "1h"), 1, "error: no such file or directory"),
        (("schedule", "add", "a b", "{dir}", "--every", "1h"), 1, "error: schedule name 'a b' must be"),
        (("schedule", "add", "a", "{dir}", "--every", "1h", "--model", "nope"), 1, "error: no model 'nope'"),
        (("schedule", "add", "dup", "{dir}", "--every", "1h"), 1, "error: a schedule named 'dup' exists"),
        (("schedule", "add", "a"), 2, "error: Missing argument 'SOURCES...'"),
        (("schedule", "show", "nope"), 1, "error: no schedule named 'nope'"),
        (("schedule", "run", "nope"), 1, "error: no schedule named 'nope'"),
        (("schedule", "pause", "nope"), 1, "error: no schedule named 'nope'"),
        (("schedule", "resume", "nope"), 1, "error: no schedule named 'nope'"),
        (("schedule", "remove", "nope"), 1, "error: no schedule named 'nope'"),
    ],
)
def test_bad_schedule_arguments_are_one_line_errors(
    home: Path,
    tmp_path: Path,
    invoke: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    code: int,
    message: str,
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    invoke("schedule", "add", "dup", str(archive), "--every", "1h")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([a.replace("{dir}", str(archive)) for a in args])
    assert exit_.value.code == code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), lines


def test_remove_keeps_jobs(home: Path, tmp_path: Path, invoke: Callable[..., str]) -> None:
    store = LocalStore(tmp_path / "archive")
    store.put("a.png", _images(1, 11)[0])
    invoke("schedule", "add", "gone", store.spec, "--every", "1h")
    job_id = _run(invoke, "gone")["job_id"]
    remove_schedule(open_database(get_settings().database_url), "gone")
    with open_database(get_settings().database_url).session() as s:
        assert s.get_one(Job, job_id).schedule_id is None
        assert s.scalars(select(ScheduleMark)).all() == []
    assert json.loads(invoke("jobs", "show", str(job_id), "--json"))["schedule"] == "gone"
