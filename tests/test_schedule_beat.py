"""Schedules started by `aiscan beat`: two beats and real workers on Redis and PostgreSQL, each due run of
a schedule started exactly once, and every run's job finished."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from images import png_dir
from sqlalchemy import select, update
from tinymodels import save_tiny_classifier

from aiscan.jobs.app import make_app
from aiscan.jobs.settings import Settings
from aiscan.jobs.store.db import Database, open_database
from aiscan.jobs.store.models import Job, JobStatus, Schedule, ScheduleRun
from aiscan.jobs.tasks import PLAN_QUEUE, TICK_SCHEDULES
from bench import services
from bench.processes import WORKER_READY_S, Worker, aiscan_argv, run_aiscan

BEATS_RUN_S = 12
SETTLE_S = 300


def test_the_beat_schedule_sends_ticks_to_the_plan_queue() -> None:
    settings = Settings.from_env({"AISCAN_BROKER_URL": "redis://127.0.0.1:1/0", "AISCAN_SCHEDULE_TICK": "7"})
    entry = make_app(settings).conf.beat_schedule["aiscan-tick-schedules"]
    assert entry["task"] == TICK_SCHEDULES and entry["schedule"] == 7.0
    assert entry["options"]["queue"] == PLAN_QUEUE


@contextlib.contextmanager
def beat(name: str, env: dict[str, str], tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One `aiscan beat` in its own session and working directory, stopped (SIGTERM, then SIGKILL) on exit."""
    cwd = tmp / name
    cwd.mkdir()
    with open(tmp / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(
            aiscan_argv(["beat"]),
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _settled(db: Database, schedule_id: int) -> tuple[list[ScheduleRun], list[Job]] | None:
    """The schedule's runs and jobs once every run has its job and every job has ended; else None."""
    with db.session() as s:
        runs = list(s.scalars(select(ScheduleRun).where(ScheduleRun.schedule_id == schedule_id)))
        jobs = list(s.scalars(select(Job).where(Job.schedule_id == schedule_id)))
        s.expunge_all()
    if any(run.job_id is None for run in runs) or any(job.status not in JobStatus.FINISHED for job in jobs):
        return None
    return runs, jobs


def test_two_beats_start_each_due_run_once(tmp_path: Path, postgres_server: str, redis_server: str) -> None:
    images = png_dir(tmp_path / "photos", 3, (96, 96))
    with services.scratch_database("aiscan_beat") as database_url, services.scratch_redis_db() as broker_url:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
            "HOME": str(tmp_path),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "AISCAN_HOME": str(tmp_path / "home"),
            "AISCAN_DATABASE_URL": database_url,
            "AISCAN_BROKER_URL": broker_url,
            "AISCAN_BATCH_SIZE": "4",
            "AISCAN_SCHEDULE_TICK": "1",
        }
        settings = Settings.from_env(env)
        run_aiscan(["db", "upgrade"], env, timeout=240)
        save_tiny_classifier(tmp_path / "tiny.keras", 40, seed=4)
        run_aiscan(["model", "import", str(tmp_path / "tiny.keras"), "--name", "tiny"], env, timeout=240)
        run_aiscan(["schedule", "add", "photos", str(tmp_path / "photos"), "--every", "3s"], env, timeout=240)
        db = open_database(settings.database_url)
        with db.session() as s:
            schedule_id = s.scalars(select(Schedule.id).where(Schedule.name == "photos")).one()

        worker = Worker("w1", env, tmp_path / "w1.log")
        try:
            worker.wait_ready(WORKER_READY_S, warm_up=False)
            with beat("beat1", env, tmp_path), beat("beat2", env, tmp_path):
                time.sleep(BEATS_RUN_S)
            # Ticks still queued or running may start one more run; none starts once the schedule is paused.
            with db.session() as s:
                s.execute(update(Schedule).where(Schedule.id == schedule_id).values(paused=True))
            deadline = time.monotonic() + SETTLE_S
            while (settled := _settled(db, schedule_id)) is None:
                if time.monotonic() > deadline:
                    pytest.fail(f"the schedule's runs did not finish:\n{worker.log()[-3000:]}")
                time.sleep(0.5)
        finally:
            worker.stop()

    runs, jobs = settled
    beat_logs = "".join((tmp_path / f"beat{i}.log").read_text(errors="replace") for i in (1, 2))
    assert beat_logs.count("Sending due task aiscan-tick-schedules") >= 2 * 2, beat_logs[-3000:]
    # One job per claimed due time, and no job without its claim: two beats started nothing twice.
    assert len({run.due_at for run in runs}) == len(runs)
    assert sorted(run.job_id for run in runs) == sorted(job.id for job in jobs)
    assert len(jobs) == len(runs) >= 2
    assert {job.status for job in jobs} == {JobStatus.DONE}, [(job.id, job.status, job.error) for job in jobs]
    # the first run scans the directory; later ones only what changed since the last completed run
    assert min(jobs, key=lambda job: job.id).total == len(images)
