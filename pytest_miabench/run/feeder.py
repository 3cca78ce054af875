"""Keeps a window of samples in flight, in run order, refilled as each one ends.

pytest runs items one after another and an item waits for its own sample.
Moving a window one position per finished item leaves the slots of samples
that finished behind a slow head (a huge image, a slow judge) empty until
the head's item is done.  The feeder instead starts the next sample in run
order the moment any started one ends (a done-callback, on whatever thread
ends it), so ``width`` samples stay in flight.

Two bounds keep it from running away:

* ``width``: samples started and not yet ended;
* ``width + ahead``: samples started whose item's turn has not come yet
  (the head included).  A stuck head therefore holds at most that many
  results in memory, and a session cut short (``-x``) paid for at most that
  many samples it never reports.

Samples are never started twice and never behind the head: a position is
started once, in order, and the item whose turn it is always starts (pytest
waits for it).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Feeder(Generic[T]):
    """Starts ``order``'s elements with ``start`` (which returns a future that
    is done when the element has ended), keeping the two bounds above.

    ``prepare`` (optional) is called once for each element, in order, up to
    ``width`` positions before it starts: work that costs nothing to do
    early (an image decode).  ``advance`` is called when an element's turn comes;
    ``stop`` before the starter closes, after which nothing starts."""

    def __init__(
        self,
        order: Sequence[T],
        start: Callable[[T], concurrent.futures.Future[Any]],
        width: int,
        ahead: int = 0,
        prepare: Callable[[T], None] | None = None,
    ) -> None:
        if width < 1 or ahead < 0:
            raise ValueError(f"width must be at least 1 and ahead at least 0, got {width} and {ahead}")
        self._order = order
        self._start = start
        self._prepare = prepare
        self._width = width
        self._ahead = ahead
        self._lock = threading.Lock()
        self._head = 0  # the position whose turn it is; those before it had theirs
        self._next = 0  # positions before this one were started (or passed over)
        self._prepared = 0  # ... or prepared
        self._running = 0  # started and not ended
        self._filling = False  # one thread starts at a time; the others leave it the change
        self._stopped = False

    @property
    def running(self) -> int:
        """Elements started and not ended (read without the lock: a snapshot)."""
        return self._running

    def advance(self, position: int) -> None:
        """``position``'s turn has come: start it now if it has not started,
        then fill the room its predecessors left."""
        future = None
        with self._lock:
            if self._stopped or position < self._head:
                return
            self._head = position
            if self._next <= position:
                # Positions between were passed over (not in flight, never
                # to be started): pytest waits for this one, bounds or not.
                self._next = position
                future = self._start_next()
        if future is not None:
            future.add_done_callback(self._ended)
        self._fill()

    def stop(self) -> None:
        """Start nothing more; a start in progress has ended when this returns."""
        with self._lock:
            self._stopped = True

    def _ended(self, _future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._running -= 1
        self._fill()

    def _fill(self) -> None:
        """Start elements in order while both bounds leave room.  A thread
        that finds another one filling leaves: the other re-checks the
        bounds before each start, under the lock, and sees the change."""
        with self._lock:
            if self._filling:
                return
            self._filling = True
        try:
            while True:
                with self._lock:
                    if not self._room():
                        self._filling = False
                        return
                    future = self._start_next()
                future.add_done_callback(self._ended)  # outside the lock: a done future calls back at once
        except BaseException:
            with self._lock:
                self._filling = False
            raise

    def _room(self) -> bool:
        return (
            not self._stopped
            and self._next < len(self._order)
            and self._running < self._width
            and self._next - self._head < self._width + self._ahead
        )

    def _start_next(self) -> concurrent.futures.Future[Any]:
        """Under the lock: start the element at ``_next``, having prepared it
        and the ones up to ``width`` positions after it.  Prepared in run
        order, so a queue of preparations never puts an element behind
        those that start after it."""
        position = self._next
        if self._prepare is not None:
            end = min(len(self._order), position + 1 + self._width)
            for ahead in range(max(self._prepared, position), end):
                self._prepare(self._order[ahead])
            self._prepared = max(self._prepared, end)
        self._next += 1
        self._running += 1
        return self._start(self._order[position])
