"""The production path with real parts: Redis broker, PostgreSQL results, real `celery worker` processes,
moto's S3 server over HTTP and a local HTTP server for URL lists."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import netservers
import numpy as np
import pytest
from images import jpeg_bytes, png_bytes
from metadata_images import a1111_png
from sqlalchemy import func, select
from tinymodels import save_tiny_classifier

from aiscan.jobs.app import CeleryQueue, make_app
from aiscan.jobs.settings import Settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.models import Chunk, ChunkStatus, Job, Result
from aiscan.jobs.submit import create_job
from aiscan.jobs.tasks import CLASSIFY_CHUNK
from aiscan.training.synth import write_archive
from bench import services
from bench.c2pa_signing import make_chain, sign
from bench.processes import Worker, run_aiscan

WORKER_READY_S = 90
JOB_TIMEOUT_S = 180


class Cluster:
    """Services and worker processes of one test module."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.workers: dict[str, Worker] = {}
        self.settings = Settings.from_env(env)

    def aiscan_ok(self, *args: str, env: dict[str, str] | None = None) -> str:
        return run_aiscan(args, {**self.env, **(env or {})}, timeout=240).stdout

    def start_worker(self, name: str, env: dict[str, str] | None = None) -> None:
        self.workers[name] = Worker(name, {**self.env, **(env or {})}, self.tmp / f"{name}.log")
        self.workers[name].wait_ready(WORKER_READY_S, warm_up=False)

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.workers.pop(name).kill(sig)

    def stop(self) -> None:
        while self.workers:
            self.workers.popitem()[1].stop()

    def db(self):
        return open_database(self.settings.database_url)

    def wait_job(self, job_id: int, timeout: float = JOB_TIMEOUT_S) -> Job:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.db().session() as s:
                job = s.get(Job, job_id)
                s.expunge(job)
            if job.status in ("done", "failed", "cancelled"):
                return job
            time.sleep(0.3)
        logs = "\n".join((self.tmp / f"{n}.log").read_text()[-2000:] for n in self.workers)
        pytest.fail(f"job {job_id} did not finish in {timeout} s: {job.status}\n{logs}")

    def rows(self, job_id: int) -> list[Result]:
        with self.db().session() as s:
            rows = list(s.scalars(select(Result).where(Result.job_id == job_id)))
            s.expunge_all()
        return rows


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: str, redis_server: str
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    with (
        services.scratch_database("aiscan_dist") as database_url,
        services.scratch_redis_db() as broker_url,
        netservers.moto_s3() as s3_endpoint,
        netservers.FaultyHTTPServer() as http,
    ):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # Workers and CLI runs import the same aiscan as this process (a checkout's link farm too).
            **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
            "HOME": str(tmp),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "AISCAN_HOME": str(tmp / "home"),
            "AISCAN_DATABASE_URL": database_url,
            "AISCAN_BROKER_URL": broker_url,
            "AISCAN_S3_ENDPOINT_URL": s3_endpoint,
            "AISCAN_URL_ALLOW_NETWORKS": "127.0.0.0/8",
            "AISCAN_URL_TIMEOUT": "1",
            "AISCAN_URL_RETRIES": "2",
            "AISCAN_MAX_IMAGE_BYTES": str(2 * 1024 * 1024),
            "AISCAN_VISIBILITY_TIMEOUT": "6",
            "AISCAN_FETCH_CONCURRENCY": "2",
            "AISCAN_BATCH_SIZE": "4",
            "AWS_ACCESS_KEY_ID": "testing-key-id",
            "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        c = Cluster(tmp, env)
        c.http = http
        c.s3_endpoint = s3_endpoint
        c.aiscan_ok("db", "upgrade")
        save_tiny_classifier(tmp / "tiny.keras", 64, seed=1)
        c.aiscan_ok("model", "import", str(tmp / "tiny.keras"), "--name", "tiny", "--scale", "unit")
        c.start_worker("w1")
        c.start_worker("w2")
        try:
            yield c
        finally:
            c.stop()


