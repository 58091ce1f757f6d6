"""What the bench tells a person: progress lines, the figures' ratios, tables and the JSON document."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULT_KEYS = (
    "seed_style_ips",
    "ceiling_ips",
    "decode_ips_per_core",
    "tiles_decode_ips_per_core",
    "tiles_decode_tps_per_core",
    "provenance_ips_per_core",
    "provenance_ms_per_image",
    "provenance_signed_ms_per_image",
    "provenance_metadata_ms_per_image",
    "inprocess_ips",
    "tiles_inprocess_ips",
    "tiles_inprocess_tps",
    "celery_ips",
    "openvino_ceiling_ips",
    "openvino_max_abs_diff",
    "openvino_inprocess_ips",
    "openvino_celery_ips",
    "int8_ceiling_ips",
    "int8_inprocess_ips",
    "web_check_p50_ms",
    "web_check_p95_ms",
    "rss_small_mb",
    "rss_large_mb",
    "tiles_large_rss_mb",
)


_T0 = time.monotonic()


def progress(message: str) -> None:
    """One progress line on stderr, stamped with the time since the bench started."""
    print(f"[bench {time.monotonic() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b to three places, or None when either is missing or b is zero."""
    return round(a / b, 3) if a is not None and b else None


def compute_ratios(results: Mapping[str, Any]) -> dict[str, float | None]:
    """The ratios the table prints; None where a figure is missing."""
    seed, ceiling = results.get("seed_style_ips"), results.get("ceiling_ips")
    inproc, celery = results.get("inprocess_ips"), results.get("celery_ips")
    return {
        "inprocess_over_ceiling": ratio(inproc, ceiling),
        "celery_over_ceiling": ratio(celery, ceiling),
        "inprocess_over_seed_style": ratio(inproc, seed),
        # How many cores of decoding it takes to keep the model busy at its ceiling.
        "decode_cores_to_feed_ceiling": ratio(ceiling, results.get("decode_ips_per_core")),
        # A tile costs the model what a squashed image does, so the ceiling is also its views/s.
        "tiles_inprocess_tps_over_ceiling": ratio(results.get("tiles_inprocess_tps"), ceiling),
        "tiles_over_resize_inprocess_ips": ratio(results.get("tiles_inprocess_ips"), inproc),
        "tiles_decode_cores_to_feed_ceiling": ratio(ceiling, results.get("tiles_decode_tps_per_core")),
        # What reading provenance adds to decoding an image, for an image without any and a signed one.
        "provenance_over_decode": ratio(
            results.get("decode_ips_per_core"), results.get("provenance_ips_per_core")
        ),
        "signed_provenance_over_decode": ratio(
            results.get("provenance_signed_ms_per_image"), _ms(results.get("decode_ips_per_core"))
        ),
        # OpenVINO and its int8 version against the Keras ceiling measured in the same run.
        "openvino_ceiling_over_ceiling": ratio(results.get("openvino_ceiling_ips"), ceiling),
        "openvino_inprocess_over_ceiling": ratio(results.get("openvino_inprocess_ips"), ceiling),
        "openvino_celery_over_ceiling": ratio(results.get("openvino_celery_ips"), ceiling),
        "int8_ceiling_over_ceiling": ratio(results.get("int8_ceiling_ips"), ceiling),
        "int8_inprocess_over_ceiling": ratio(results.get("int8_inprocess_ips"), ceiling),
    }


def _ms(ips: float | None) -> float | None:
    return 1000 / ips if ips else None


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
    ("views_per_image", "{views_per_image} views each"),
)


