"""The feeder on its own: fake samples whose ends the test decides, so every
step is deterministic (no server, no sleeps)."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import pytest

from pytest_miabench.run.feeder import Feeder


class Fake:
    """Starts are recorded; each start's future is ended by the test."""

    def __init__(self, n: int, width: int, ahead: int = 0) -> None:
        self.started: list[int] = []
        self.prepared: list[int] = []
        self.futures: dict[int, concurrent.futures.Future[Any]] = {}
        self.log: list[tuple[str, int]] = []  # starts and preparations, in the order they happened
        self.feeder = Feeder(list(range(n)), self.start, width, ahead, self.prepare)

    def start(self, position: int) -> concurrent.futures.Future[Any]:
        assert position not in self.futures, f"{position} started twice"
        self.started.append(position)
        self.log.append(("start", position))
        self.futures[position] = concurrent.futures.Future()
        return self.futures[position]

    def prepare(self, position: int) -> None:
        assert position not in self.prepared, f"{position} prepared twice"
        self.prepared.append(position)
        self.log.append(("prepare", position))

    def end(self, *positions: int) -> None:
        for position in positions:
            self.futures[position].set_result(position)

    def in_flight(self) -> list[int]:
        return sorted(p for p, f in self.futures.items() if not f.done())


def test_the_first_turn_starts_a_window_in_order() -> None:
    fake = Fake(10, width=4, ahead=8)
    fake.feeder.advance(0)
    assert fake.started == [0, 1, 2, 3]
    assert fake.in_flight() == [0, 1, 2, 3]


def test_a_sample_that_ends_behind_a_stuck_head_is_replaced_at_once() -> None:
    fake = Fake(20, width=4, ahead=8)
    fake.feeder.advance(0)
    fake.end(2)  # no new turn: the head (0) is still running
    assert fake.started == [0, 1, 2, 3, 4]
    fake.end(1, 3, 4)
    assert fake.in_flight() == [0, 5, 6, 7]
    assert fake.feeder.running == 4


def test_a_stuck_head_holds_at_most_width_plus_ahead_started_samples() -> None:
    fake = Fake(50, width=4, ahead=6)
    fake.feeder.advance(0)
    for _ in range(30):  # everything but the head ends as soon as it starts
        ready = [p for p in fake.in_flight() if p != 0]
        if not ready:
            break
        fake.end(*ready)
    assert fake.started == list(range(10))  # positions 0..9: width + ahead
    assert fake.in_flight() == [0]
    # The head's item takes its result; the next turn makes room again.
    fake.end(0)
    assert fake.started == list(range(10))
    fake.feeder.advance(1)
    assert fake.started == list(range(11))


def test_without_ahead_it_is_the_old_window() -> None:
    """ahead=0 (-x, --maxfail): nothing starts more than width-1 positions
    after the item whose turn it is, ended or not."""
    fake = Fake(20, width=3, ahead=0)
    fake.feeder.advance(0)
    fake.end(1, 2)
    assert fake.started == [0, 1, 2]
    fake.end(0)
    fake.feeder.advance(1)
    assert fake.started == [0, 1, 2, 3]
    fake.feeder.advance(2)
    assert fake.started == [0, 1, 2, 3, 4]
    for turn in range(3, 20):
        fake.end(*fake.in_flight())
        fake.feeder.advance(turn)
        assert max(fake.started) <= turn + 2
    assert fake.started == list(range(20))


def test_the_item_whose_turn_it_is_always_starts() -> None:
    """Even when the window is full of samples whose items had their turn
    (a timed-out sample still being cancelled): pytest waits for this one."""
    fake = Fake(10, width=2, ahead=0)
    fake.feeder.advance(0)
    assert fake.started == [0, 1]
    fake.feeder.advance(1)
    fake.feeder.advance(2)  # 0 and 1 never ended
    assert fake.started == [0, 1, 2]
    assert fake.feeder.running == 3
    fake.end(0, 1)  # room again, but nothing beyond the window of the head (2)
    assert fake.started == [0, 1, 2, 3]


def test_nothing_starts_twice_or_behind_the_head() -> None:
    fake = Fake(8, width=2, ahead=2)
    fake.feeder.advance(0)
    fake.feeder.advance(0)
    fake.feeder.advance(5)  # turns 1-4 passed over (their items did not run)
    assert fake.started == [0, 1, 5]
    fake.end(0, 1, 5)
    fake.feeder.advance(3)  # an earlier turn is ignored
    assert fake.started == [0, 1, 5, 6, 7]


def test_images_are_prepared_in_run_order_one_window_ahead() -> None:
    fake = Fake(12, width=3, ahead=3)
    fake.feeder.advance(0)
    # Each sample is prepared before it starts, and before any later one is.
    assert fake.log[:4] == [("prepare", 0), ("prepare", 1), ("prepare", 2), ("prepare", 3)]
    assert fake.prepared == [0, 1, 2, 3, 4, 5]  # started 0-2, the next window 3-5
    fake.end(1)
    assert fake.prepared == list(range(7))
    for position in fake.started:
        assert fake.log.index(("prepare", position)) < fake.log.index(("start", position))


def test_stop_starts_nothing_more() -> None:
    fake = Fake(10, width=2, ahead=4)
    fake.feeder.advance(0)
    fake.feeder.stop()
    fake.end(0, 1)
    fake.feeder.advance(1)
    assert fake.started == [0, 1]


def test_a_future_done_at_once_is_counted_without_recursion() -> None:
    """``add_done_callback`` on a done future calls back on the spot, inside
    the feeder's own loop; it must neither deadlock nor recurse per sample."""
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()
    done.set_result(None)
    started: list[int] = []

    def start(position: int) -> concurrent.futures.Future[Any]:
        started.append(position)
        return done

    n = 5000  # far more than the recursion limit
    feeder = Feeder(list(range(n)), start, width=4, ahead=n)
    feeder.advance(0)
    assert started == list(range(n))
    assert feeder.running == 0


def test_ends_on_many_threads_keep_the_bounds() -> None:
    """Samples end on other threads (the event loop's); the counts stay exact."""
    n, width = 400, 8
    lock = threading.Lock()
    started: list[int] = []
    peak = 0
    open_now = 0
    threads: list[threading.Thread] = []

    def start(position: int) -> concurrent.futures.Future[Any]:
        nonlocal peak, open_now
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with lock:
            started.append(position)
            open_now += 1
            peak = max(peak, open_now)

        def finish() -> None:
            nonlocal open_now
            with lock:
                open_now -= 1
            future.set_result(position)

        thread = threading.Thread(target=finish)
        threads.append(thread)
        thread.start()
        return future

    feeder = Feeder(list(range(n)), start, width=width, ahead=n)
    feeder.advance(0)
    # A thread starts the next one (if any) before it exits: joining them in
    # order reaches the last one started.
    joined = 0
    while joined < len(threads):
        threads[joined].join()
        joined += 1
    assert started == list(range(n))
    assert peak <= width
    assert feeder.running == 0


@pytest.mark.parametrize(("width", "ahead"), [(0, 0), (1, -1)])
def test_bounds_are_checked(width: int, ahead: int) -> None:
    with pytest.raises(ValueError, match="width must be at least 1"):
        Feeder([1], lambda _: concurrent.futures.Future(), width, ahead)
