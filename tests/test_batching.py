"""The scoring engine's scheduling: bounded read-ahead, decoding that takes turns with a CPU model and
runs ahead of an accelerator, full batches shared by the views of several images."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from aiscan.model import batching as batching_module
from aiscan.model.batching import MemoryBudget, read_ahead, read_window, score_batches, shared_budget


class FakeModel:
    """Scores a view by its first pixel / 255; records the batch sizes and what ``during`` says."""

    def __init__(self, batch_size: int, prefetch_batches: int, during: Callable[[], object]) -> None:
        self.batch_size = batch_size
        self.prefetch_batches = prefetch_batches
        self.during = during
        self.batches: list[int] = []
        self.seen: list[object] = []

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        self.batches.append(len(pixels))
        self.seen.append(self.during())
        return pixels[:, 0, 0, 0] / 255.0


class Decoder:
    """Decodes an int to ``views(item)`` 2x2 views of that value, -1 to None; counts calls started and
    running."""

    def __init__(self, delay: float = 0.0, views: Callable[[int], int] = lambda _item: 1) -> None:
        self.delay = delay
        self.views = views
        self.started = 0
        self.running = 0
        self.lock = threading.Lock()

    def __call__(self, item: int) -> np.ndarray | None:
        with self.lock:
            self.started += 1
            self.running += 1
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
        return None if item < 0 else np.full((self.views(item), 2, 2, 3), item, np.uint8)


def test_every_item_comes_back_once_with_its_score_and_the_model_sees_full_batches() -> None:
    items = [5, -1, 10, 20, -1, 30, 40, 50, 60]
    decoder = Decoder()
    model = FakeModel(batch_size=3, prefetch_batches=0, during=lambda: None)
    progress: list[int] = []
    out = list(score_batches(items, decoder, model, on_progress=progress.append))
    assert sorted(item for item, _ in out) == sorted(items)
    for item, scores in out:
        assert scores is None if item < 0 else scores == pytest.approx([item / 255.0])
    assert model.batches == [3, 3, 1]
    assert sum(progress) == len(items) and progress.count(1) >= 2


def test_views_of_several_images_share_full_batches() -> None:
    # Tiled images: 1 to 5 views each; an image's views may span two batches.
    items = [1, 2, 3, 4, 5, -1, 3, 1, 4]
    decoder = Decoder(views=lambda item: item)
    model = FakeModel(batch_size=4, prefetch_batches=0, during=lambda: None)
    progress: list[int] = []
    out = list(score_batches(items, decoder, model, on_progress=progress.append))
    assert sorted(item for item, _ in out) == sorted(items)
    for item, scores in out:
        assert scores is None if item < 0 else list(scores) == pytest.approx([item / 255.0] * item)
    total = sum(i for i in items if i > 0)
    assert model.batches == [4] * (total // 4) + ([total % 4] if total % 4 else [])
    assert sum(progress) == len(items)


def test_on_a_cpu_decoding_waits_while_the_model_runs() -> None:
    decoder = Decoder(delay=0.01)
    model = FakeModel(batch_size=4, prefetch_batches=0, during=lambda: (decoder.running, decoder.started))
    list(score_batches(range(20), decoder, model))
    # Nothing decodes during a batch, and nothing of the next batch was started before it.
    assert [running for running, _ in model.seen] == [0] * 5
    assert [started for _, started in model.seen] == [4, 8, 12, 16, 20]


def test_with_an_accelerator_decoding_runs_two_batches_ahead() -> None:
    decoder = Decoder()

    def decoded_ahead() -> int:
        # Give the decode pool time to fill its window while the "GPU" works.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and decoder.started < min(20, 4 * (len(model.batches) + 2)):
            time.sleep(0.005)
        return decoder.started

    model = FakeModel(batch_size=4, prefetch_batches=2, during=decoded_ahead)
    list(score_batches(range(20), decoder, model))
    assert model.seen == [12, 16, 20, 20, 20]
    assert model.batches == [4] * 5


def test_read_ahead_keeps_order_and_a_bounded_window() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def read(i: int) -> int:
        with lock:
            started.append(i)
        return i * 10

    consumed = 0
    for value in read_ahead(read, range(50), workers=4, window=6):
        assert value == consumed * 10
        consumed += 1
        with lock:
            assert len(started) <= consumed + 6
    assert consumed == 50


def test_read_ahead_raises_the_failure_and_starts_nothing_more() -> None:
    started: list[int] = []

    def read(i: int) -> int:
        started.append(i)
        if i == 2:
            raise OSError("disk gone")
        time.sleep(0.05)
        return i

    with pytest.raises(OSError, match="disk gone"):
        list(read_ahead(read, range(100), workers=1, window=10))
    # The reads queued behind the failure are cancelled, not run.
    assert len(started) <= 6


def test_read_window_covers_decoding_ahead() -> None:
    cpu = FakeModel(batch_size=8, prefetch_batches=0, during=lambda: None)
    gpu = FakeModel(batch_size=8, prefetch_batches=2, during=lambda: None)
    assert read_window(cpu) == 16 and read_window(gpu) == 32


# --- the decode memory budget ------------------------------------------------------------


def _wait_until(condition: Callable[[], bool]) -> None:
    """Synchronise with another thread (not a timing assertion): fail only if it never happens."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the other thread never got there"
        time.sleep(0.001)