def _s3_put(cluster: Cluster, bucket: str, objects: dict[str, bytes]) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=cluster.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing-key-id",
        aws_secret_access_key="testing-secret-key",
    )
    s3.create_bucket(Bucket=bucket)
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def test_one_job_over_a_directory_an_s3_prefix_and_a_url_list(cluster: Cluster, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    truth = write_archive(tmp_path / "dir", 4, 4, n_corrupt=2, n_non_images=1, seed=3)
    dir_refs = {p for p, o in truth.items() if o != "skipped"}

    s3_objects = {f"photos/2024/img{i}.jpg": jpeg_bytes(rng) for i in range(5)}
    s3_objects |= {f"photos/gen/g{i}.png": png_bytes(rng) for i in range(4)}
    # Provenance is read from the bytes each source fetched: generator text in S3, a signed file by URL.
    s3_objects["photos/gen/sd.png"] = a1111_png("sdxl_turbo")
    s3_objects["photos/notes.txt"] = b"not an image"
    s3_objects["elsewhere/x.jpg"] = jpeg_bytes(rng)
    _s3_put(cluster, "archive", s3_objects)
    s3_refs = {f"s3://archive/{k}" for k in s3_objects if k.startswith("photos/") and k != "photos/notes.txt"}

    url_refs = set()
    for i in range(5):
        cluster.http.add(f"/mixed/{i}.jpg", body=jpeg_bytes(rng))
        url_refs.add(cluster.http.url(f"/mixed/{i}.jpg"))
    signed = sign(jpeg_bytes(rng), "image/jpeg", make_chain(tmp_path / "pki"), software_agent="Firefly")
    cluster.http.add("/mixed/signed.jpg", body=signed)
    url_refs.add(cluster.http.url("/mixed/signed.jpg"))
    cluster.http.add("/mixed/gone.jpg", status=404, body=b"no")
    url_refs.add(cluster.http.url("/mixed/gone.jpg"))
    urls = tmp_path / "urls.txt"
    urls.write_text("# a URL list\n" + "\n".join(sorted(url_refs)) + "\n\n")

    out = cluster.aiscan_ok(
        "scan",
        str(tmp_path / "dir"),
        "s3://archive/photos/",
        str(urls),
        "--chunk-size",
        "4",
        "--wait",
        "--json",
    )
    summary = json.loads(out)
    assert summary["status"] == "done"
    rows = cluster.rows(summary["job_id"])
    uris = [r.image_uri for r in rows]
    assert len(uris) == len(set(uris)) == len(dir_refs | s3_refs | url_refs)
    assert set(uris) == dir_refs | s3_refs | url_refs
    by_uri = {r.image_uri: r for r in rows}
    for ref in s3_refs:
        assert by_uri[ref].etag and by_uri[ref].error_kind is None and by_uri[ref].p_real is not None
    assert by_uri[cluster.http.url("/mixed/gone.jpg")].error_kind == "missing"
    sd, firefly = by_uri["s3://archive/photos/gen/sd.png"], by_uri[cluster.http.url("/mixed/signed.jpg")]
    assert (sd.provenance, sd.verdict) == ("metadata", "ai_declared") and "sdxl_turbo" in sd.generator
    assert (firefly.provenance, firefly.c2pa_state, firefly.verdict) == ("c2pa", "untrusted", "ai_declared")
    assert summary["verdicts"]["ai_declared"] == 2
    assert summary["counts"]["errors"] == 3  # two corrupt files, one dead URL
    assert summary["skipped_files"] == 2  # notes.txt on disk and in the bucket
    with cluster.db().session() as s:
        chunks = s.scalar(select(func.count()).select_from(Chunk).where(Chunk.job_id == summary["job_id"]))
    assert chunks > 1
    # Secrets of the S3 credentials never reach the database or a report.
    report = cluster.aiscan_ok("report", str(summary["job_id"]), "--format", "jsonl")
    assert "testing-secret-key" not in report and "testing-key-id" not in report


def test_url_faults_end_as_distinct_error_rows(cluster: Cluster, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    h = cluster.http
    h.add("/f/ok.jpg", body=jpeg_bytes(rng))
    h.add("/f/missing.jpg", status=404, body=b"")
    h.add("/f/flaky.jpg", body=jpeg_bytes(rng), fail_first=1, fail_status=500)
    h.add("/f/slow.jpg", body=jpeg_bytes(rng), delay=3.0)
    h.add("/f/huge.jpg", body=b"\xff\xd8\xff" + b"\0" * (3 * 1024 * 1024))
    h.add("/f/to-metadata.jpg", status=302, headers={"Location": "http://169.254.169.254/latest/meta-data"})
    h.add("/f/page.html", body=b"<html></html>", content_type="text/html")
    urls = tmp_path / "faults.csv"
    paths = ["ok.jpg", "missing.jpg", "flaky.jpg", "slow.jpg", "huge.jpg", "to-metadata.jpg", "page.html"]
    urls.write_text("id,url\n" + "".join(f"{i},{h.url('/f/' + p)}\n" for i, p in enumerate(paths)))

    summary = json.loads(cluster.aiscan_ok("scan", "--urls", str(urls), "--wait", "--json"))
    assert summary["status"] == "done"
    kinds = {r.image_uri.rsplit("/", 1)[1]: r.error_kind for r in cluster.rows(summary["job_id"])}
    assert kinds == {
        "ok.jpg": None,
        "missing.jpg": "missing",
        "flaky.jpg": None,
        "slow.jpg": "timeout",
        "huge.jpg": "too_large",
        "to-metadata.jpg": "refused_address",
        "page.html": "bad_content_type",
    }
    assert h.hits["/f/flaky.jpg"] == 2


@pytest.fixture
def rabbitmq_vhost() -> Iterator[str]:
    """A RabbitMQ virtual host of this test's own on 127.0.0.1:5672 (the server is started if down)."""
    if subprocess.run(["rabbitmqctl", "-q", "status"], capture_output=True).returncode != 0:
        subprocess.run(["rabbitmq-server", "-detached"], capture_output=True)
        subprocess.run(["rabbitmqctl", "-q", "wait", "--timeout", "60", "--pid", "0"], capture_output=True)
    vhost = f"aiscan-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60)


def test_rabbitmq_works_as_the_broker_too(cluster: Cluster, tmp_path: Path, rabbitmq_vhost: str) -> None:
    env = {"AISCAN_BROKER_URL": rabbitmq_vhost}
    cluster.start_worker("rabbit", env=env)
    try:
        write_archive(tmp_path / "r", 3, 3, n_corrupt=1, n_non_images=0, seed=6)
        summary = json.loads(
            cluster.aiscan_ok("scan", str(tmp_path / "r"), "--chunk-size", "3", "--wait", "--json", env=env)
        )
    finally:
        cluster.kill_worker("rabbit", signal.SIGTERM)
    assert summary["status"] == "done"
    assert summary["counts"]["done"] == 7 and summary["counts"]["errors"] == 1
    assert {r.worker.split("@")[0] for r in _chunks(cluster, summary["job_id"])} == {"rabbit"}


def _chunks(cluster: Cluster, job_id: int) -> list[Chunk]:
    with cluster.db().session() as s:
        chunks = list(s.scalars(select(Chunk).where(Chunk.job_id == job_id)))
        s.expunge_all()
    return chunks


def _slow_url_list(cluster: Cluster, tmp_path: Path, tag: str, n: int, delay: float) -> Path:
    rng = np.random.default_rng(7)
    lines = []
    for i in range(n):
        path = f"/{tag}/{i}.jpg"
        cluster.http.add(path, body=jpeg_bytes(rng, (120, 90)), delay=delay)
        lines.append(cluster.http.url(path))
    urls = tmp_path / f"{tag}.txt"
    urls.write_text("\n".join(lines) + "\n")
    return urls


def test_the_same_chunk_delivered_twice_leaves_no_duplicates(cluster: Cluster, tmp_path: Path) -> None:
    urls = _slow_url_list(cluster, tmp_path, "twice", 6, delay=0.4)
    db = cluster.db()
    job_id = create_job(db, cluster.settings, [f"urls:{urls}"], model_ref=None, chunk_size=6)
    # Plan in this process, then hand the one chunk to both workers at once: both run it.
    from aiscan.jobs.pipeline import plan_job
    from aiscan.jobs.tasks import TaskContext

    sent: list[tuple] = []
    plan_job(TaskContext(cluster.settings, db, lambda *a: sent.append(a), lambda _row: None), job_id)
    assert len(sent) == 1 and sent[0][0] == CLASSIFY_CHUNK
    queue = CeleryQueue(make_app(cluster.settings))
    queue.send(*sent[0])
    queue.send(*sent[0])
    job = cluster.wait_job(job_id)
    assert job.status == "done"
    rows = cluster.rows(job_id)
    assert len(rows) == 6 and len({r.image_uri for r in rows}) == 6
    assert all(r.error_kind is None for r in rows)
    time.sleep(1.0)  # let the second delivery finish too, then check again
    assert len(cluster.rows(job_id)) == 6
    with db.session() as s:
        chunk = s.scalars(select(Chunk).where(Chunk.job_id == job_id)).one()
        assert chunk.attempts == 2, "both deliveries must have run the chunk"


def test_a_worker_killed_mid_chunk_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    urls = _slow_url_list(cluster, tmp_path, "kill", 24, delay=0.6)
    summary = json.loads(cluster.aiscan_ok("scan", str(urls), "--chunk-size", "6", "--json"))
    job_id = summary["job_id"]
    db = cluster.db()
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        with db.session() as s:
            victim = s.scalar(
                select(Chunk.worker).where(
                    Chunk.job_id == job_id,
                    Chunk.status == ChunkStatus.PENDING,
                    Chunk.started_at.is_not(None),
                    Chunk.worker.like("w1@%"),
                )
            )
        time.sleep(0.05)
    assert victim is not None, "worker w1 never took a chunk"
    with db.session() as s:
        killed_chunk = s.scalar(
            select(Chunk.id).where(
                Chunk.job_id == job_id, Chunk.worker == victim, Chunk.status == ChunkStatus.PENDING
            )
        )
    cluster.kill_worker("w1")  # SIGKILL to the parent and its pool: nothing gets to clean up

    job = cluster.wait_job(job_id)
    assert job.status == "done"
    rows = cluster.rows(job_id)
    assert len(rows) == 24
    assert len({r.image_uri for r in rows}) == 24
    assert all(r.error_kind is None and r.p_real is not None for r in rows)
    with db.session() as s:
        chunk = s.get(Chunk, killed_chunk)
        assert chunk.status == ChunkStatus.DONE and chunk.attempts >= 2
        assert not chunk.worker.startswith("w1@")
    cluster.start_worker("w1")


def test_tasks_that_run_out_of_retries_end_their_chunk_or_job(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    from aiscan.jobs.pipeline import plan_job
    from aiscan.jobs.tasks import TaskContext

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, cluster.env[key])  # this process lists the bucket too
    rng = np.random.default_rng(11)
    _s3_put(cluster, "far", {f"img{i}.jpg": jpeg_bytes(rng) for i in range(3)})
    # A broker database of its own (the cluster's is not empty), so only the cut-off worker sees these tasks.
    broker = redis_url
    assert broker != cluster.env["AISCAN_BROKER_URL"]
    cut_off = {
        "AISCAN_BROKER_URL": broker,
        "AISCAN_S3_ENDPOINT_URL": f"http://127.0.0.1:{netservers.closed_port()}",
        "AISCAN_URL_RETRIES": "0",
        # More retries than a chunk's death limit (4): retries must not count as deaths.
        "AISCAN_TASK_MAX_RETRIES": "5",
        "AISCAN_TASK_RETRY_BACKOFF_MAX": "1",
    }
    cluster.start_worker("cutoff", env=cut_off)
    try:
        # Planned here, where S3 answers; classified by the worker, which cannot reach it.
        db = cluster.db()
        job_id = create_job(db, cluster.settings, ["s3://far/"], model_ref=None, chunk_size=4)
        sent: list[tuple] = []
        plan_job(TaskContext(cluster.settings, db, lambda *a: sent.append(a), lambda _row: None), job_id)
        queue = CeleryQueue(make_app(Settings.from_env({**cluster.env, **cut_off})))
        for task in sent:
            queue.send(*task)
        job = cluster.wait_job(job_id, timeout=60)
        assert job.status == "done"
        rows = cluster.rows(job_id)
        assert len(rows) == 3
        assert {r.error_kind for r in rows} == {"unavailable"}
        assert all(r.error.startswith("gave up after 5 retries: the S3 endpoint") for r in rows)

        # Submitted where S3 answers, planned by the worker: planning gives up and fails the job.
        out = cluster.aiscan_ok("scan", "s3://far/", "--json", env={"AISCAN_BROKER_URL": broker})
        job = cluster.wait_job(json.loads(out)["job_id"], timeout=60)
        assert job.status == "failed" and job.finished_at is not None
        assert job.error.startswith("aiscan.plan_job failed: gave up after 5 retries: the S3 endpoint")
        assert "is unavailable" in job.error
    finally:
        cluster.kill_worker("cutoff", signal.SIGTERM)


def test_refs_the_database_cannot_index_or_store_as_text_cost_no_neighbours(
    cluster: Cluster, tmp_path: Path
) -> None:
    rng = np.random.default_rng(13)
    h = cluster.http
    h.add("/p/ok.jpg", body=jpeg_bytes(rng))
    h.add("/p/long.jpg", body=jpeg_bytes(rng))
    # A presigned URL of 5 KB: past PostgreSQL's btree row limit, which once failed the chunk for good.
    long_url = h.url("/p/long.jpg") + "?X-Amz-Signature=" + os.urandom(2560).hex()
    urls = tmp_path / "poison.txt"
    urls.write_text("\n".join([h.url("/p/ok.jpg"), long_url, h.url("/p/ok.jpg")]) + "\n")
    odd = tmp_path / "odd"
    odd.mkdir()
    with open(os.fsencode(odd) + b"/caf\xe9.jpg", "wb") as fh:  # not UTF-8: a lone surrogate in Python
        fh.write(jpeg_bytes(rng))

    summary = json.loads(cluster.aiscan_ok("scan", str(urls), str(odd), "--wait", "--json"))
    assert summary["status"] == "done"
    assert summary["counts"]["done"] == summary["counts"]["total"] == 4
    assert summary["counts"]["errors"] == 0 and summary["duplicates"] == 1
    rows = {r.image_uri: r for r in cluster.rows(summary["job_id"])}
    assert set(rows) == {h.url("/p/ok.jpg"), long_url, f"{odd}/caf\\xe9.jpg"}
    assert all(r.p_real is not None for r in rows.values())
