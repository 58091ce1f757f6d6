"""aiscan's benchmark: seed-style loop, model ceiling, decode, in-process and Celery scans, worker RSS.

Run ``python -m bench.run [--quick] [--out bench-results.json]`` from the repository root (or ``make
bench``). It measures and reports; it asserts nothing about timings. docs/PERFORMANCE.md explains each row.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

RESULT_KEYS = (
    "seed_style_ips",
    "ceiling_ips",
    "decode_ips_per_core",
    "inprocess_ips",
    "celery_ips",
    "rss_small_mb",
    "rss_large_mb",
)
SKIPPABLE = ("seed", "inprocess", "celery", "rss")

# The same commands tests/test_distributed.py and tests/conftest.py use for a service that is down.
REDIS_START = (
    "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no "
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
PG_STOP = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main stop"
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"

# Two busy cores and a cold TensorFlow import can take minutes before a worker is warm.
WORKER_READY_S = 600
JOB_TIMEOUT_S = 4 * 3600
RSS_INTERVAL_S = 0.1
SHARD = 16  # images per archive-writing task

_T0 = time.monotonic()


def progress(message: str) -> None:
    """One progress line on stderr, stamped with the time since the bench started."""
    print(f"[bench {time.monotonic() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the synthetic archive


@dataclass
class Archive:
    """The benchmark's image files: camera-like JPEGs first, then generator-like PNGs."""

    root: Path
    camera: list[Path]
    generator: list[Path]

    @property
    def files(self) -> list[Path]:
        return self.camera + self.generator

    def subset(self, n: int) -> list[Path]:
        """``n`` files with the archive's JPEG/PNG mix, so a timed subset costs like the whole."""
        total = len(self.camera) + len(self.generator)
        n = min(n, total)
        n_cam = min(len(self.camera), round(n * len(self.camera) / total)) if total else 0
        n_gen = min(len(self.generator), n - n_cam)
        return self.camera[:n_cam] + self.generator[:n_gen]


def shard_sizes(n: int, shard: int = SHARD) -> list[int]:
    """Split ``n`` images into tasks of at most ``shard``."""
    return [min(shard, n - start) for start in range(0, n, shard)]


def _write_shard(task: tuple[str, int, int, tuple[int, int], int, bool]) -> None:
    from aiscan.training.synth import write_labelled_set

    root, n_real, n_fake, size, seed, vary = task
    write_labelled_set(Path(root), n_real, n_fake, size=size, seed=seed, vary_size=vary)


def make_archive(
    root: Path,
    n_camera: int,
    n_generator: int,
    *,
    camera_size: tuple[int, int] = (1024, 768),
    generator_size: tuple[int, int] = (512, 512),
    seed: int = 0,
) -> Archive:
    """Write the archive with ``training.synth``, in parallel (a 1024x768 camera image takes ~0.5 s)."""
    tasks = [
        (str(root / "camera" / f"s{i:03d}"), n, 0, camera_size, seed * 10_000 + i, True)
        for i, n in enumerate(shard_sizes(n_camera))
    ] + [
        (str(root / "generator" / f"s{i:03d}"), 0, n, generator_size, seed * 10_000 + i, False)
        for i, n in enumerate(shard_sizes(n_generator))
    ]
    # spawn, not fork: the parent may already hold TensorFlow's threads.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, os.cpu_count() or 1), mp_context=ctx) as pool:
        list(pool.map(_write_shard, tasks))
    camera = sorted((root / "camera").rglob("*.jpg"))
    return Archive(root, camera, sorted((root / "generator").rglob("*.png")))


def link_archive(files: Sequence[Path], root: Path, n: int, per_dir: int = 100) -> Path:
    """``n`` names in nested folders for the given files, cycling; hardlinks, or copies across devices."""
    for i in range(n):
        src = files[i % len(files)]
        dst = root / f"d{i // per_dir:03d}" / f"img_{i:05d}{src.suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return root


# ---------------------------------------------------------------- /proc: memory of a process tree


