"""Feeding a model full batches: reads run ahead in an I/O pool, decoding in a CPU pool, scoring in the
caller's thread. Job chunks and evaluation share it, with the same CPU/GPU policy; no Keras import.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Protocol, TypeVar

import numpy as np

S = TypeVar("S")
T = TypeVar("T")


class BatchModel(Protocol):
    """A model that scores pixel batches, and how far decoding may run ahead of it."""

    @property
    def batch_size(self) -> int: ...

    @property
    def prefetch_batches(self) -> int:
        """Batches to decode ahead while the model runs: 0 when the model itself runs on the CPU."""
        ...

    def predict(self, pixels: np.ndarray) -> np.ndarray: ...


def read_window(model: BatchModel) -> int:
    """Reads to keep in flight: two batches beyond what decoding holds, to hide I/O latency."""
    return model.batch_size * (2 + model.prefetch_batches)


def read_ahead(read: Callable[[S], T], items: Iterable[S], *, workers: int, window: int) -> Iterator[T]:
    """``read`` over ``items`` in order, with up to ``window`` calls running ahead in ``workers`` threads."""
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aiscan-read") as pool:
        queue: deque[Future[T]] = deque(pool.submit(read, item) for item in islice(it, window))
        try:
            while queue:
                done = queue.popleft()
                for item in islice(it, 1):
                    queue.append(pool.submit(read, item))
                yield done.result()
        finally:
            # A failed read or a caller that stopped early need no reads that have not started.
            for future in queue:
                future.cancel()


def score_batches(
    items: Iterable[T],
    decode: Callable[[T], np.ndarray | None],
    model: BatchModel,
    *,
    on_progress: Callable[[int], None] = lambda _n: None,
) -> Iterator[tuple[T, float | None]]:
    """Each item with the model's score of its decoded pixels, or None where ``decode`` gave no pixels.

    Items come back as they are handled: one without pixels at once, the others when their batch is
    scored; ``on_progress(n)`` says each time that n more were handled. The model sees full batches only
    (and the tail).
    """
    batch = model.batch_size
    # Decoding is CPU work. On a CPU-only machine the model already uses every core, and a decode thread
    # that preempts one of its threads stalls them all, so decoding and scoring take turns; with an
    # accelerator, decoding runs ahead to keep it fed.
    ahead = batch * model.prefetch_batches
    source = iter(items)
    decoding: deque[tuple[T, Future[np.ndarray | None]]] = deque()
    pending: list[tuple[T, np.ndarray]] = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="aiscan-decode") as pool:
        try:
            while True:
                for item in islice(source, max(0, batch - len(pending) + ahead - len(decoding))):
                    decoding.append((item, pool.submit(decode, item)))
                if not decoding:
                    break
                item, future = decoding.popleft()
                pixels = future.result()
                if pixels is None:
                    on_progress(1)
                    yield item, None
                    continue
                pending.append((item, pixels))
                if len(pending) == batch:
                    yield from _score(model, pending, on_progress)
                    pending = []
            yield from _score(model, pending, on_progress)
        finally:
            for _item, future in decoding:
                future.cancel()


def _score(
    model: BatchModel, pending: list[tuple[T, np.ndarray]], on_progress: Callable[[int], None]
) -> list[tuple[T, float | None]]:
    if not pending:
        return []
    scores = model.predict(np.stack([pixels for _item, pixels in pending]))
    on_progress(len(pending))
    return [(item, float(p)) for (item, _pixels), p in zip(pending, scores, strict=True)]
