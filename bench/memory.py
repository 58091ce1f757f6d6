"""Memory of a process tree from /proc: RSS and PSS of a process and its descendants, sampled for peaks."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

RSS_INTERVAL_S = 0.1


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
