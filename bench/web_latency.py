"""Latency of a warm single-image check through the web app: POST /api/v1/classify with a ~1024x768
JPEG, from sending the upload to having its JSON, against `aiscan serve` in a process of its own."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from bench.measure import register_copy
from bench.private import free_port
from bench.processes import aiscan_argv, aiscan_env

START_S = 300.0


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between the sorted values."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def measure_web_latency(
    image: bytes,
    artifact_dir: Path,
    home: Path,
    base_env: Mapping[str, str],
    *,
    requests: int = 50,
    warm_up: int = 3,
) -> dict[str, Any]:
    """p50 and p95 milliseconds of ``requests`` checks of ``image`` after ``warm_up`` unmeasured ones."""
    env = aiscan_env(base_env, AISCAN_HOME=str(home))
    register_copy(env, "bench", artifact_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with subprocess.Popen(
        aiscan_argv(["serve", "--port", str(port)]),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            with httpx.Client(base_url=base, timeout=120) as client:
                _wait_up(client, server)
                files = {"file": ("bench.jpg", image, "image/jpeg")}
                for _ in range(warm_up):
                    client.post("/api/v1/classify", files=files).raise_for_status()
                times = []
                for _ in range(requests):
                    start = time.perf_counter()
                    response = client.post("/api/v1/classify", files=files)
                    response.raise_for_status()
                    response.json()
                    times.append((time.perf_counter() - start) * 1000)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    return {
        "p50_ms": round(_percentile(times, 50), 1),
        "p95_ms": round(_percentile(times, 95), 1),
        "mean_ms": round(statistics.fmean(times), 1),
        "requests": requests,
        "image_bytes": len(image),
    }


def _wait_up(client: httpx.Client, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            err = server.stderr.read() if server.stderr else ""
            raise RuntimeError(f"aiscan serve exited {server.returncode}: {err.strip()[-2000:]}")
        try:
            if client.get("/api/v1/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"aiscan serve did not answer in {START_S:.0f} s")
