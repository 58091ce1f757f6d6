"""Tests of bench/'s helpers (real Redis and PostgreSQL for the services) and one quick run of the bench
in both preprocess modes; no timing is asserted."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from rich.console import Console

from bench import services
from bench.archive import Archive, link_archive, make_large_jpegs, shard_sizes
from bench.memory import RssSampler
from bench.processes import aiscan_env, run_aiscan, run_aiscan_sampled
from bench.report import (
    RESULT_KEYS,
    assemble,
    build_tables,
    compute_ratios,
    machine_info,
    print_results,
    summary_ips,
    write_json,
)

# A parent that forks a child holding 64 MiB of touched memory, then both wait to be killed.
_TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import time; b = bytes(range(256)) * (256 * 1024); print('ready', flush=True); time.sleep(60)"],
    stdout=sys.stdout)
time.sleep(60)
"""

FIGURES = {
    "seed_style_ips": 2.0,
    "ceiling_ips": 20.0,
    "decode_ips_per_core": 40.0,
    "tiles_decode_ips_per_core": 25.0,
    "tiles_decode_tps_per_core": 250.0,
    "provenance_ips_per_core": 800.0,
    "provenance_ms_per_image": 1.25,
    "provenance_signed_ms_per_image": 2.5,
    "provenance_metadata_ms_per_image": 0.5,
    "inprocess_ips": 15.0,
    "tiles_inprocess_ips": 1.5,
    "tiles_inprocess_tps": 18.0,
    "celery_ips": 12.0,
    "openvino_ceiling_ips": 40.0,
    "openvino_max_abs_diff": 2e-6,
    "openvino_inprocess_ips": 36.0,
    "openvino_celery_ips": 30.0,
    "int8_ceiling_ips": 70.0,
    "int8_inprocess_ips": 50.0,
    "web_check_p50_ms": 180.0,
    "web_check_p95_ms": 240.0,
    "rss_small_mb": 700.0,
    "rss_large_mb": 710.0,
    "tiles_large_rss_mb": 900.0,
}


