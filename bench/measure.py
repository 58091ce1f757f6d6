"""The bench's measurements: seed style, model ceiling, decode, in-process and Celery scans, peak RSS."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.archive import link_archive
from bench.memory import RssSampler, mib
from bench.processes import aiscan_env, run_aiscan, run_aiscan_sampled, running_worker
from bench.report import progress, ratio, summary_ips

if TYPE_CHECKING:
    from aiscan.model.metadata import PreprocessSpec


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


def measure_decode(
    datas: Sequence[bytes], size: int, preprocess: PreprocessSpec, *, keep: bool = False
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Full-resolution decoding and view cutting as a scan does them, one thread; with ``keep``, also the
    first view of each image."""
    from aiscan.model.decode import decode_full
    from aiscan.model.views import make_views

    firsts, views = [], 0
    start = time.perf_counter()
    for data in datas:
        cut = make_views(decode_full(data).pixels, preprocess, size).pixels
        views += len(cut)
        if keep:
            firsts.append(cut[0])
    seconds = time.perf_counter() - start
    row = {
        "ips": round(len(datas) / seconds, 3),
        "tps": round(views / seconds, 3),
        "views_per_image": ratio(views, len(datas)),
        "mode": preprocess.mode,
        "images": len(datas),
        "seconds": round(seconds, 3),
    }
    return row, np.stack(firsts) if keep else None


def measure_provenance(sets: Mapping[str, Sequence[bytes]], repeats: int = 3) -> dict[str, Any]:
    """read_provenance on each set of image bytes, one thread, best of ``repeats``: milliseconds per image.

    ``sets`` maps a name (plain, signed, metadata) to the bytes; "plain" gives the row's images/s."""
    from aiscan.model.provenance.reader import read_provenance

    row: dict[str, Any] = {}
    for name, datas in sets.items():
        read_provenance(datas[0])  # loads c2pa's library once, as a worker does at its first image
        best = min(_timed(read_provenance, datas) for _ in range(max(1, repeats)))
        row[f"{name}_ms"] = round(best * 1000 / len(datas), 3)
        row[f"{name}_images"] = len(datas)
        if name == "plain":
            row["ips"] = round(len(datas) / best, 3)
    return row


def _timed(fn: Any, datas: Sequence[bytes]) -> float:
    start = time.perf_counter()
    for data in datas:
        fn(data)
    return time.perf_counter() - start


def measure_ceiling(
    make_runner: Callable[[int], Any],
    pixels: np.ndarray,
    batch_sizes: Sequence[int],
    min_seconds: float = 2.0,
    repeats: int = 1,
    label: str = "ceiling",
) -> dict[str, Any]:
    """``make_runner(batch_size).predict`` on decoded uint8 tensors per batch size, full batches only,
    after a warm-up; the best batch size's images/s."""
    per: dict[int, float] = {}
    for bs in batch_sizes:
        runner = make_runner(bs)
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
        progress(f"  {label} at batch {bs}: {per[bs]:.2f} images/s ({done} images)")
    best = max(per, key=lambda bs: per[bs])
    return {"ips": per[best], "batch_size": best, "per_batch_size": per, "images": len(pixels)}


def keras_runners(model: Any, size: int) -> Callable[[int], Any]:
    from aiscan.model.runner import Runner

    return lambda bs: Runner(model, size, bs)


def openvino_runners(artifact_dir: Path) -> Callable[[int], Any]:
    """Runners of the artifact on OpenVINO, through its IR cache (converted on the first call)."""
    from aiscan.model.metadata import read_meta
    from aiscan.model.openvino_runner import OpenVINORunner

    meta = read_meta(artifact_dir)
    return lambda bs: OpenVINORunner.from_directory(artifact_dir, meta, bs)


