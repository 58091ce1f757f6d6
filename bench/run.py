"""aiscan's benchmark: seed-style loop, model ceiling, decode, scans in resize and tiles modes, peak RSS.

Run ``python -m bench.run [--quick] [--out bench-results.json]`` from the repository root (or ``make
bench``). It measures and reports; it asserts nothing about timings. docs/PERFORMANCE.md explains each row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from aiscan.model.metadata import PreprocessSpec
from bench.archive import link_archive, make_archive, make_large_jpegs, provenance_sets
from bench.detector import untrained_detector, with_preprocess
from bench.measure import (
    keras_runners,
    measure_ceiling,
    measure_celery,
    measure_decode,
    measure_inprocess,
    measure_large_rss,
    measure_openvino_ceiling,
    measure_provenance,
    measure_rss,
    measure_seed_style,
    openvino_runners,
    optimize_int8,
    register_copy,
)
from bench.processes import aiscan_env, run_aiscan
from bench.report import assemble, machine_info, print_results, progress, write_json
from bench.services import running_services
from bench.web_latency import measure_web_latency

SKIPPABLE = ("seed", "inprocess", "tiles", "web", "celery", "rss", "large", "openvino", "int8")
LARGE_SOURCES = 4  # distinct large JPEGs; the large-image jobs cycle through them
MODEL_SOURCE = "bench: build_detector, random weights"


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
        "--large-images",
        type=int,
        default=48,
        help="4000x3000 JPEGs in the tiles-mode memory job (one chunk); a job of one per core beside it",
    )
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

    def run(
        self,
        key: str,
        row: str,
        group: str,
        fn: Callable[[], dict[str, Any]],
        also: Mapping[str, str] | None = None,
        figure: str | None = None,
    ) -> dict[str, Any] | None:
        """Measure one row: its figure (``figure``'s field, else ips or mb) goes under ``key``; ``also``
        maps more figure keys to its fields."""
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
        if figure is not None:
            self.figures[key] = d[figure]
        else:
            self.figures[key] = d.pop("mb") if key.endswith("_mb") else d["ips"]
        for extra, field in (also or {}).items():
            self.figures[extra] = d.get(field)
        self.details[row] = d
        unit = "MiB" if key.endswith("_mb") else "ms" if key.endswith("_ms") else "images/s"
        more = "".join(f", {extra} {self.figures[extra]}" for extra in also or {})
        progress(f"{row}: {self.figures[key]} {unit}{more}")
        return d


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    size = args.input_size
    rss_size = args.rss_input_size or size
    n_cam, n_gen = (32, 8) if args.quick else (256, 64)
    rss_small, rss_large = _ints(args.rss_images)
    rows = _Rows(args.skip)
    batch_size = ov_batch_size = _ints(args.batch_sizes)[0]
    tmp = Path(tempfile.mkdtemp(prefix="aiscan-bench-"))
    base_env = dict(os.environ)
    try:
        progress(f"writing the archive: {n_cam} camera-like images ~1024x768, {n_gen} generator-like 512x512")
        archive = make_archive(tmp / "archive", n_cam, n_gen, seed=args.seed)
        datas = [p.read_bytes() for p in archive.files]

        progress(f"building the detector at {size} px and saving it as an artifact, resize and tiles copies")
        artifact = untrained_detector(
            tmp / "artifact", size, name="bench", seed=args.seed, source=MODEL_SOURCE
        )
        tiles_artifact = with_preprocess(artifact, tmp / "artifact-tiles", PreprocessSpec(mode="tiles"))
        model = artifact.load_model()

        rows.run(
            "seed_style_ips",
            "seed_style",
            "seed",
            lambda: measure_seed_style(model, archive.subset(args.seed_images), size),
        )
        decoded: list[np.ndarray] = []

        def decode() -> dict[str, Any]:
            row, pixels = measure_decode(datas, size, artifact.meta.preprocess, keep=True)
            assert pixels is not None
            decoded.append(pixels)
            return row

        rows.run("decode_ips_per_core", "decode", "decode", decode)
        rows.run(
            "tiles_decode_ips_per_core",
            "tiles_decode",
            "decode",
            lambda: measure_decode(datas, size, tiles_artifact.meta.preprocess)[0],
            also={"tiles_decode_tps_per_core": "tps"},
        )
        rows.run(
            "provenance_ips_per_core",
            "provenance",
            "decode",
            lambda: measure_provenance(provenance_sets(archive, tmp / "pki"), repeats=args.repeats),
            also={
                "provenance_ms_per_image": "plain_ms",
                "provenance_signed_ms_per_image": "signed_ms",
                "provenance_metadata_ms_per_image": "metadata_ms",
            },
        )
        ceiling = rows.run(
            "ceiling_ips",
            "ceiling",
            "ceiling",
            lambda: measure_ceiling(
                keras_runners(model, size), decoded[0], _ints(args.batch_sizes), repeats=args.repeats
            ),
        )
        ov_ceiling = rows.run(
            "openvino_ceiling_ips",
            "openvino_ceiling",
            "openvino",
            lambda: measure_openvino_ceiling(
                artifact.directory, model, decoded[0], _ints(args.batch_sizes), repeats=args.repeats
            ),
            also={"openvino_max_abs_diff": "max_abs_diff"},
        )
        if ov_ceiling:
            ov_batch_size = ov_ceiling["batch_size"]
        int8: dict[str, Any] = {}

        def int8_ceiling() -> dict[str, Any]:
            made = optimize_int8(archive.root, artifact.directory, tmp / "home-int8", base_env)
            int8.update(made)
            row = measure_ceiling(
                openvino_runners(Path(made["path"])),
                decoded[0],
                _ints(args.batch_sizes),
                repeats=args.repeats,
                label="int8 ceiling",
            )
            return {**row, **made}

        rows.run("int8_ceiling_ips", "int8_ceiling", "int8", int8_ceiling)
        decoded.clear()
        datas.clear()  # the archive bytes are not needed again
        if ceiling:
            batch_size = ceiling["batch_size"]

        # The same weights and the same archive; only the artifact's preprocess, or the runtime, differs.
        # The rows named before OpenVINO measure Keras (bench.processes.aiscan_env).
        for key, row, group, art, runtime, bs in (
            ("inprocess_ips", "inprocess", "inprocess", artifact, "keras", batch_size),
            ("tiles_inprocess_ips", "tiles_inprocess", "tiles", tiles_artifact, "keras", batch_size),
            ("openvino_inprocess_ips", "openvino_inprocess", "openvino", artifact, "openvino", ov_batch_size),
        ):
            rows.run(
                key,
                row,
                group,
                partial(
                    measure_inprocess,
                    archive.root,
                    art.directory,
                    tmp / f"home-{row}",
                    bs,
                    base_env,
                    repeats=args.repeats,
                    runtime=runtime,
                ),
                also={"tiles_inprocess_tps": "tps"} if group == "tiles" else None,
            )
        if int8:
            # The optimized version, registered by `aiscan model optimize` in its own home: scan with it.
            rows.run(
                "int8_inprocess_ips",
                "int8_inprocess",
                "int8",
                partial(
                    measure_inprocess,
                    archive.root,
                    Path(int8["path"]),
                    tmp / "home-int8-scan",
                    ov_batch_size,
                    base_env,
                    repeats=args.repeats,
                    runtime="openvino",
                ),
            )

        rows.run(
            "web_check_p50_ms",
            "web",
            "web",
            lambda: measure_web_latency(
                archive.camera[0].read_bytes(), artifact.directory, tmp / "home-web", base_env
            ),
            also={"web_check_p95_ms": "p95_ms"},
            figure="p50_ms",
        )

        def large() -> dict[str, Any]:
            progress(f"writing {LARGE_SOURCES} large JPEGs (4000x3000) for the tiles memory jobs")
            files = make_large_jpegs(archive.camera[:LARGE_SOURCES], tmp / "large" / "sources")
            # One image per decode thread keeps every thread decoding at once, as in the large job: the
            # difference between the two peaks is what the extra images cost.
            few = min(args.large_images, os.cpu_count() or 1)
            return measure_large_rss(
                files, tmp / "large", (few, args.large_images), tiles_artifact.directory, batch_size, base_env
            )

        rows.run("tiles_large_rss_mb", "tiles_large", "large", large)

        if not {"celery", "rss"} <= rows.skip:
            with running_services("aiscan_bench") as services:
                env = aiscan_env(
                    base_env,
                    AISCAN_HOME=str(tmp / "home-celery"),
                    AISCAN_BATCH_SIZE=str(batch_size),
                    **services,
                )
                progress(f"Celery: broker {env['AISCAN_BROKER_URL']}, database {env['AISCAN_DATABASE_URL']}")
                run_aiscan(["db", "upgrade"], env, timeout=300)
                # The first model registered is the default, which the worker's warm-up loads.
                register_copy(env, "bench", artifact.directory)
                rows.run(
                    "celery_ips",
                    "celery",
                    "celery",
                    lambda: measure_celery(archive.root, env, tmp, batch_size, args.repeats),
                )
                # The same worker command on OpenVINO, at OpenVINO's batch size.
                ov_worker_env = {**env, "AISCAN_RUNTIME": "openvino", "AISCAN_BATCH_SIZE": str(ov_batch_size)}
                rows.run(
                    "openvino_celery_ips",
                    "openvino_celery",
                    "openvino",
                    lambda: measure_celery(archive.root, ov_worker_env, tmp, ov_batch_size, args.repeats),
                )
                if "rss" not in rows.skip and rss_size != size:
                    progress(f"building the RSS jobs' detector at {rss_size} px")
                    rss_artifact = untrained_detector(
                        tmp / "artifact-rss", rss_size, name="bench-rss", seed=args.seed, source=MODEL_SOURCE
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
            "large_images": args.large_images,
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
