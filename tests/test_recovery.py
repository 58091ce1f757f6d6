"""Stall recovery on PostgreSQL: jobs whose task messages were lost are sent again and finish, jobs that
move are left alone, and one stall period sends at most once. The clock is passed in, so no test sleeps
through a stall timeout."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update
from tinymodels import save_tiny_classifier

from aiscan.jobs.artifacts import classifier_factory
from aiscan.jobs.errors import ConfigError
from aiscan.jobs.follow import follow_job
from aiscan.jobs.inprocess import InProcessQueue, run_queue
from aiscan.jobs.pipeline import classify_chunk, plan_job
from aiscan.jobs.recovery import recover_stalled
from aiscan.jobs.settings import Settings, get_settings
from aiscan.jobs.store.db import Database, open_database
from aiscan.jobs.store.models import Chunk, ChunkStatus, Job, Result
from aiscan.jobs.store.operations import claim_chunk
from aiscan.jobs.submit import create_job
from aiscan.jobs.tasks import CLASSIFY_CHUNK, FINISH_JOB, PLAN_JOB, TaskContext, task_time_limit
from aiscan.training.synth import write_archive

STALL_S = 30


class Recorder:
    """A queue that only records what it is sent: a broker that loses every message."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send(self, name: str, *args: Any) -> None:
        self.sent.append((name, *args))

    def take(self) -> list[tuple[Any, ...]]:
        sent, self.sent = self.sent, []
        return sent


@pytest.fixture
def settings(
    aiscan_home: Path, postgres_url: str, invoke: Callable[..., str], tmp_path: Path, monkeypatch
) -> Settings:
    """PostgreSQL with a tiny default model, and a short stall timeout."""
    monkeypatch.setenv("AISCAN_DATABASE_URL", postgres_url)
    monkeypatch.setenv("AISCAN_STALL_TIMEOUT", str(STALL_S))
    get_settings.cache_clear()
    invoke("db", "upgrade")
    save_tiny_classifier(tmp_path / "m.keras", 40, seed=4)
    invoke("model", "import", str(tmp_path / "m.keras"), "--name", "tiny")
    return get_settings()


def _db(settings: Settings) -> Database:
    return open_database(settings.database_url)


def _planned_job(settings: Settings, root: Path, recorder: Recorder) -> int:
    """A job over 8 images in chunks of 2, planned here; the classify tasks it sent are dropped."""
    write_archive(root, 4, 4, n_corrupt=0, n_non_images=0, seed=2)
    db = _db(settings)
    job_id = create_job(db, settings, [str(root)], model_ref=None, chunk_size=2)
    plan_job(TaskContext(settings, db, recorder.send, lambda _m: None), job_id)
    assert [t[0] for t in recorder.take()] == [CLASSIFY_CHUNK] * 4
    return job_id


def _progress(settings: Settings, job_id: int) -> datetime:
    with _db(settings).session() as s:
        job = s.get_one(Job, job_id)
        stamps = [job.created_at, job.started_at]
        for chunk in s.scalars(select(Chunk).where(Chunk.job_id == job_id)):
            stamps += [chunk.started_at, chunk.done_at]
    return max(t for t in stamps if t is not None)


def _chunks(settings: Settings, job_id: int) -> list[Chunk]:
    with _db(settings).session() as s:
        chunks = list(s.scalars(select(Chunk).where(Chunk.job_id == job_id).order_by(Chunk.seq)))
        s.expunge_all()
    return chunks


def _run(settings: Settings, tasks: list[tuple[Any, ...]], job_id: int) -> None:
    """Deliver ``tasks`` in this process, and whatever they send in turn."""
    queue = InProcessQueue()
    for task in tasks:
        queue.send(*task)
    run_queue(settings, queue, job_id, batch_size=4, show_progress=False)