def _proc_kib(pid: int, file: str, field: str) -> int | None:
    """One ``field:`` line of /proc/PID/``file`` in KiB; None when the process is gone, 0 if absent."""
    try:
        with open(f"/proc/{pid}/{file}") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return 0  # a zombie has neither line


def rss_kib(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (VmRSS), or None when the process is gone."""
    return _proc_kib(pid, "status", "VmRSS")


def pss_kib(pid: int) -> int | None:
    """Proportional set size of ``pid`` in KiB: shared pages split among their sharers."""
    return _proc_kib(pid, "smaps_rollup", "Pss")


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc/PID/task/*/children or, without it, every /proc/*/stat."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    found: list[int] = []
    try:
        for tid in tasks:
            with contextlib.suppress(FileNotFoundError):
                found += [int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        return found
    except OSError:  # kernels without CONFIG_PROC_CHILDREN
        pass
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                # The command name may hold spaces and parentheses; fields resume after the last ')'.
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


def descendant_pids(pid: int) -> list[int]:
    out: list[int] = []
    todo = child_pids(pid)
    while todo:
        p = todo.pop()
        out.append(p)
        todo += child_pids(p)
    return out


@dataclass
class RssPeak:
    """Peaks seen while sampling: the root process, its largest single descendant, and their sum.

    The RSS sum counts pages shared by the parent and its forked children twice; ``pss_total_kib``
    (the tree's summed PSS) does not.
    """

    parent_kib: int = 0
    child_kib: int = 0
    total_kib: int = 0
    pss_total_kib: int = 0
    samples: int = 0

    def add(self, parent: int, children: Sequence[int], pss_total: int = 0) -> None:
        self.parent_kib = max(self.parent_kib, parent)
        self.child_kib = max(self.child_kib, max(children, default=0))
        self.total_kib = max(self.total_kib, parent + sum(children))
        self.pss_total_kib = max(self.pss_total_kib, pss_total)
        self.samples += 1


class RssSampler:
    """Samples the RSS of ``pid`` and its descendants every ``interval`` s in a thread, keeping peaks."""

    def __init__(self, pid: int, interval: float = RSS_INTERVAL_S) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = RssPeak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def sample(self) -> tuple[int, list[int], int]:
        """One reading in KiB: (parent RSS, [descendant RSS, ...], PSS of all); vanished processes are 0."""
        children_pids = descendant_pids(self.pid)
        parent = rss_kib(self.pid) or 0
        children = [rss_kib(p) or 0 for p in children_pids]
        pss = sum(pss_kib(p) or 0 for p in [self.pid, *children_pids])
        return parent, children, pss

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak.add(*self.sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak.add(*self.sample())


def mib(kib: float) -> float:
    return round(kib / 1024.0, 1)


# ---------------------------------------------------------------- figures, ratios, output


def _div(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def compute_ratios(results: Mapping[str, Any]) -> dict[str, float | None]:
    """The ratios the table prints; None where a figure is missing."""
    seed, ceiling = results.get("seed_style_ips"), results.get("ceiling_ips")
    inproc, celery = results.get("inprocess_ips"), results.get("celery_ips")
    return {
        "inprocess_over_ceiling": _div(inproc, ceiling),
        "celery_over_ceiling": _div(celery, ceiling),
        "inprocess_over_seed_style": _div(inproc, seed),
        # How many cores of decoding it takes to keep the model busy at its ceiling.
        "decode_cores_to_feed_ceiling": _div(ceiling, results.get("decode_ips_per_core")),
    }


def summary_ips(summary: Mapping[str, Any]) -> float | None:
    """Images per second from a job summary: rows committed over the job's started_at..finished_at."""
    elapsed = summary.get("elapsed_s")
    done = (summary.get("counts") or {}).get("done")
    return round(done / elapsed, 3) if elapsed and done is not None else None


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}{unit}" if value >= 10 else f"{value:.2f}{unit}"


def _detail(results: Mapping[str, Any], row: str) -> dict[str, Any]:
    return (results.get("details") or {}).get(row) or {}


def _note(d: Mapping[str, Any], *parts: tuple[str, str]) -> str:
    if "error" in d:
        return f"[red]failed: {d['error']}[/red]"
    if d.get("skipped"):
        return "skipped"
    return ", ".join(template.format(**d) for key, template in parts if d.get(key) is not None)


# What the table says beside each scan's images/s.
SCAN_NOTES = (
    ("elapsed_s", "job {elapsed_s:.1f} s"),
    ("wall_s", "subprocess wall {wall_s:.1f} s"),
    ("runs_ips", "best of {runs_ips}"),
    ("batch_size", "batch {batch_size}"),
)


def build_tables(results: Mapping[str, Any]) -> list[Table]:
    """The throughput table, the memory table and the ratios, from a results dict (as written to JSON)."""
    s, b = results.get("input_size"), results.get("batch_size")
    speed = Table(title=f"aiscan throughput at {s}x{s} px (images/s)")
    speed.add_column("row")
    speed.add_column("images/s", justify="right")
    speed.add_column("how")
    seed, ceil, dec = (dict(_detail(results, k)) for k in ("seed_style", "ceiling", "decode"))
    if isinstance(ceil.get("per_batch_size"), dict):
        ceil["per_batch_size"] = ", ".join(f"{k}: {v:.1f}" for k, v in ceil["per_batch_size"].items())
    inp, cel = _detail(results, "inprocess"), _detail(results, "celery")
    speed.add_row(
        "seed style (PIL + predict per image)",
        _fmt(results.get("seed_style_ips")),
        _note(seed, ("images", "{images} images"), ("seconds", "{seconds:.1f} s, batch 1")),
    )
    speed.add_row(
        "model ceiling (Runner, decoded uint8)",
        _fmt(results.get("ceiling_ips")),
        _note(
            ceil,
            ("batch_size", "best batch {batch_size}"),
            ("per_batch_size", "(batch: images/s) {per_batch_size}"),
        ),
    )
    speed.add_row(
        "decode (decode_image, 1 thread)",
        _fmt(results.get("decode_ips_per_core")),
        _note(dec, ("images", "{images} images per core"), ("seconds", "{seconds:.1f} s")),
    )
    speed.add_row(
        "aiscan in-process (scan --json)", _fmt(results.get("inprocess_ips")), _note(inp, *SCAN_NOTES)
    )
    speed.add_row(
        "aiscan on Celery (1 worker, scan --wait)", _fmt(results.get("celery_ips")), _note(cel, *SCAN_NOTES)
    )

    memory = Table(title="Celery worker peak RSS (MiB, sampled every 0.1 s)")
    memory.add_column("job")
    memory.add_column("pool child", justify="right")
    memory.add_column("how")
    for key, row in (("rss_small_mb", "rss_small"), ("rss_large_mb", "rss_large")):
        d = _detail(results, row)
        images = d.get("images", (results.get("archive") or {}).get(row, "?"))
        memory.add_row(
            f"{images} images",
            _fmt(results.get(key)),
            _note(
                d,
                ("input_size", "{input_size} px"),
                ("baseline_child_mb", "child before job {baseline_child_mb} MiB"),
                ("peak_parent_mb", "parent {peak_parent_mb} MiB"),
                ("peak_total_mb", "sum {peak_total_mb} MiB"),
                ("peak_total_pss_mb", "PSS sum {peak_total_pss_mb} MiB"),
                ("samples", "{samples} samples"),
            ),
        )

    ratios = Table(title="ratios")
    ratios.add_column("ratio")
    ratios.add_column("value", justify="right")
    for name, value in (results.get("ratios") or {}).items():
        ratios.add_row(name.replace("_", " "), "-" if value is None else f"{value:.3f}")
    if b is not None:
        ratios.caption = f"batch size {b} (the ceiling's best) for both scans"
    return [speed, memory, ratios]


def print_results(results: Mapping[str, Any], console: Console) -> None:
    for table in build_tables(results):
        console.print(table)


def write_json(results: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, sort_keys=False, default=str) + "\n")


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory and GPUs (``nvidia-smi -L``) of this machine."""
    cpu = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024**2, 1)
    gpu = None
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
            lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
            gpu = lines or None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "memory_gib": mem_gib, "gpu": gpu}


def assemble(figures: Mapping[str, float | None], details: Mapping[str, Any], **meta: Any) -> dict[str, Any]:
    """The JSON document: the seven figures, ratios, machine and run facts, per-row details."""
    results: dict[str, Any] = {key: figures.get(key) for key in RESULT_KEYS}
    results["ratios"] = compute_ratios(results)
    results.update(meta)
    results["details"] = dict(details)
    return results


# ---------------------------------------------------------------- the model and the in-memory rows


def build_bench_artifact(directory: Path, input_size: int, name: str = "bench", seed: int = 0) -> Any:
    """The real detector (InceptionV3, random weights: nothing downloaded) saved as an aiscan artifact."""
    import keras

    from aiscan.model.artifact import save_artifact
    from aiscan.model.detector import build_detector
    from aiscan.model.metadata import ArtifactMeta

    keras.utils.set_random_seed(seed)
    model = build_detector(input_size=input_size, base_weights=None)
    meta = ArtifactMeta(name=name, input_size=input_size, source="bench: build_detector, random weights")
    return save_artifact(model, directory, meta)


def seed_style_predict(model: Any, path: Path, size: int) -> float:
    """What the original InceptionV3 Streamlit app did for one uploaded image."""
    from PIL import Image

    im = Image.open(path)
    im = im.convert("RGB")
    im = im.resize((size, size))
    x = np.asarray(im, dtype=np.float64) / 255.0
    x = np.expand_dims(x, axis=0)
    # The app's model took 0..1 floats; this graph takes 0..255 and scales inside (Preprocess), so
    # the /255 is undone here: same graph and FLOPs, and the float64 array plus its cast to the
    # graph's uint8 input stay in the seed style's cost. rint because that cast truncates.
    # verbose=0: the app's per-call progress bar would only add console noise to the timing.
    return float(np.asarray(model.predict(np.rint(x * 255.0), verbose=0)).reshape(-1)[0])


def measure_seed_style(model: Any, files: Sequence[Path], size: int) -> dict[str, Any]:
    seed_style_predict(model, files[0], size)  # traces predict once, as any long-running app has
    start = time.perf_counter()
    for path in files:
        seed_style_predict(model, path, size)
    seconds = time.perf_counter() - start
    return {"ips": round(len(files) / seconds, 3), "images": len(files), "seconds": round(seconds, 3)}


def measure_decode(datas: Sequence[bytes], size: int) -> tuple[dict[str, Any], np.ndarray]:
    """decode_image over bytes already in memory, one thread; also returns the decoded pixels."""
    from aiscan.model.decode import decode_image

    pixels = []
    start = time.perf_counter()
    for data in datas:
        pixels.append(decode_image(data, size).pixels)
    seconds = time.perf_counter() - start
    row = {"ips": round(len(datas) / seconds, 3), "images": len(datas), "seconds": round(seconds, 3)}
    return row, np.stack(pixels)


def measure_ceiling(
    model: Any,
    pixels: np.ndarray,
    size: int,
    batch_sizes: Sequence[int],
    min_seconds: float = 2.0,
    repeats: int = 1,
) -> dict[str, Any]:
    """Runner.predict on decoded uint8 tensors per batch size, full batches only, after a warm-up."""
    from aiscan.model.runner import Runner

    per: dict[int, float] = {}
    for bs in batch_sizes:
        runner = Runner(model, size, bs)
        runner.warm_up()
        # Whole batches only, cycling through the images: a padded tail would charge the ceiling for
        # images it never had to score.
        n = max(bs, len(pixels) // bs * bs)
        batch = pixels[np.arange(n) % len(pixels)]
        # The best of `repeats` passes (each at least min_seconds long): the machine's noise only
        # ever slows a pass down, and the scans below are also taken as their best run.
        best_pass = 0.0
        for _ in range(repeats):
            done, start = 0, time.perf_counter()
            while done == 0 or time.perf_counter() - start < min_seconds:
                runner.predict(batch)
                done += n
            best_pass = max(best_pass, done / (time.perf_counter() - start))
        per[bs] = round(best_pass, 3)
        progress(f"  ceiling at batch {bs}: {per[bs]:.2f} images/s ({done} images)")
    best = max(per, key=lambda bs: per[bs])
    return {"ips": per[best], "batch_size": best, "per_batch_size": per, "images": len(pixels)}


# ---------------------------------------------------------------- aiscan subprocesses


def aiscan_env(base: Mapping[str, str], **settings: str) -> dict[str, str]:
    """``base`` without any AISCAN_* variable of the caller, plus ``settings``; quiet TensorFlow."""
    env = {k: v for k, v in base.items() if not k.startswith("AISCAN_")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.update(settings)
    return env


def run_aiscan(args: Sequence[str], env: Mapping[str, str], timeout: float = JOB_TIMEOUT_S) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "aiscan.jobs", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"aiscan {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def register_copy(
    env: Mapping[str, str], name: str, artifact_dir: Path, *, make_default: bool = False
) -> str:
    """Register the artifact's exact files (same sha256) under ``name`` with aiscan's own code path."""
    from aiscan.jobs.artifacts import register_artifact
    from aiscan.jobs.settings import Settings
    from aiscan.jobs.store.db import open_database
    from aiscan.jobs.store.queries import set_default_model
    from aiscan.model.artifact import load_artifact
    from aiscan.model.metadata import META_FILE, MODEL_FILE

    def build(directory: Path) -> Any:
        directory.mkdir(parents=True, exist_ok=True)
        for f in (MODEL_FILE, META_FILE):
            shutil.copy2(artifact_dir / f, directory / f)
        return load_artifact(directory)

    settings = Settings.from_env(env)
    row = register_artifact(settings, name, build)
    if make_default:
        with open_database(settings.database_url).session() as s:
            set_default_model(s, row.ref)
    return row.ref


def scan_row(summary: Mapping[str, Any], wall_s: float, batch_size: int) -> dict[str, Any]:
    """A scan's row: images/s from the job's own elapsed time, the subprocess's wall time beside it."""
    if summary.get("status") != "done":
        raise RuntimeError(f"job ended {summary.get('status')}: {summary.get('error')}")
    counts = summary.get("counts") or {}
    if counts.get("errors"):
        progress(f"  warning: {counts['errors']} error rows: {summary.get('error_kinds')}")
    return {
        "ips": summary_ips(summary),
        "images": counts.get("done"),
        "errors": counts.get("errors"),
        "elapsed_s": summary.get("elapsed_s"),
        "wall_s": round(wall_s, 3),
        "wall_ips": _div(counts.get("done"), wall_s),
        "batch_size": batch_size,
        "job_id": summary.get("job_id"),
    }


