"""Per-process benchmark state: collection, look-ahead scheduling, the engine.

Registered in every process that runs items (the single process, or each
xdist worker), never on an xdist controller, which runs nothing.
"""

from __future__ import annotations

import atexit
import gc
import sqlite3
import warnings
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from .dataset import DatasetError, Source
from .items import COLLECTOR_NAME, RESULT_KEY, BenchCollector, MiaItem
from .protocols.base import Protocol
from .settings import Settings

RUNTIME_KEY = pytest.StashKey["BenchRuntime"]()
SOURCE_KEY = pytest.StashKey[Source]()


def load_source(config: pytest.Config, settings: Settings) -> Source:
    """Load the dataset once per process; a failure is a usage error."""
    if SOURCE_KEY not in config.stash:
        from . import dataset

        try:
            config.stash[SOURCE_KEY] = dataset.load(settings.dataset, settings.split)
        except DatasetError as exc:
            raise pytest.UsageError(f"--mia-dataset: cannot load the MIA-Bench dataset: {exc}") from None
    return config.stash[SOURCE_KEY]


def cache_directory(config: pytest.Config, settings: Settings) -> Path | None:
    """Where the response cache lives, or None when caching is off."""
    if settings.no_cache:
        return None
    if settings.cache_dir:
        return Path(settings.cache_dir).expanduser()
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
    if cache is None:
        return None
    return Path(cache.mkdir("mia-bench"))


_exit_freeze_registered = False


def freeze_heap() -> None:
    """Move everything alive now (the imports, openai's ~1000 model classes,
    the items) out of the garbage collector's sight until pytest cleans up.

    Called by the engine when the process first waits on the network (the
    first window's requests are out) or when the first sample ends, if that
    comes first: the collection that precedes the freeze takes ~80 ms and
    would delay whatever runs meanwhile (after the first sample, it held up
    the second wave).  Each full collection then skips those objects: the
    ones during the run, pytest's two at cleanup and the interpreter's at
    exit, which together cost ~0.3 s of CPU at the end of every run.  A
    collection first, so no garbage is frozen with them.
    """
    global _exit_freeze_registered
    gc.collect()
    gc.freeze()
    # Thawed once pytest's own end-of-run collections are done (cleanups run
    # last-in first-out, see ``register_thaw``), so a pytest run inside this
    # process (pytester) leaves nothing frozen behind.  gc.unfreeze() is
    # harmless when nothing was frozen (--collect-only, a usage error).
    if not _exit_freeze_registered:
        # At interpreter exit nothing needs collecting any more.
        atexit.register(gc.freeze)
        _exit_freeze_registered = True


_M_MMAP_THRESHOLD = -3  # glibc malloc.h
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024


def tune_malloc() -> bool:
    """glibc only: give big buffers back at once and keep threads to two arenas.

    A run allocates thousands of 100-300 KB buffers (image bytes, base64,
    request bodies) on four threads.  glibc raises its mmap threshold each
    time such a buffer is freed, after which they come from per-thread
    arenas that keep the freed memory: 10-25 MiB of peak RSS in the
    benchmark.  A fixed threshold (glibc's own starting value) returns them
    to the system on free, two arenas limit the spread.  Called before the
    plugin starts any thread; a variable the user set (MALLOC_ARENA_MAX,
    MALLOC_MMAP_THRESHOLD_) is left alone.  Returns whether it applied.
    """
    import ctypes
    import os

    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, ValueError):
        return False
    applied = False
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) or applied
    if "MALLOC_ARENA_MAX" not in os.environ:
        applied = bool(mallopt(_M_ARENA_MAX, 2)) or applied
    return applied


def register_thaw(config: pytest.Config) -> None:
    """Register the thaw before any other plugin's cleanup, so it runs after them."""
    config.add_cleanup(gc.unfreeze)


