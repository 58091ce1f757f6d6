"""Feeding a model full batches: reads run ahead in an I/O pool, decoding in a CPU pool, scoring in the
caller's thread. Job chunks and evaluation share it, with the same CPU/GPU policy; no Keras import.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from functools import cache
from itertools import islice
from typing import Generic, Protocol, TypeVar

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


class MemoryBudget:
    """A semaphore of bytes: decodes reserve their peak memory and wait, in arrival order, until it fits.

    Small images decode side by side while two that together exceed the budget take turns; a waiting
    large one is not overtaken, so it cannot starve behind a stream of small ones.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a memory budget needs at least one byte, got {capacity}")
        self.capacity = capacity
        self._used = 0
        self._queue: deque[object] = deque()
        self._changed = threading.Condition()

    @property
    def used(self) -> int:
        """Bytes reserved now."""
        with self._changed:
            return self._used

    @property
    def waiting(self) -> int:
        """Reservations waiting for memory now."""
        with self._changed:
            return len(self._queue)

    def acquire(self, nbytes: int, *, blocking: bool = True) -> bool:
        """Reserve ``nbytes``: at once when they fit and nobody waits, else in turn (or False at once
        when not ``blocking``). More than the capacity can never fit: the caller must refuse that image."""
        if not 0 <= nbytes <= self.capacity:
            raise ValueError(f"cannot reserve {nbytes} bytes of a {self.capacity}-byte budget")
        with self._changed:
            if not self._queue and self._used + nbytes <= self.capacity:
                self._used += nbytes
                return True
            if not blocking:
                return False
            turn = object()
            self._queue.append(turn)
            try:
                self._changed.wait_for(
                    lambda: self._queue[0] is turn and self._used + nbytes <= self.capacity
                )
                self._used += nbytes
            finally:
                self._queue.remove(turn)
                self._changed.notify_all()
            return True

    def release(self, nbytes: int) -> None:
        with self._changed:
            self._used -= nbytes
            self._changed.notify_all()

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` of the budget for the ``with`` block (waiting for them first)."""
        self.acquire(nbytes)
        try:
            yield
        finally:
            self.release(nbytes)


@cache
def shared_budget(capacity: int) -> MemoryBudget:
    """The process's budget of ``capacity`` bytes: every classifier with that limit draws on the same one."""
    return MemoryBudget(capacity)


def read_window(model: BatchModel) -> int:
    """Reads to keep in flight: two batches beyond what decoding holds, to hide I/O latency."""
    return model.batch_size * (2 + model.prefetch_batches)


def read_ahead(
    read: Callable[[S], T],
    items: Iterable[S],
    *,
    workers: int,
    window: int,
    wait: float | None = None,
    on_stuck: Callable[[S], T] | None = None,
) -> Iterator[T]:
    """``read`` over ``items`` in order, with up to ``window`` calls running ahead in ``workers`` threads.

    With ``wait``, a read not done ``wait`` seconds after it is due yields ``on_stuck(item)`` instead.
    """
    it = iter(items)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aiscan-read")
    queue: deque[tuple[S, Future[T]]] = deque((item, pool.submit(read, item)) for item in islice(it, window))
    try:
        while queue:
            item, done = queue.popleft()
            for later in islice(it, 1):
                queue.append((later, pool.submit(read, later)))
            try:
                result = done.result(timeout=wait)
            except FutureTimeout:
                if on_stuck is None:
                    raise
                # A read blocked in the kernel (a stalled network file system) cannot be interrupted:
                # its thread is left behind and the image gets its own row.
                result = on_stuck(item)
            yield result
    finally:
        # A failed read or a caller that stopped early need no reads that have not started, and a
        # stuck one must not hold the chunk.
        pool.shutdown(wait=False, cancel_futures=True)


def score_batches(
    items: Iterable[T],
    decode: Callable[[T], np.ndarray | None],
    model: BatchModel,
    *,
    on_progress: Callable[[int], None] = lambda _n: None,
) -> Iterator[tuple[T, np.ndarray | None]]:
    """Each item with the model's scores of its views, or None where ``decode`` gave no views.

    ``decode`` turns an item into its views (n, s, s, 3); views of different items share batches, so
    the model sees full batches only (and one padded tail), whatever the number of views per image.
    Items come back as they are handled: one without views at once, the others when their last view is
    scored; ``on_progress(n)`` says each time that n more were handled.
    """
    batch = model.batch_size
    # Decoding is CPU work. On a CPU-only machine the model already uses every core, and a decode thread
    # that preempts one of its threads stalls them all, so decoding and scoring take turns; with an
    # accelerator, decoding runs ahead to keep it fed.
    ahead = batch * model.prefetch_batches
    source = iter(items)
    decoding: deque[tuple[T, Future[np.ndarray | None]]] = deque()
    waiting = _Waiting[T]()
    # Views per image so far, to size decoding in views: memory stays bounded by views, not images.
    images, views = 0, 0
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="aiscan-decode") as pool:
        try:
            while True:
                per_image = views / images if images else 1.0
                room = math.ceil((batch - waiting.views + ahead) / per_image) - len(decoding)
                for item in islice(source, max(0, room)):
                    decoding.append((item, pool.submit(decode, item)))
                if not decoding:
                    break
                item, future = decoding.popleft()
                pixels = future.result()
                if pixels is None:
                    on_progress(1)
                    yield item, None
                    continue
                images, views = images + 1, views + len(pixels)
                waiting.add(item, pixels)
                while waiting.views >= batch:
                    yield from waiting.score(model, batch, on_progress)
            while waiting.views:
                yield from waiting.score(model, batch, on_progress)
        finally:
            for _item, future in decoding:
                future.cancel()


class _Waiting(Generic[T]):
    """Decoded items whose views wait for the model, in order; an item may span two batches."""

    def __init__(self) -> None:
        # item, its views, how many are scored, their scores so far
        self._items: deque[tuple[T, np.ndarray, list[np.ndarray]]] = deque()
        self._first_done = 0  # views of the first item already scored
        self.views = 0

    def add(self, item: T, pixels: np.ndarray) -> None:
        self._items.append((item, pixels, []))
        self.views += len(pixels)

    def score(
        self, model: BatchModel, batch: int, on_progress: Callable[[int], None]
    ) -> list[tuple[T, np.ndarray]]:
        """Score the next ``batch`` views (fewer only at the end); the items that are now complete."""
        parts, need, offset = [], batch, self._first_done
        for _item, pixels, _scores in self._items:
            part = pixels[offset : offset + need]
            parts.append(part)
            need -= len(part)
            offset = 0
            if not need:
                break
        scores = model.predict(np.concatenate(parts))
        self.views -= len(scores)
        done: list[tuple[T, np.ndarray]] = []
        while len(scores):
            item, pixels, got = self._items[0]
            take = len(pixels) - self._first_done
            got.append(scores[:take])
            scores = scores[take:]
            self._first_done += min(take, len(got[-1]))
            if self._first_done == len(pixels):
                self._items.popleft()
                self._first_done = 0
                done.append((item, np.concatenate(got)))
        on_progress(len(done))
        return done