def measure_openvino_ceiling(
    artifact_dir: Path,
    keras_model: Any,
    pixels: np.ndarray,
    batch_sizes: Sequence[int],
    repeats: int = 1,
) -> dict[str, Any]:
    """OpenVINO's ceiling on the artifact, and the largest |p_real| difference from Keras on ``pixels``."""
    from aiscan.model.runner import Runner

    start = time.perf_counter()
    make = openvino_runners(artifact_dir)
    runner = make(batch_sizes[0])
    first_load_s = time.perf_counter() - start
    diff = np.abs(runner.predict(pixels) - Runner(keras_model, pixels.shape[1], 32).predict(pixels))
    row = measure_ceiling(make, pixels, batch_sizes, repeats=repeats, label="OpenVINO ceiling")
    return {
        **row,
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "streams": runner.streams,
        "convert_and_load_s": round(first_load_s, 3),
    }


def register_copy(
    env: Mapping[str, str], name: str, artifact_dir: Path, *, make_default: bool = False
) -> str:
    """Register the artifact's exact files (same sha256) under ``name`` with aiscan's own code path."""
    from aiscan.jobs.artifacts import register_artifact
    from aiscan.jobs.settings import Settings
    from aiscan.jobs.store.db import open_database
    from aiscan.jobs.store.queries import set_default_model
    from aiscan.model.artifact import load_artifact
    from aiscan.model.metadata import META_FILE, read_meta

    def build(directory: Path) -> Any:
        directory.mkdir(parents=True, exist_ok=True)
        for f in (*read_meta(artifact_dir).model_files, META_FILE):
            shutil.copy2(artifact_dir / f, directory / f)
        return load_artifact(directory)

    settings = Settings.from_env(env)
    row = register_artifact(settings, name, build)
    if make_default:
        with open_database(settings.database_url).session() as s:
            set_default_model(s, row.ref)
    return row.ref


def optimize_int8(
    calibration: Path, artifact_dir: Path, home: Path, base_env: Mapping[str, str]
) -> dict[str, Any]:
    """The artifact quantized by `aiscan model optimize --int8` (calibrated on the bench archive, which
    has no labels), registered in ``home``: its directory and what the command took."""
    env = aiscan_env(base_env, AISCAN_HOME=str(home), AISCAN_RUNTIME="openvino")
    register_copy(env, "bench", artifact_dir)
    start = time.perf_counter()
    args = ["model", "optimize", "bench", "--int8", "--calibration", str(calibration), "--no-auc-check"]
    run_aiscan(args, env)
    seconds = time.perf_counter() - start
    shown = json.loads(run_aiscan(["model", "show", "bench:2", "--json"], env).stdout)
    figures = shown["meta"]["optimization"]
    return {"path": shown["path"], "optimize_s": round(seconds, 3), "optimization": figures}


def _check_done(summary: Mapping[str, Any]) -> None:
    if summary.get("status") != "done":
        raise RuntimeError(f"job ended {summary.get('status')}: {summary.get('error')}")


def scan_row(summary: Mapping[str, Any], wall_s: float, batch_size: int) -> dict[str, Any]:
    """A scan's row: images/s from the job's own elapsed time, the subprocess's wall time beside it."""
    _check_done(summary)
    counts = summary.get("counts") or {}
    if counts.get("errors"):
        progress(f"  warning: {counts['errors']} error rows: {summary.get('error_kinds')}")
    return {
        "ips": summary_ips(summary),
        "images": counts.get("done"),
        "errors": counts.get("errors"),
        "elapsed_s": summary.get("elapsed_s"),
        "wall_s": round(wall_s, 3),
        "wall_ips": ratio(counts.get("done"), wall_s),
        "batch_size": batch_size,
        "job_id": summary.get("job_id"),
    }