class BenchRuntime:
    """Owns this process's engine and decides what to submit ahead."""

    def __init__(self, config: pytest.Config, settings: Settings, protocol: Protocol, judge_image: bool) -> None:
        self.config = config
        self.settings = settings
        self.protocol = protocol
        self.judge_image = judge_image
        self.is_worker = hasattr(config, "workerinput")
        self._engine: Any = None
        self._positions: dict[str, int] = {}
        self._items: list[pytest.Item] = []
        self._submitted_to = 0  # positions below this were submitted
        self._prefetched_to = 0  # ... or their images prefetched

    # -- collection --------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> bool:
        """Collect the benchmark instead of test files: ``--mia-bench`` runs
        the samples and only them, whatever paths or testpaths say."""
        source = load_source(self.config, self.settings)
        samples = source.samples
        if self.settings.limit is not None:
            samples = samples[: self.settings.limit]
        hook = self.config.hook
        collector = BenchCollector.from_parent(session, name=COLLECTOR_NAME, nodeid=COLLECTOR_NAME, samples=samples)
        hook.pytest_collectstart(collector=collector)
        report = hook.pytest_make_collect_report(collector=collector)
        items: list[pytest.Item] = []
        if report.passed:
            for node in report.result:
                assert isinstance(node, pytest.Item)
                node.ihook.pytest_itemcollected(item=node)
                items.append(node)
        hook.pytest_collectreport(report=report)
        session.items = items
        try:
            hook.pytest_collection_modifyitems(session=session, config=self.config, items=session.items)
        finally:
            hook.pytest_collection_finish(session=session)
        session.testscollected = len(session.items)
        return True

    # -- scheduling --------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        self._items = list(session.items)
        self._positions = {item.nodeid: i for i, item in enumerate(self._items)}
        self._submitted_to = self._prefetched_to = 0
        return (yield)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        """Submit work ahead of the item's turn.

        In one process the run order is ``session.items``, so the next
        ``concurrency`` items are submitted.  An xdist worker only knows the
        item it runs and the one queued after it (both given to it by the
        controller), so it looks at most one item ahead: never an API call for
        a sample another worker will run.
        """
        if not isinstance(item, MiaItem):
            return None
        engine = self.engine()
        window = self.settings.concurrency
        if self.is_worker:
            engine.submit(item.sample)
            if window > 1 and isinstance(nextitem, MiaItem):
                engine.submit(nextitem.sample)
            return None
        engine.submit(item.sample)
        pos = self._positions.get(item.nodeid)
        if pos is None:
            return None
        # The window moves one item per item: submit only what entered it
        # (the main thread's time per item paces how fast a wave refills).
        end = pos + window
        for ahead in self._items[max(pos + 1, self._submitted_to) : end]:
            if isinstance(ahead, MiaItem):
                engine.submit(ahead.sample)
        self._submitted_to = max(self._submitted_to, end)
        # Images of the next window are prepared meanwhile (no API call).
        for ahead in self._items[max(end, self._prefetched_to) : end + window]:
            if isinstance(ahead, MiaItem):
                engine.prefetch_image(ahead.sample)
        self._prefetched_to = max(self._prefetched_to, end + window)
        return None

    def engine(self) -> Any:
        if self._engine is None:
            from .cache import ResponseCache
            from .engine import Engine

            directory = cache_directory(self.config, self.settings)
            response_cache = None
            if directory is not None:
                try:
                    response_cache = ResponseCache(directory)
                except (OSError, sqlite3.Error) as exc:
                    # Answers are worth more than the cache: run without it, loudly.
                    warnings.warn(
                        pytest.PytestWarning(f"mia-bench: response cache in {directory} unusable ({exc}); running without it"),
                        stacklevel=1,
                    )
            source = load_source(self.config, self.settings)
            self._engine = Engine(
                self.settings, source, self.protocol, response_cache, self.judge_image, on_settled=freeze_heap
            )
        return self._engine

    def result_for(self, item: MiaItem) -> dict[str, Any]:
        return self.engine().result(item.sample)  # type: ignore[no-any-return]

    # -- reporting ---------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        """Attach the full sample result to the call report: report
        attributes travel to the xdist controller like user_properties do,
        without bloating JUnit XML with responses."""
        report = yield
        if call.when == "call" and RESULT_KEY in item.stash:
            report.mia_result = item.stash[RESULT_KEY]
        return report

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