def test_a_job_whose_chunk_messages_were_lost_is_sent_again_and_finishes(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    job_id = _planned_job(settings, tmp_path / "a", recorder)
    db = _db(settings)
    progress = _progress(settings, job_id)

    # Within the stall timeout nothing is sent; after it, every open chunk is.
    assert recover_stalled(db, settings, recorder.send, now=progress + timedelta(seconds=STALL_S - 1)) == []
    assert recorder.sent == []
    with caplog.at_level("WARNING", logger="aiscan.recovery"):
        sent = recover_stalled(db, settings, recorder.send, now=progress + timedelta(seconds=STALL_S + 1))
    chunk_ids = [c.id for c in _chunks(settings, job_id)]
    assert [(r.job_id, r.plan, r.chunk_ids) for r in sent] == [(job_id, False, chunk_ids)]
    tasks = recorder.take()
    assert tasks == [(CLASSIFY_CHUNK, job_id, cid) for cid in chunk_ids]
    assert f"job {job_id}: no progress for {STALL_S + 1} s; 4 chunk(s) sent again" in caplog.text

    _run(settings, tasks, job_id)
    with db.session() as s:
        assert s.get_one(Job, job_id).status == "done"
        uris = list(s.scalars(select(Result.image_uri).where(Result.job_id == job_id)))
    assert len(uris) == len(set(uris)) == 8
    # A job that is done is never sent again.
    far = datetime.now(UTC) + timedelta(days=1)
    assert recover_stalled(db, settings, recorder.send, now=far) == []


def test_recovery_twice_in_one_stall_period_sends_once(settings: Settings, tmp_path: Path) -> None:
    recorder = Recorder()
    job_id = _planned_job(settings, tmp_path / "a", recorder)
    db = _db(settings)
    first = _progress(settings, job_id) + timedelta(seconds=STALL_S + 1)
    assert len(recover_stalled(db, settings, recorder.send, now=first)) == 1
    assert len(recorder.take()) == 4
    # A second beat, or the next tick, within the period: the re-send counts as progress.
    for later in (first, first + timedelta(seconds=STALL_S - 1)):
        assert recover_stalled(db, settings, recorder.send, now=later) == []
    assert recorder.sent == []
    # Still nothing moved a whole period after the re-send: send again.
    assert len(recover_stalled(db, settings, recorder.send, now=first + timedelta(seconds=STALL_S + 1))) == 1
    assert len(recorder.take()) == 4


def test_a_job_whose_finishing_message_was_lost_is_finished(settings: Settings, tmp_path: Path) -> None:
    recorder = Recorder()
    job_id = _planned_job(settings, tmp_path / "a", recorder)
    db = _db(settings)
    ctx = TaskContext(settings, db, recorder.send, classifier_factory(settings, 4))
    for chunk in _chunks(settings, job_id):
        classify_chunk(ctx, job_id, chunk.id)
    assert recorder.take() == [(FINISH_JOB, job_id)]  # and the broker loses it
    sent = recover_stalled(
        db, settings, recorder.send, now=_progress(settings, job_id) + timedelta(seconds=STALL_S + 1)
    )
    assert [(r.plan, r.chunk_ids, r.finish) for r in sent] == [(False, [], True)]
    tasks = recorder.take()
    assert tasks == [(FINISH_JOB, job_id)]
    _run(settings, tasks, job_id)
    with db.session() as s:
        assert s.get_one(Job, job_id).status == "done"


def test_nothing_is_sent_while_workers_move_other_jobs(settings: Settings, tmp_path: Path) -> None:
    recorder = Recorder()
    waiting = _planned_job(settings, tmp_path / "a", recorder)
    busy = _planned_job(settings, tmp_path / "b", recorder)
    db = _db(settings)
    t0 = _progress(settings, busy)
    # A worker took a chunk of the other job 40 s later: the queue is being worked through.
    taken = _chunks(settings, busy)[0].id
    with db.session() as s:
        s.execute(
            update(Chunk).where(Chunk.id == taken).values(started_at=t0 + timedelta(seconds=40), attempts=1)
        )
    assert recover_stalled(db, settings, recorder.send, now=t0 + timedelta(seconds=50)) == []
    # Once nothing has moved anywhere for the stall timeout, both jobs go; the taken chunk may still run.
    sent = {
        r.job_id: r.chunk_ids
        for r in recover_stalled(db, settings, recorder.send, now=t0 + timedelta(seconds=80))
    }
    assert sent == {
        waiting: [c.id for c in _chunks(settings, waiting)],
        busy: [c.id for c in _chunks(settings, busy) if c.id != taken],
    }


def test_a_job_with_recent_progress_is_left_alone(settings: Settings, tmp_path: Path) -> None:
    recorder = Recorder()
    job_id = _planned_job(settings, tmp_path / "a", recorder)
    db = _db(settings)
    chunks = _chunks(settings, job_id)
    # The last chunk is taken later than everything else: the job moved then.
    claim = claim_chunk(db, job_id, chunks[-1].id, "w1@host")
    assert claim is not None
    taken = _chunks(settings, job_id)[-1].started_at
    assert taken is not None
    assert recover_stalled(db, settings, recorder.send, now=taken + timedelta(seconds=STALL_S - 1)) == []
    assert recorder.sent == []


def test_a_chunk_that_may_still_run_is_not_sent_and_attempts_are_kept(
    settings: Settings, tmp_path: Path
) -> None:
    recorder = Recorder()
    job_id = _planned_job(settings, tmp_path / "a", recorder)
    db = _db(settings)
    chunks = _chunks(settings, job_id)
    for _ in range(2):  # two deliveries that died
        assert claim_chunk(db, job_id, chunks[0].id, "w1@host") is not None
    taken = _chunks(settings, job_id)[0].started_at
    assert taken is not None

    # Stalled, but the taken chunk may still be running on its worker: only the untaken ones go.
    sent = recover_stalled(db, settings, recorder.send, now=taken + timedelta(seconds=STALL_S + 1))
    assert [r.chunk_ids for r in sent] == [[c.id for c in chunks[1:]]]
    recorder.take()
    # Past the task time limit no delivery can still run it: it goes too, its attempts kept.
    later = taken + timedelta(seconds=task_time_limit(settings) + 1)
    sent = recover_stalled(db, settings, recorder.send, now=later)
    assert [r.chunk_ids for r in sent] == [[c.id for c in chunks]]
    assert _chunks(settings, job_id)[0].attempts == 2
    assert _chunks(settings, job_id)[0].status == ChunkStatus.PENDING


def test_a_job_whose_plan_message_was_lost_is_planned_again(settings: Settings, tmp_path: Path) -> None:
    write_archive(tmp_path / "a", 2, 2, n_corrupt=0, n_non_images=0, seed=3)
    db = _db(settings)
    job_id = create_job(db, settings, [str(tmp_path / "a")], model_ref=None, chunk_size=3)
    recorder = Recorder()
    created = _progress(settings, job_id)
    sent = recover_stalled(db, settings, recorder.send, now=created + timedelta(seconds=STALL_S + 1))
    assert [(r.plan, r.chunk_ids) for r in sent] == [(True, [])]
    tasks = recorder.take()
    assert tasks == [(PLAN_JOB, job_id)]
    _run(settings, tasks, job_id)
    with db.session() as s:
        assert s.get_one(Job, job_id).status == "done"
        assert len(list(s.scalars(select(Result.id).where(Result.job_id == job_id)))) == 4


def test_scan_wait_says_once_what_to_do_when_a_job_does_not_move(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AISCAN_STALL_TIMEOUT", "1")
    get_settings.cache_clear()
    write_archive(tmp_path / "a", 1, 1, n_corrupt=0, n_non_images=0, seed=3)
    job_id = create_job(_db(settings), settings, [str(tmp_path / "a")], model_ref=None, chunk_size=3)
    status = follow_job(get_settings(), job_id, show_progress=False, poll_s=0.2, timeout_s=4)
    assert status == "pending"
    err = capsys.readouterr().err
    assert err.count("no progress for") == 1
    assert "`aiscan beat`" in err and f"`aiscan jobs retry {job_id}`" in err


def test_stall_timeout_must_be_a_finite_number_of_seconds() -> None:
    assert Settings.from_env({}).stall_timeout == 300
    for bad in ("inf", "nan", "0", "-5"):
        with pytest.raises(ConfigError, match="AISCAN_STALL_TIMEOUT"):
            Settings.from_env({"AISCAN_STALL_TIMEOUT": bad})


def test_beat_needs_a_broker(aiscan_home: Path) -> None:
    from aiscan.jobs.cli import cli

    result = CliRunner().invoke(cli, ["beat"])
    assert result.exit_code != 0 and "AISCAN_BROKER_URL" in result.output


def test_the_beat_schedule_runs_recovery_often_enough() -> None:
    from aiscan.jobs.app import make_app, recovery_interval

    for stall, interval in ((10, 2.5), (300, 60.0)):
        settings = Settings.from_env({"AISCAN_STALL_TIMEOUT": str(stall), "AISCAN_BROKER_URL": "redis://x"})
        assert recovery_interval(settings) == interval
        entry = make_app(settings).conf.beat_schedule["aiscan-recover-stalled"]
        assert entry["task"] == "aiscan.recover_stalled" and entry["schedule"] == interval