def test_budget_admits_what_fits_and_refuses_what_never_can() -> None:
    budget = MemoryBudget(100)
    assert budget.acquire(30, blocking=False) and budget.acquire(30, blocking=False)
    assert budget.used == 60
    assert not budget.acquire(50, blocking=False)  # 110 > 100: a big one waits for the small ones
    assert budget.acquire(40, blocking=False)
    budget.release(30)
    budget.release(30)
    budget.release(40)
    assert budget.used == 0
    assert budget.acquire(100, blocking=False)  # alone, the whole budget
    assert not budget.acquire(1, blocking=False)
    budget.release(100)
    with pytest.raises(ValueError, match="101"):
        budget.acquire(101)


def test_a_waiting_big_reservation_is_not_overtaken() -> None:
    budget = MemoryBudget(100)
    budget.acquire(60)
    got_big = threading.Event()

    def big() -> None:
        with budget.reserve(70):
            got_big.set()

    thread = threading.Thread(target=big)
    thread.start()
    _wait_until(lambda: budget.waiting == 1)
    # 60 + 10 would fit, but the big one came first: small ones queue behind it instead of starving it.
    assert not budget.acquire(10, blocking=False)
    assert not got_big.is_set()
    budget.release(60)
    thread.join(10)
    assert got_big.is_set() and budget.used == 0 and budget.waiting == 0


def test_score_batches_decodes_small_images_together_and_big_ones_in_turn(monkeypatch) -> None:
    # Sizes in bytes of a budget of 100: four small ones fit together, two big ones never do.
    capacity, small, big = 100, 10, 60
    budget = MemoryBudget(capacity)
    # More decode threads than this machine may have cores, so that the budget is what limits.
    monkeypatch.setattr(batching_module.os, "cpu_count", lambda: 6)
    smalls_meet = threading.Barrier(4, timeout=10)
    lock = threading.Lock()
    inside: list[int] = []
    seen: list[tuple[int, ...]] = []

    def decode(size: int) -> np.ndarray:
        with budget.reserve(size):
            with lock:
                inside.append(size)
                seen.append(tuple(inside))
                first_big = size == big and seen.count(()) == 0
            if size == small:
                smalls_meet.wait()  # breaks (and fails) unless all four small ones are in at once
            elif first_big:
                _wait_until(lambda: budget.waiting >= 1)  # the other big one is held back meanwhile
            with lock:
                inside.remove(size)
                if size == big:
                    seen.append(())  # marks that a big one is done
        return np.full((1, 2, 2, 3), size, np.uint8)

    items = [small, small, big, small, small, big]
    model = FakeModel(batch_size=6, prefetch_batches=0, during=lambda: None)
    out = list(score_batches(items, decode, model))
    assert [item for item, _ in out] == items
    assert all(sum(now) <= capacity for now in seen)  # so the two big ones were never in together
    assert max(now.count(big) for now in seen) == 1
    assert max(now.count(small) for now in seen) == 4
    assert budget.used == 0


def test_the_budget_is_shared_by_the_process() -> None:
    assert shared_budget(123) is shared_budget(123)
    assert shared_budget(123) is not shared_budget(124)


def test_a_read_stuck_past_its_wait_costs_only_its_item() -> None:
    release = threading.Event()

    def read(i: int) -> str:
        if i == 1:
            release.wait()  # a read blocked in the kernel: nothing but its own end frees it
        return f"read {i}"

    try:
        got = list(read_ahead(read, range(4), workers=2, window=3, wait=0.2, on_stuck=lambda i: f"stuck {i}"))
        assert got == ["read 0", "stuck 1", "read 2", "read 3"]
        assert not release.is_set()  # the generator ended while the read was still blocked
    finally:
        release.set()
