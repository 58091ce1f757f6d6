"""List+diff rate of a scheduled run against moto's S3 server: the planning of a run with no change.

``python -m bench.schedule_diff [--keys 20000] [--postgres]`` puts KEYS small objects in a
bucket, plans a first run (every object new) and settles it as done, then times the planning of a
second run with nothing changed: listing, one marks query and one seen-rows upsert per 1000 objects.
Prints one JSON object; rates are objects per second.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiscan.jobs.pipeline import plan_job
from aiscan.jobs.schedules import ScheduleSpec, add_schedule, run_now
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources.s3 import S3Source, s3_client
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.models import DetectorModel, Job, JobStatus
from aiscan.jobs.store.operations import mark_job
from aiscan.jobs.tasks import TaskContext


def _no_classifier(_model: DetectorModel) -> Any:
    raise AssertionError("planning never loads a model")


def measure(keys: int, database_url: str | None, workdir: str) -> dict[str, Any]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        _, port = server.get_host_and_port()
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
        )
        env = {"AISCAN_HOME": workdir, "AISCAN_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        if database_url:
            env["AISCAN_DATABASE_URL"] = database_url
        settings = Settings.from_env(env)
        return _measure(settings, keys)
    finally:
        server.stop()


def _measure(settings: Settings, keys: int) -> dict[str, Any]:
    client = s3_client(settings)
    client.create_bucket(Bucket="bench")
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda i: client.put_object(Bucket="bench", Key=f"p/{i:07d}.jpg", Body=b"x"), range(keys)
            )
        )
    db = open_database(settings.database_url, auto_upgrade=True)
    with db.session() as s:
        s.add(DetectorModel(name="b", version=1, sha256="0" * 64, path="/none", meta={}, is_default=True))
    add_schedule(db, settings, ScheduleSpec("bench", ["s3://bench/p/"], every="1h"))
    sent: list[tuple[Any, ...]] = []
    ctx = TaskContext(settings, db, lambda *task: sent.append(task), _no_classifier)

    start = time.perf_counter()
    listed = sum(1 for _ in S3Source("s3://bench/p/", settings).iter_entries())
    list_s = time.perf_counter() - start

    first = run_now(db, settings, ctx.send, "bench")
    start = time.perf_counter()
    plan_job(ctx, first)
    first_s = time.perf_counter() - start
    mark_job(db, first, JobStatus.DONE)  # settles the marks as a finished run would

    second = run_now(db, settings, ctx.send, "bench")
    start = time.perf_counter()
    plan_job(ctx, second)
    second_s = time.perf_counter() - start
    with db.session() as s:
        stats = s.get_one(Job, second).schedule_stats
    return {
        "keys": keys,
        "database": settings.database_url.partition(":")[0],
        "listing_only_objects_per_s": round(listed / list_s),
        "first_run_plan_objects_per_s": round(keys / first_s),
        "unchanged_run_plan_s": round(second_s, 3),
        "unchanged_run_objects_per_s": round(keys / second_s),
        "unchanged_run_stats": stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--postgres", action="store_true", help="a scratch database on the local PostgreSQL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        if not args.postgres:  # SQLite in the temporary AISCAN_HOME
            print(json.dumps(measure(args.keys, None, workdir)))
            return
        from bench import services

        services.ensure_postgres()
        with services.scratch_database("aiscan_bench") as url:
            print(json.dumps(measure(args.keys, url, workdir)))


if __name__ == "__main__":
    main()
