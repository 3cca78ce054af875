"""Per-process benchmark state: collection, look-ahead scheduling, the engine's life.

Registered in every process that runs items (the single process, or each
xdist worker), never on an xdist controller, which runs nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from ..calls.cache import CacheError, ResponseCache
from ..calls.endpoint import endpoints
from ..calls.scrub import ScrubFilter
from ..config.settings import Settings
from ..data.samples import DatasetError, Sample, Source
from ..protocols.base import Protocol
from . import handoff
from .engine import Engine
from .feeder import Feeder
from .items import COLLECTOR_NAME, BenchCollector, MiaItem
from .keys import (
    BUDGET_KEY,
    ENGINE_KEY,
    MODEL_RUN_KEY,
    RESULT_KEY,
    SOURCE_KEY,
    TIMEOUT_KEY,
    WORKERINPUT_MODEL_RUN,
)

#: Windows of samples the feeder may start beyond the one in flight while
#: their items wait behind a slow one: the run holds at most
#: ``(1 + AHEAD_WINDOWS) * concurrency`` unreported results.
AHEAD_WINDOWS = 4


def load_source(config: pytest.Config, settings: Settings) -> Source:
    """Load the dataset once per process; a failure is a usage error."""
    if SOURCE_KEY not in config.stash:
        from ..data import dataset

        if settings.demo:
            from ..data import demo

            config.stash[SOURCE_KEY] = demo.load()
            return config.stash[SOURCE_KEY]
        try:
            config.stash[SOURCE_KEY] = dataset.load(settings.dataset, settings.split, settings.image_root)
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
    try:
        return Path(cache.mkdir("mia-bench"))
    except OSError as exc:
        # A read-only checkout, or a file where pytest's cache folder goes:
        # answers are worth more than the cache, so run without it, loudly.
        warnings.warn(
            pytest.PytestWarning(
                f"mia-bench: the response cache folder cannot be made in pytest's cache directory ({exc}); "
                "running without the cache (--mia-cache-dir=PATH puts it elsewhere)"
            ),
            stacklevel=2,
        )
        return None


class BenchRuntime:
    """Owns this process's engine and decides what to submit ahead."""

    def __init__(self, config: pytest.Config, settings: Settings, protocols: tuple[Protocol, ...]) -> None:
        self.config = config
        self.settings = settings
        self.protocols = protocols  # the headline first
        self.is_worker = hasattr(config, "workerinput")
        self._engine: Engine | None = None
        self._scrubber: ScrubFilter | None = None
        self._positions: dict[str, int] = {}
        self._items: list[MiaItem] = []
        self._feeder: Feeder[Sample] | None = None
        self._warned: set[str] = set()

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

    # -- the engine ----------------------------------------------------------

    def engine(self) -> Engine:
        """Start the engine on first use; its cleanup is registered with pytest
        at once, so it runs even if another plugin's sessionfinish fails."""
        if self._engine is None:
            response_cache = None
            directory = cache_directory(self.config, self.settings)
            if directory is not None:
                try:
                    response_cache = ResponseCache(directory)
                except CacheError as exc:
                    # Answers are worth more than the cache: run without it, loudly.
                    self._warn(f"{exc}; running without it")
            workerinput = getattr(self.config, "workerinput", {})
            workers = int(workerinput.get("workercount", 1))
            source = load_source(self.config, self.settings)
            # Installed once openai (and httpx) are imported, so their loggers exist.
            self._scrubber = ScrubFilter([secret for endpoint in endpoints(self.settings) for secret in endpoint.secrets()])
            self._engine = Engine(
                self.settings,
                source,
                self.protocols,
                response_cache,
                workers,
                self._model_run(),
                handoff.worker_store(self.config, response_cache, self._warn),
                worker=workerinput.get("workerid"),
            )
            self._scrubber.install()
            self.config.stash[ENGINE_KEY] = self._engine
            self.config.add_cleanup(self._close)
        return self._engine

    def _model_run(self) -> str | None:
        """The run model answers are keyed by (journal.py): the controller's,
        passed in workerinput, or this process's own."""
        workerinput = getattr(self.config, "workerinput", None)
        if workerinput is not None:
            run = workerinput.get(WORKERINPUT_MODEL_RUN)
            return run if isinstance(run, str) else None
        return self.config.stash.get(MODEL_RUN_KEY, None)

    def _close(self) -> None:
        if self._feeder is not None:
            self._feeder.stop()  # nothing starts while the engine closes
        engine, self._engine = self._engine, None
        if engine is None:
            return
        try:
            unclaimed = engine.close()
        finally:
            if self._scrubber is not None:
                self._scrubber.remove()
        handoff.leave_unclaimed(self.config, unclaimed)

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(pytest.PytestWarning(f"mia-bench: {message}"), stacklevel=2)

    # -- scheduling --------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        self._items = [item for item in session.items if isinstance(item, MiaItem)]
        self._positions = {item.nodeid: i for i, item in enumerate(self._items)}
        self._feeder = None
        return (yield)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        """Submit work ahead of the item's turn.

        In one process the run order is ``session.items``: the feeder keeps
        ``concurrency`` samples of it in flight (feeder.py).  An xdist worker
        only knows the item it runs and the one queued after it (both given
        to it by the controller), so it looks at most one item ahead: never
        an API call for a sample another worker will run.
        """
        if not isinstance(item, MiaItem) or self.settings.estimate:
            return None
        engine = self.engine()
        pos = self._positions.get(item.nodeid)
        if self.is_worker or pos is None:
            engine.submit(item.sample)
            if self.is_worker and self.settings.concurrency > 1 and isinstance(nextitem, MiaItem):
                engine.submit(nextitem.sample)
            return None
        if self._feeder is None:
            self._feeder = self._new_feeder(engine)
        self._feeder.advance(pos)
        return None

    def _new_feeder(self, engine: Engine) -> Feeder[Sample]:
        window = self.settings.concurrency
        # -x / --maxfail: no sample starts more than N-1 items ahead of the
        # running one, so a stop wastes at most N-1 samples' calls (README, Speed).
        ahead = 0 if self.config.getoption("maxfail", 0) else AHEAD_WINDOWS * window
        return Feeder([item.sample for item in self._items], engine.submit, window, ahead, engine.prefetch_image)

    @pytest.hookimpl(optionalhook=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> bool | None:
        """pytest-timeout: a sample's item waits with that limit itself and
        fails with one line, instead of a signal and a dump of every thread."""
        if not isinstance(item, MiaItem):
            return None
        item.stash[TIMEOUT_KEY] = float(settings.timeout)
        return True

    @pytest.hookimpl(optionalhook=True)
    def pytest_timeout_cancel_timer(self, item: pytest.Item) -> bool | None:
        return True if isinstance(item, MiaItem) else None

    # -- reporting ---------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        """Attach the full sample result to the call report (handoff.py)."""
        report = yield
        if call.when == "call" and RESULT_KEY in item.stash:
            handoff.attach_record(report, item.stash[RESULT_KEY], self.is_worker)
        if call.when == "call" and BUDGET_KEY in item.stash:
            report.mia_budget = item.stash[BUDGET_KEY]
        if call.when == "teardown" and self._engine is not None:
            for problem in self._engine.problems():
                self._warn(problem)
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Close before the aggregator writes its reports (and before xdist
        sends this worker's output), so unclaimed calls are counted."""
        self._close()