def best_of(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of repeated scans, with every run's figure kept beside it."""
    best = max(runs, key=lambda r: r["ips"] or 0.0)
    return {**best, "runs_ips": [r["ips"] for r in runs]}


def measure_inprocess(
    archive_dir: Path,
    artifact_dir: Path,
    home: Path,
    batch_size: int,
    base_env: Mapping[str, str],
    repeats: int = 1,
) -> dict[str, Any]:
    env = aiscan_env(base_env, AISCAN_HOME=str(home), AISCAN_BATCH_SIZE=str(batch_size))
    register_copy(env, "bench", artifact_dir)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = run_aiscan(["scan", str(archive_dir), "--json"], env)
        # The job's time runs from plan_job's started_at to finish_job's finished_at. Process start-up,
        # imports and loading and tracing the model come before it (the scan warms the model up
        # before planning, as a worker does at start); the wall time includes them.
        runs.append(scan_row(json.loads(out), time.perf_counter() - start, batch_size))
    return best_of(runs)


# ---------------------------------------------------------------- services and Celery workers


def _redis_client(db: int = 0) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=6379, db=db, socket_connect_timeout=2)


def _redis_up() -> bool:
    import redis

    try:
        return bool(_redis_client().ping())
    except redis.ConnectionError:
        return False