def test_the_sampler_sees_the_pool_child_grow() -> None:
    # A session of its own, so the parent and its child end together with one killpg.
    proc = subprocess.Popen(
        [sys.executable, "-c", _TREE], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with RssSampler(proc.pid, interval=0.02) as sampler:
            time.sleep(0.1)
        peak = sampler.peak
        assert peak.samples >= 2
        assert peak.child_kib >= 60 * 1024  # the child, not the parent, holds the 64 MiB
        assert 0 < peak.parent_kib < peak.child_kib
        assert peak.total_kib >= peak.parent_kib + peak.child_kib - 1024
        assert peak.pss_total_kib > 0
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_vanished_process_reads_as_zero() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert RssSampler(proc.pid).sample() == (0, [], 0)


def test_ratios_and_missing_figures() -> None:
    ratios = compute_ratios(FIGURES)
    assert ratios == {
        "inprocess_over_ceiling": 0.75,
        "celery_over_ceiling": 0.6,
        "inprocess_over_seed_style": 7.5,
        "decode_cores_to_feed_ceiling": 0.5,
        "tiles_inprocess_tps_over_ceiling": 0.9,
        "tiles_over_resize_inprocess_ips": 0.1,
        "tiles_decode_cores_to_feed_ceiling": 0.08,
        "provenance_over_decode": 0.05,
        "signed_provenance_over_decode": 0.1,
        "openvino_ceiling_over_ceiling": 2.0,
        "openvino_inprocess_over_ceiling": 1.8,
        "openvino_celery_over_ceiling": 1.5,
        "int8_ceiling_over_ceiling": 3.5,
        "int8_inprocess_over_ceiling": 2.5,
    }
    assert compute_ratios({**FIGURES, "ceiling_ips": None})["celery_over_ceiling"] is None
    assert compute_ratios({**FIGURES, "seed_style_ips": 0.0})["inprocess_over_seed_style"] is None


def test_images_per_second_come_from_the_jobs_elapsed_time() -> None:
    assert summary_ips({"elapsed_s": 4.0, "counts": {"done": 10}}) == 2.5
    assert summary_ips({"elapsed_s": None, "counts": {"done": 10}}) is None


def test_results_print_as_tables_and_write_as_json(tmp_path: Path) -> None:
    details = {
        "seed_style": {"ips": 2.0, "images": 32, "seconds": 16.0},
        "ceiling": {"ips": 20.0, "batch_size": 32, "per_batch_size": {8: 15.0, 32: 20.0}},
        "decode": {"ips": 40.0, "tps": 40.0, "images": 320, "views_per_image": 1.0},
        "tiles_decode": {"ips": 25.0, "tps": 250.0, "images": 320, "views_per_image": 10.0},
        "provenance": {"ips": 800.0, "plain_ms": 1.25, "signed_ms": 2.5, "metadata_ms": 0.5},
        "inprocess": {"ips": 15.0, "elapsed_s": 21.3, "wall_s": 25.0, "batch_size": 32},
        "tiles_inprocess": {"ips": 1.5, "tps": 18.0, "elapsed_s": 213.3, "views_per_image": 12.0},
        "tiles_large": {"images": 24, "image_size": "4000x3000", "few_images": 2, "growth_mb": 12.5},
        "celery": {"error": "RuntimeError: worker did not get ready"},
        "openvino_ceiling": {"ips": 40.0, "batch_size": 16, "streams": 2, "max_abs_diff": 2e-6},
        "int8_ceiling": {"ips": 70.0, "batch_size": 16, "optimize_s": 95.0},
        "openvino_inprocess": {"ips": 36.0, "elapsed_s": 8.9, "batch_size": 16},
        "web": {"p50_ms": 180.0, "p95_ms": 240.0, "requests": 50},
        "rss_small": {"images": 300, "peak_pool_child_mb": 700.0, "samples": 40},
        "rss_large": {"skipped": True},
    }
    results = assemble(
        FIGURES,
        details,
        machine=machine_info(),
        date="2025-01-01T00:00:00+00:00",
        input_size=299,
        batch_size=32,
        archive={"total": 320},
        keras_backend="tensorflow",
    )
    out = tmp_path / "bench-results.json"
    write_json(results, out)
    data = json.loads(out.read_text())
    for key in (
        *RESULT_KEYS,
        "ratios",
        "machine",
        "date",
        "input_size",
        "batch_size",
        "archive",
        "keras_backend",
        "details",
    ):
        assert key in data
    assert data["machine"]["cores"] >= 1
    assert len(build_tables(data)) == 3

    buf = io.StringIO()
    print_results(data, Console(file=buf, width=240))
    text = buf.getvalue()
    assert "seed style" in text and "model ceiling" in text and "best batch 32" in text
    assert "failed: RuntimeError" in text and "skipped" in text and "0.750" in text
    assert "aiscan in-process, tiles" in text and "12.0 views each" in text and "250.0" in text
    assert "24 large JPEGs, tiles" in text and "2 images" in text and "growth 12.5 MiB" in text
    assert "OpenVINO ceiling" in text and "2 streams" in text and "max |p_real - Keras| 2.0e-06" in text
    assert "int8 ceiling" in text and "optimize took 95 s" in text and "OpenVINO: aiscan in-process" in text


def test_archive_helpers(tmp_path: Path) -> None:
    assert shard_sizes(40, 16) == [16, 16, 8] and shard_sizes(0) == []
    cams = [tmp_path / f"c{i}.jpg" for i in range(8)]
    gens = [tmp_path / f"g{i}.png" for i in range(2)]
    for p in cams + gens:
        p.write_bytes(p.name.encode())
    archive = Archive(tmp_path, cams, gens)
    assert archive.subset(5) == cams[:4] + gens[:1]  # the archive's JPEG/PNG mix
    assert archive.subset(100) == cams + gens

    root = link_archive(archive.files, tmp_path / "linked", 25, per_dir=10)
    linked = sorted(root.rglob("*"))
    files = [p for p in linked if p.is_file()]
    assert len(files) == 25 and len({p.parent for p in files}) == 3
    assert (root / "d002" / "img_00020.jpg").read_bytes() == b"c0.jpg"
    assert (root / "d000" / "img_00009.png").read_bytes() == b"g1.png"


def test_large_jpegs_are_camera_sized_and_mirrored_not_stretched(tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "src.png"
    # Smooth content, so JPEG's error stays well below the differences the test looks for.
    y, x = np.mgrid[0:30, 0:40]
    source = np.stack([x * 6, y * 8, (x + y) * 3], axis=-1).astype(np.uint8)
    Image.fromarray(source).save(src)
    (large,) = make_large_jpegs([src], tmp_path / "large", size=(100, 70))
    with Image.open(large) as im:
        assert (im.format, im.size) == ("JPEG", (100, 70))
        pixels = np.asarray(im, dtype=np.int16)
    assert np.abs(pixels[:30, :40] - source).mean() < 4  # the source at its own size
    assert np.abs(pixels[:30, 40:50] - source[:, 39:29:-1]).mean() < 4  # then its mirror image


def test_subprocess_env_drops_the_callers_aiscan_settings() -> None:
    env = aiscan_env({"PATH": "/bin", "AISCAN_BROKER_URL": "redis://x"}, AISCAN_HOME="/tmp/h")
    assert env["AISCAN_HOME"] == "/tmp/h" and "AISCAN_BROKER_URL" not in env and env["PATH"] == "/bin"
    # The rows named before OpenVINO measure Keras unless a row names its runtime.
    assert env["AISCAN_RUNTIME"] == "keras"
    assert aiscan_env({"AISCAN_RUNTIME": "keras"}, AISCAN_RUNTIME="openvino")["AISCAN_RUNTIME"] == "openvino"


def test_aiscan_subprocess_failures_carry_stderr(tmp_path: Path) -> None:
    env = aiscan_env(os.environ, AISCAN_HOME=str(tmp_path))
    with pytest.raises(RuntimeError, match="aiscan report 42 exited 1: error: no job 42"):
        run_aiscan(["report", "42"], env)
    proc = run_aiscan(["report", "42"], env, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: no job 42")
    with pytest.raises(RuntimeError, match="aiscan report 42 exited 1: error: no job 42"):
        run_aiscan_sampled(["report", "42"], env)


def test_a_sampled_aiscan_run_reports_its_peak_rss(tmp_path: Path) -> None:
    out, peak = run_aiscan_sampled(["--version"], aiscan_env(os.environ, AISCAN_HOME=str(tmp_path)))
    assert "aiscan" in out
    assert peak.samples >= 2 and peak.parent_kib > 10 * 1024  # a Python process with aiscan imported


def _database_exists(name: str) -> bool:
    with psycopg.connect(services.PG_ADMIN) as c:
        return c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def test_a_scratch_database_is_new_and_dropped_afterwards(postgres_server: str) -> None:
    assert services.ensure_postgres() is False  # already up: not started again
    with (
        services.scratch_database("aiscan_benchtest") as url,
        services.scratch_database("aiscan_benchtest") as other,
    ):
        name = url.rsplit("/", 1)[1]
        assert url == services.postgres_url(name) and name.startswith("aiscan_benchtest_") and url != other
        assert _database_exists(name)
        with psycopg.connect(url.replace("+psycopg", "")) as c:
            assert c.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
    assert not _database_exists(name)


def test_a_scratch_redis_database_is_empty_and_flushed_afterwards(redis_server: str) -> None:
    assert services.ensure_redis() is False
    with services.scratch_redis_db() as url:
        db = int(url.rsplit("/", 1)[1])
        assert url == services.redis_url(db) and 1 <= db <= 15
        client = services.redis_client(db)
        assert client.dbsize() == 0
        client.set("aiscan-bench-test", b"x")
    assert client.dbsize() == 0


def test_a_service_that_does_not_come_up_is_a_clear_error() -> None:
    with pytest.raises(services.ServiceDown, match="the thing is down and could not be started with: true"):
        services._ensure(lambda: False, "true", "the thing", tries=2, pause=0.01)


def test_a_quick_run_measures_the_tiles_rows(tmp_path: Path) -> None:
    from aiscan.model.views import tile_boxes
    from bench.run import main

    out = tmp_path / "bench.json"
    skip = [arg for row in ("seed", "inprocess", "celery", "rss") for arg in ("--skip", row)]
    # As many large images as decode threads in the small job, and six more in the large one.
    few = os.cpu_count() or 1
    args = ["--quick", "--input-size", "75", "--repeats", "1", "--batch-sizes", "16"]
    status = main([*args, "--large-images", str(few + 6), *skip, "--out", str(out)])
    data = json.loads(out.read_text())
    details = data["details"]
    assert status == 0, details
    new_keys = (
        "provenance_ips_per_core",
        "provenance_signed_ms_per_image",
        "provenance_metadata_ms_per_image",
        "tiles_decode_ips_per_core",
        "tiles_decode_tps_per_core",
        "tiles_inprocess_ips",
        "tiles_inprocess_tps",
        "tiles_large_rss_mb",
    )
    assert all(data[key] > 0 for key in new_keys)
    assert data["inprocess_ips"] is None and details["inprocess"] == {"skipped": True}
    # Every image of the archive, none with provenance; the signed and described sets are their own rows.
    assert details["provenance"]["plain_images"] == 40 and details["provenance"]["signed_images"] == 16

    # The tiles artifact decided the views: the scan's rows count as many per image as the bench's own
    # cut of the same archive, where the resize view is one per image.
    assert details["decode"]["views_per_image"] == 1.0
    scan = details["tiles_inprocess"]
    assert scan["images"] == 40 and scan["errors"] == 0
    assert 1 < scan["views_per_image"] == details["tiles_decode"]["views_per_image"] <= 16
    assert data["tiles_inprocess_tps"] == pytest.approx(scan["views"] / scan["elapsed_s"], rel=1e-2)
    assert data["tiles_decode_tps_per_core"] > data["tiles_decode_ips_per_core"]

    large = details["tiles_large"]
    assert large["image_size"] == "4000x3000" and (large["few_images"], large["images"]) == (few, few + 6)
    assert large["views_per_image"] == len(tile_boxes(4000, 3000, 75, 16))
    # Bounded per chunk: six more 34 MiB images cost less than their pixels held together would (the
    # allocator's noise under load is tens of MiB, so the bound is that, not a tighter fraction).
    assert large["growth_mb"] < large["chunk_pixels_mb"] * 6 / (few + 6)
