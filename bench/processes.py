"""aiscan in child processes for the bench and the tests: the CLI (`python -m aiscan.jobs`) and workers."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from bench.memory import RssPeak, RssSampler

# Two busy cores and a cold TensorFlow import can take minutes before a worker is warm.
WORKER_READY_S = 600
JOB_TIMEOUT_S = 4 * 3600

log = logging.getLogger(__name__)


def aiscan_env(base: Mapping[str, str], **settings: str) -> dict[str, str]:
    """``base`` without any AISCAN_* variable of the caller, plus ``settings``; quiet TensorFlow.

    Scans run on Keras unless ``settings`` name another AISCAN_RUNTIME: the rows named before OpenVINO
    keep measuring what they measured."""
    env = {k: v for k, v in base.items() if not k.startswith("AISCAN_")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["AISCAN_RUNTIME"] = "keras"
    env.update(settings)
    return env


def aiscan_argv(args: Sequence[str]) -> list[str]:
    """The command line of ``aiscan ARGS`` with this interpreter: ``python -m aiscan.jobs ARGS``."""
    return [sys.executable, "-m", "aiscan.jobs", *args]


def _failure(args: Sequence[str], returncode: int, stderr: str) -> RuntimeError:
    return RuntimeError(f"aiscan {' '.join(args)} exited {returncode}: {stderr.strip()[-2000:]}")


def run_aiscan(
    args: Sequence[str], env: Mapping[str, str], *, timeout: float = JOB_TIMEOUT_S, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``python -m aiscan.jobs ARGS`` with exactly ``env``; with ``check``, a failure raises with stderr."""
    proc = subprocess.run(aiscan_argv(args), env=dict(env), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise _failure(args, proc.returncode, proc.stderr)
    return proc


def run_aiscan_sampled(
    args: Sequence[str], env: Mapping[str, str], *, timeout: float = JOB_TIMEOUT_S
) -> tuple[str, RssPeak]:
    """Like ``run_aiscan``: its stdout, and the peak RSS of the process while it ran."""
    with subprocess.Popen(
        aiscan_argv(args), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            with RssSampler(proc.pid) as sampler:
                out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    if proc.returncode != 0:
        raise _failure(args, proc.returncode, err)
    return out, sampler.peak


class Worker:
    """One `python -m aiscan.jobs worker --concurrency 1` in its own session (parent + one pool child)."""

    def __init__(self, name: str, env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "wb") as log_file:
            # `jobs worker` execs celery in place, so this pid is the worker's parent process; a session
            # of its own lets one killpg reach the parent and its pool together.
            self.proc = subprocess.Popen(
                aiscan_argv(["worker", "--name", f"{name}@%h", "--concurrency", "1"]),
                env=dict(env),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = WORKER_READY_S, *, warm_up: bool = True) -> None:
        """Until celery says ready and, with ``warm_up``, the pool child has warmed up the default model."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if " ready." in text and (not warm_up or "warmed up model" in text or "no warm-up" in text):
                if warm_up and "no warm-up" in text:
                    log.warning("worker %s did not warm up; its first chunk pays for it", self.name)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"worker {self.name} did not get ready:\n{self.log()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the parent and its pool, and wait for the parent to end."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL if it has not ended after 30 s."""
        if self.proc.poll() is not None:
            return
        try:
            self.kill(signal.SIGTERM)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)


@contextlib.contextmanager
def running_worker(name: str, env: Mapping[str, str], log_dir: Path) -> Iterator[Worker]:
    """A worker that is ready and warm, stopped on exit."""
    worker = Worker(name, env, log_dir / f"{name}.log")
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