def _pg_up() -> bool:
    import psycopg

    try:
        psycopg.connect(PG_ADMIN, connect_timeout=3).close()
        return True
    except psycopg.OperationalError:
        return False


def _wait_for(check: Callable[[], bool], what: str, tries: int = 30, pause: float = 1.0) -> None:
    for _ in range(tries):
        if check():
            return
        time.sleep(pause)
    raise RuntimeError(f"{what} is down and could not be started")


class Services:
    """Redis (a free DB number of its own) and PostgreSQL (a database of its own); undone on exit."""

    def __init__(self) -> None:
        self.started_redis = self.started_pg = False
        self.redis_db: int | None = None
        self.pg_db: str | None = None

    def __enter__(self) -> Services:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        if not _redis_up():
            progress("Redis is down; starting it")
            subprocess.run(REDIS_START, shell=True, check=False, capture_output=True)
            self.started_redis = True
            _wait_for(_redis_up, "Redis on 127.0.0.1:6379", pause=0.5)
        if not _pg_up():
            progress("PostgreSQL is down; starting it")
            subprocess.run(PG_START, shell=True, check=False, capture_output=True)
            self.started_pg = True
            _wait_for(_pg_up, "PostgreSQL on 127.0.0.1:5432")
        for _ in range(30):
            # A database number of this run's own, so parallel test runs do not share queues.
            db = int.from_bytes(os.urandom(1), "big") % 15 + 1
            if _redis_client(db).dbsize() == 0:
                self.redis_db = db
                break
        else:
            raise RuntimeError("no free Redis database number")
        import psycopg

        name = f"aiscan_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        self.pg_db = name

    @property
    def env(self) -> dict[str, str]:
        return {
            "AISCAN_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.pg_db}",
            "AISCAN_BROKER_URL": f"redis://127.0.0.1:6379/{self.redis_db}",
        }

    def __exit__(self, *exc: object) -> None:
        if self.redis_db is not None:
            with contextlib.suppress(Exception):
                _redis_client(self.redis_db).flushdb()
        if self.pg_db is not None:
            from aiscan.jobs.store.db import open_database

            open_database.cache_clear()  # the engines go with their pools; DROP ... FORCE does the rest
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')
        if self.started_redis:
            with contextlib.suppress(Exception):
                _redis_client().shutdown(nosave=True)
        if self.started_pg:
            subprocess.run(PG_STOP, shell=True, check=False, capture_output=True)