def build_tables(results: Mapping[str, Any]) -> list[Table]:
    """The throughput table, the memory table and the ratios, from a results dict (as written to JSON)."""
    s, b = results.get("input_size"), results.get("batch_size")
    speed = Table(title=f"aiscan throughput at {s}x{s} px (views/s: model inputs, tiles or squashed images)")
    speed.add_column("row")
    speed.add_column("images/s", justify="right")
    speed.add_column("views/s", justify="right")
    speed.add_column("how")
    seed, ceil = dict(_detail(results, "seed_style")), dict(_detail(results, "ceiling"))
    if isinstance(ceil.get("per_batch_size"), dict):
        ceil["per_batch_size"] = ", ".join(f"{k}: {v:.1f}" for k, v in ceil["per_batch_size"].items())
    speed.add_row(
        "seed style (PIL + predict per image)",
        _fmt(results.get("seed_style_ips")),
        "",
        _note(seed, ("images", "{images} images"), ("seconds", "{seconds:.1f} s, batch 1")),
    )
    best = ("batch_size", "best batch {batch_size}")
    ceilings: tuple[tuple[str, str, Mapping[str, Any], tuple[tuple[str, str], ...]], ...] = (
        (
            "ceiling_ips",
            "model ceiling (Runner, decoded uint8)",
            ceil,
            (best, ("per_batch_size", "(batch: images/s) {per_batch_size}")),
        ),
        (
            "openvino_ceiling_ips",
            "OpenVINO ceiling (float32 IR, async requests)",
            _detail(results, "openvino_ceiling"),
            (
                best,
                ("streams", "{streams} streams"),
                ("max_abs_diff", "max |p_real - Keras| {max_abs_diff:.1e}"),
            ),
        ),
        (
            "int8_ceiling_ips",
            "int8 ceiling (aiscan model optimize --int8)",
            _detail(results, "int8_ceiling"),
            (best, ("optimize_s", "optimize took {optimize_s:.0f} s")),
        ),
    )
    for key, label, detail, notes in ceilings:
        ips = _fmt(results.get(key))
        speed.add_row(label, ips, ips, _note(detail, *notes))
    for key, row, label in (
        ("decode_ips_per_core", "decode", "decode, resize (decode_full + squash, 1 thread)"),
        ("tiles_decode_ips_per_core", "tiles_decode", "decode, tiles (decode_full + tiles, 1 thread)"),
    ):
        d = _detail(results, row)
        speed.add_row(
            label,
            _fmt(results.get(key)),
            _fmt(d.get("tps")),
            _note(
                d, ("images", "{images} images per core"), ("views_per_image", "{views_per_image} views each")
            ),
        )
    d = _detail(results, "provenance")
    speed.add_row(
        "provenance (read_provenance, 1 thread)",
        _fmt(results.get("provenance_ips_per_core")),
        "",
        _note(
            d,
            ("plain_ms", "{plain_ms:.3f} ms an image without provenance"),
            ("signed_ms", "{signed_ms:.2f} ms a C2PA-signed image"),
            ("metadata_ms", "{metadata_ms:.3f} ms with generator text or XMP"),
        ),
    )
    for key, row, label in (
        ("inprocess_ips", "inprocess", "aiscan in-process, resize (scan --json)"),
        ("tiles_inprocess_ips", "tiles_inprocess", "aiscan in-process, tiles (scan --json)"),
        ("celery_ips", "celery", "aiscan on Celery, resize (1 worker, scan --wait)"),
        ("openvino_inprocess_ips", "openvino_inprocess", "OpenVINO: aiscan in-process, resize"),
        ("openvino_celery_ips", "openvino_celery", "OpenVINO: aiscan on Celery, resize (1 worker)"),
        ("int8_inprocess_ips", "int8_inprocess", "int8: aiscan in-process, resize"),
    ):
        d = _detail(results, row)
        speed.add_row(label, _fmt(results.get(key)), _fmt(d.get("tps")), _note(d, *SCAN_NOTES))

    d = _detail(results, "web")
    speed.add_row(
        "web check, warm (POST /api/v1/classify, ~1024x768 JPEG)",
        "",
        "",
        _note(
            d,
            ("p50_ms", "p50 {p50_ms} ms"),
            ("p95_ms", "p95 {p95_ms} ms"),
            ("requests", "{requests} requests"),
        ),
    )

    memory = Table(title="peak RSS (MiB, sampled every 0.1 s)")
    memory.add_column("job")
    memory.add_column("process")
    memory.add_column("MiB", justify="right")
    memory.add_column("how")
    for key, row in (("rss_small_mb", "rss_small"), ("rss_large_mb", "rss_large")):
        d = _detail(results, row)
        images = d.get("images", (results.get("archive") or {}).get(row, "?"))
        memory.add_row(
            f"{images} images, resize",
            "Celery pool child",
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
    d = _detail(results, "tiles_large")
    memory.add_row(
        f"{d.get('images', '?')} large JPEGs, tiles",
        "in-process scan",
        _fmt(results.get("tiles_large_rss_mb")),
        _note(
            d,
            ("image_size", "{image_size}"),
            ("input_size", "{input_size} px"),
            ("few_images_mb", "{few_images} images: {few_images_mb} MiB"),
            ("growth_mb", "growth {growth_mb} MiB"),
            ("chunk_pixels_mb", "the chunk's pixels {chunk_pixels_mb} MiB"),
            ("samples", "{samples} samples"),
        ),
    )

    ratios = Table(title="ratios")
    ratios.add_column("ratio")
    ratios.add_column("value", justify="right")
    for name, value in (results.get("ratios") or {}).items():
        ratios.add_row(name.replace("_", " "), "-" if value is None else f"{value:.3f}")
    if b is not None:
        ratios.caption = f"batch size {b} (the ceiling's best) for every scan"
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
    """The JSON document: the figures, ratios, machine and run facts, per-row details."""
    results: dict[str, Any] = {key: figures.get(key) for key in RESULT_KEYS}
    results["ratios"] = compute_ratios(results)
    results.update(meta)
    results["details"] = dict(details)
    return results
