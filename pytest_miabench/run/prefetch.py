"""Images prepared on two threads, ahead of the samples that send them.

Decoding and downscaling are CPU work; two threads overlap them with the
network waits without letting a window of huge decodes run at once.  The
runtime asks for the next window's images (``prefetch``); a sample takes its
own (``take``), which starts it now if nobody asked before.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Prefetcher(Generic[T]):
    """``prepare(index)`` results, started ahead, each handed out once."""

    def __init__(self, prepare: Callable[[int], T], workers: int = 2) -> None:
        self._prepare = prepare
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mia-image")
        self._started: dict[int, concurrent.futures.Future[T]] = {}
        self._lock = threading.Lock()

    def prefetch(self, index: int) -> None:
        with self._lock:
            if index not in self._started:
                self._started[index] = self._pool.submit(self._prepare, index)

    def take(self, index: int) -> concurrent.futures.Future[T]:
        with self._lock:
            future = self._started.pop(index, None)
            if future is None:
                future = self._pool.submit(self._prepare, index)
            return future

    def close(self) -> None:
        # Waits for a decode in progress: no thread of ours outlives the run.
        self._pool.shutdown(wait=True, cancel_futures=True)