class Worker:
    """One `python -m aiscan.jobs worker --concurrency 1` in its own session (parent + one pool child)."""

    def __init__(self, name: str, env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "wb") as log:
            # `jobs worker` execs celery in place, so this pid is the worker's parent process.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aiscan.jobs", "worker", "--name", f"{name}@%h", "--concurrency", "1"],
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = WORKER_READY_S) -> None:
        """Until celery says ready AND the pool child has warmed up the default model."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if " ready." in text and ("warmed up model" in text or "no warm-up" in text):
                if "no warm-up" in text:
                    progress(f"  warning: worker {self.name} did not warm up; its first chunk pays for it")
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"worker {self.name} did not get ready:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass


@contextlib.contextmanager
def running_worker(name: str, env: Mapping[str, str], log_dir: Path) -> Iterator[Worker]:
    worker = Worker(name, env, log_dir / f"{name}.log")
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


def measure_celery(
    archive_dir: Path, env: Mapping[str, str], log_dir: Path, batch_size: int, repeats: int = 1
) -> dict[str, Any]:
    runs = []
    with running_worker("bench-celery", env, log_dir):
        for _ in range(repeats):
            start = time.perf_counter()
            out = run_aiscan(["scan", str(archive_dir), "--wait", "--json"], env)
            runs.append(scan_row(json.loads(out), time.perf_counter() - start, batch_size))
    # The worker warmed the model up before the job was sent; the job's time holds the broker round
    # trips between plan, chunks and finish. The wall time adds process start-up and --wait's polling.
    return best_of(runs)


def measure_rss(
    archive_dir: Path, n_images: int, env: Mapping[str, str], log_dir: Path, name: str, input_size: int
) -> dict[str, Any]:
    """Peak RSS of a fresh worker's pool child (and parent, and their sum) while it runs one job."""
    with running_worker(name, env, log_dir) as worker:
        sampler = RssSampler(worker.pid)
        parent, children, _ = sampler.sample()
        start = time.perf_counter()
        with sampler:
            out = run_aiscan(["scan", str(archive_dir), "--wait", "--json"], env)
        wall = time.perf_counter() - start
    summary = json.loads(out)
    if summary.get("status") != "done":
        raise RuntimeError(f"job ended {summary.get('status')}: {summary.get('error')}")
    peak = sampler.peak
    return {
        "mb": mib(peak.child_kib),
        "images": n_images,
        "input_size": input_size,
        "peak_pool_child_mb": mib(peak.child_kib),
        "peak_parent_mb": mib(peak.parent_kib),
        "peak_total_mb": mib(peak.total_kib),
        "peak_total_pss_mb": mib(peak.pss_total_kib),
        "baseline_child_mb": mib(max(children, default=0)),
        "baseline_parent_mb": mib(parent),
        "samples": peak.samples,
        "ips": summary_ips(summary),
        "wall_s": round(wall, 3),
        "images_done": (summary.get("counts") or {}).get("done"),
    }


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="32 JPEGs + 8 PNGs instead of 256 + 64 (a smoke run)")
    p.add_argument("--out", type=Path, default=Path("bench-results.json"), help="JSON output file")
    p.add_argument("--input-size", type=int, default=299, help="model input size (InceptionV3's native 299)")
    p.add_argument("--batch-sizes", default="8,16,32,64", help="candidates for the ceiling; the best is used")
    p.add_argument("--seed-images", type=int, default=32, help="images timed in the seed-style row")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of the ceiling and of each scan; the best of each is reported",
    )
    p.add_argument(
        "--rss-input-size",
        type=int,
        default=75,
        help="input size of the RSS jobs' model (0: same as --input-size); small keeps them quick",
    )
    p.add_argument("--rss-images", default="300,3000", help="images in the small and the large RSS job")
    p.add_argument(
        "--skip", action="append", default=[], choices=SKIPPABLE, help="leave a row out (repeatable)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the archive and the model's random weights")
    return p.parse_args(argv)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