def best_of(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of repeated scans, with every run's figure kept beside it."""
    best = max(runs, key=lambda r: r["ips"] or 0.0)
    return {**best, "runs_ips": [r["ips"] for r in runs]}


def job_views(env: Mapping[str, str], job_id: int) -> int:
    """Views the model scored in a job: the sum of its rows' ``tiles``, from ``aiscan report``."""
    out = run_aiscan(["report", str(job_id), "--format", "jsonl"], env).stdout
    return sum(json.loads(line).get("tiles") or 0 for line in out.splitlines() if line.strip())


def measure_inprocess(
    archive_dir: Path,
    artifact_dir: Path,
    home: Path,
    batch_size: int,
    base_env: Mapping[str, str],
    repeats: int = 1,
    runtime: str = "keras",
) -> dict[str, Any]:
    """The best of ``repeats`` in-process scans in the artifact's own preprocess mode, with views/s."""
    env = aiscan_env(
        base_env, AISCAN_HOME=str(home), AISCAN_BATCH_SIZE=str(batch_size), AISCAN_RUNTIME=runtime
    )
    register_copy(env, "bench", artifact_dir)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = run_aiscan(["scan", str(archive_dir), "--json"], env).stdout
        # The job's time runs from plan_job's started_at to finish_job's finished_at. Process start-up,
        # imports and loading and tracing the model come before it (the scan warms the model up
        # before planning, as a worker does at start); the wall time includes them.
        runs.append(scan_row(json.loads(out), time.perf_counter() - start, batch_size))
    best = best_of(runs)
    # Every run scores the same views; only the time differs.
    views = job_views(env, best["job_id"])
    return {
        **best,
        "tps": ratio(views, best["elapsed_s"]),
        "views": views,
        "views_per_image": ratio(views, best["images"]),
    }


def measure_celery(
    archive_dir: Path, env: Mapping[str, str], log_dir: Path, batch_size: int, repeats: int = 1
) -> dict[str, Any]:
    runs = []
    with running_worker("bench-celery", env, log_dir):
        for _ in range(repeats):
            start = time.perf_counter()
            out = run_aiscan(["scan", str(archive_dir), "--wait", "--json"], env).stdout
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
            out = run_aiscan(["scan", str(archive_dir), "--wait", "--json"], env).stdout
        wall = time.perf_counter() - start
    summary = json.loads(out)
    _check_done(summary)
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


def measure_large_rss(
    files: Sequence[Path],
    root: Path,
    counts: tuple[int, int],
    artifact_dir: Path,
    batch_size: int,
    base_env: Mapping[str, str],
) -> dict[str, Any]:
    """Peak RSS of in-process scans of a few and of many large images (each job one chunk), and what
    the chunk's full-resolution pixels would take if they were all held at once."""
    from PIL import Image

    from aiscan.model.metadata import read_meta

    env = aiscan_env(base_env, AISCAN_HOME=str(root / "home"), AISCAN_BATCH_SIZE=str(batch_size))
    register_copy(env, "bench", artifact_dir)
    few, many = counts
    peaks, summaries = [], []
    for n in counts:
        out, peak = run_aiscan_sampled(
            ["scan", str(link_archive(files, root / f"images-{n}", n)), "--json"], env
        )
        summary = json.loads(out)
        _check_done(summary)
        peaks.append(peak)
        summaries.append(summary)
    with Image.open(files[0]) as im:
        width, height = im.size
    views = job_views(env, summaries[1]["job_id"])
    return {
        "mb": mib(peaks[1].parent_kib),
        "images": many,
        "image_size": f"{width}x{height}",
        "input_size": read_meta(artifact_dir).input_size,
        "few_images": few,
        "few_images_mb": mib(peaks[0].parent_kib),
        "growth_mb": mib(peaks[1].parent_kib - peaks[0].parent_kib),
        # What the chunk's decoded images would take if they all waited for the model together.
        "chunk_pixels_mb": mib(many * width * height * 3 / 1024),
        "views_per_image": ratio(views, many),
        "pss_mb": mib(peaks[1].pss_total_kib),
        "samples": peaks[1].samples,
        "ips": summary_ips(summaries[1]),
        "batch_size": batch_size,
    }
