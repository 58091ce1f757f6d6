"""What senders, queues and task bodies agree on: task names, queues and routes, the task context and
what a chunk needs from a model.

Light on purpose: a client that only sends tasks imports neither SQLAlchemy, numpy nor Keras from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from aiscan.jobs.settings import Settings
    from aiscan.jobs.store.db import Database
    from aiscan.jobs.store.models import DetectorModel

PLAN_JOB = "aiscan.plan_job"
CLASSIFY_CHUNK = "aiscan.classify_chunk"
FINISH_JOB = "aiscan.finish_job"
# Periodic, sent by `aiscan beat`: re-sends the tasks of jobs that stopped making progress.
RECOVER_STALLED = "aiscan.recover_stalled"
# Periodic, sent by `aiscan beat`: starts the schedules that are due (the database decides which, once).
TICK_SCHEDULES = "aiscan.tick_schedules"

PLAN_QUEUE = "aiscan.plan"
CLASSIFY_QUEUE = "aiscan.classify"
QUEUES = (PLAN_QUEUE, CLASSIFY_QUEUE)
# Planning and finishing are light and belong on any machine; classifying wants the model's device.
ROUTES = {
    PLAN_JOB: PLAN_QUEUE,
    FINISH_JOB: PLAN_QUEUE,
    RECOVER_STALLED: PLAN_QUEUE,
    TICK_SCHEDULES: PLAN_QUEUE,
    CLASSIFY_CHUNK: CLASSIFY_QUEUE,
}
# A task still running this long after its soft time limit is killed by its worker.
HARD_LIMIT_GRACE_S = 120


def task_time_limit(settings: Settings) -> int:
    """Seconds after which no delivery of a task can still be running: Celery's hard time limit."""
    return settings.task_soft_time_limit + HARD_LIMIT_GRACE_S


class Decoded(Protocol):
    """An image as its model sees it: the views (n, s, s, 3), their boxes, the original size, and a
    small JPEG for display (None when there is none)."""

    views: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    width: int
    height: int
    format: str
    thumbnail: bytes | None


class Classifier(Protocol):
    """What a chunk needs from the model: decode bytes, score pixel batches, name a label."""

    @property
    def batch_size(self) -> int: ...

    @property
    def prefetch_batches(self) -> int:
        """Batches to decode ahead while the model runs: 0 when the model itself runs on the CPU."""
        ...

    def decode(self, data: bytes) -> Decoded: ...

    def predict(self, pixels: np.ndarray) -> np.ndarray: ...

    def aggregate(self, scores: np.ndarray) -> tuple[float, int]: ...

    def label(self, p_real: float) -> str: ...

    def warm_up(self) -> None: ...


@dataclass
class TaskContext:
    """Everything a task body needs from the process it runs in."""

    settings: Settings
    db: Database
    send: Callable[..., None]
    classifier_for: Callable[[DetectorModel], Classifier]
    on_progress: Callable[[int], None] = field(default=lambda _n: None)
    # time.monotonic() after which a chunk starts no more images (the rest become `timeout` rows);
    # None runs every image however long it takes
    deadline: float | None = None