class _Rows:
    """Runs rows, keeping going after a failure so one broken service does not cost the whole run."""

    def __init__(self, skip: Sequence[str]) -> None:
        self.skip = set(skip)
        self.figures: dict[str, float | None] = {}
        self.details: dict[str, Any] = {}
        self.failed = False

    def run(self, key: str, row: str, group: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        if group in self.skip:
            self.details[row] = {"skipped": True}
            return None
        progress(f"{row}: measuring")
        try:
            d = fn()
        except Exception as exc:
            self.failed = True
            self.details[row] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            progress(f"{row}: FAILED: {exc}")
            return None
        self.figures[key] = d.pop("mb") if key.endswith("_mb") else d["ips"]
        self.details[row] = d
        unit = "MiB" if key.endswith("_mb") else "images/s"
        progress(f"{row}: {self.figures[key]} {unit}")
        return d


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    size = args.input_size
    rss_size = args.rss_input_size or size
    n_cam, n_gen = (32, 8) if args.quick else (256, 64)
    rss_small, rss_large = _ints(args.rss_images)
    rows = _Rows(args.skip)
    batch_size = _ints(args.batch_sizes)[0]
    tmp = Path(tempfile.mkdtemp(prefix="aiscan-bench-"))
    base_env = dict(os.environ)
    try:
        progress(
            f"writing the archive: {n_cam} camera-like JPEGs ~1024x768, {n_gen} generator-like PNGs 512x512"
        )
        archive = make_archive(tmp / "archive", n_cam, n_gen, seed=args.seed)
        datas = [p.read_bytes() for p in archive.files]

        progress(f"building the detector at {size} px and saving it as an artifact")
        artifact = build_bench_artifact(tmp / "artifact", size, seed=args.seed)
        model = artifact.load_model()

        rows.run(
            "seed_style_ips",
            "seed_style",
            "seed",
            lambda: measure_seed_style(model, archive.subset(args.seed_images), size),
        )
        decoded: list[np.ndarray] = []

        def decode() -> dict[str, Any]:
            row, pixels = measure_decode(datas, size)
            decoded.append(pixels)
            return row

        rows.run("decode_ips_per_core", "decode", "decode", decode)
        ceiling = rows.run(
            "ceiling_ips",
            "ceiling",
            "ceiling",
            lambda: measure_ceiling(model, decoded[0], size, _ints(args.batch_sizes), repeats=args.repeats),
        )
        decoded.clear()
        datas.clear()  # the archive bytes are not needed again
        if ceiling:
            batch_size = ceiling["batch_size"]

        rows.run(
            "inprocess_ips",
            "inprocess",
            "inprocess",
            lambda: measure_inprocess(
                archive.root,
                artifact.directory,
                tmp / "home-inprocess",
                batch_size,
                base_env,
                repeats=args.repeats,
            ),
        )

        if not {"celery", "rss"} <= rows.skip:
            with Services() as services:
                env = aiscan_env(
                    base_env,
                    AISCAN_HOME=str(tmp / "home-celery"),
                    AISCAN_BATCH_SIZE=str(batch_size),
                    **services.env,
                )
                progress(f"Celery: redis DB {services.redis_db}, PostgreSQL database {services.pg_db}")
                run_aiscan(["db", "upgrade"], env, timeout=300)
                # The first model registered is the default, which the worker's warm-up loads.
                register_copy(env, "bench", artifact.directory)
                rows.run(
                    "celery_ips",
                    "celery",
                    "celery",
                    lambda: measure_celery(archive.root, env, tmp, batch_size, args.repeats),
                )
                if "rss" not in rows.skip and rss_size != size:
                    progress(f"building the RSS jobs' detector at {rss_size} px")
                    rss_artifact = build_bench_artifact(
                        tmp / "artifact-rss", rss_size, "bench-rss", args.seed
                    )
                    register_copy(env, "bench-rss", rss_artifact.directory, make_default=True)
                for key, row, n in (
                    ("rss_small_mb", "rss_small", rss_small),
                    ("rss_large_mb", "rss_large", rss_large),
                ):
                    # A fresh worker per job, so the two peaks are separate.
                    rows.run(
                        key,
                        row,
                        "rss",
                        lambda row=row, n=n: measure_rss(
                            link_archive(archive.files, tmp / row, n),
                            n,
                            env,
                            tmp,
                            f"bench-{row.replace('_', '-')}",
                            rss_size,
                        ),
                    )
        else:
            for row in ("celery", "rss_small", "rss_large"):
                rows.details[row] = {"skipped": True}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    import keras

    results = assemble(
        rows.figures,
        rows.details,
        machine=machine_info(),
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        input_size=size,
        batch_size=batch_size,
        archive={
            "camera_jpeg": n_cam,
            "generator_png": n_gen,
            "total": n_cam + n_gen,
            "rss_small": rss_small,
            "rss_large": rss_large,
            "rss_input_size": rss_size,
            "seed_style_subset": min(args.seed_images, n_cam + n_gen),
            "quick": args.quick,
        },
        keras_backend=keras.backend.backend(),
    )
    print_results(results, Console())
    write_json(results, args.out)
    progress(f"wrote {args.out}")
    return 1 if rows.failed else 0


if __name__ == "__main__":
    sys.exit(main())
