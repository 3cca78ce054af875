"""Runs samples concurrently for one pytest process.

The engine puts the parts together: a ``LoopThread`` for the HTTP calls, a
``Prefetcher`` for images, the cache, one ``Caller`` per role, and
``pipeline.run_sample`` for each sample.  The runtime (with ``feeder.Feeder``)
decides what to submit ahead of its turn; an item then waits for its own
sample's result.  A sample is submitted at most once per item run, so the
server sees one model call and one judge call per sample and protocol; a
result is handed out once, so a rerun (pytest-rerunfailures) really runs the
sample again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import dataclasses
import hashlib
import threading
from collections.abc import Sequence
from typing import Any

from ..calls import mocking
from ..calls.budget import Budget
from ..calls.cache import AsyncCache, ResponseCache
from ..calls.caller import Caller
from ..calls.client import judge_sampling, model_sampling
from ..calls.endpoint import endpoints
from ..calls.ratelimit import AdaptiveLimiter, RateCap
from ..config.settings import Settings
from ..data.images import PreparedImage, prepare, thumbnail_uri
from ..data.samples import Sample, Source
from ..protocols.base import Protocol
from ..protocols.sampling import judge_sees_image
from ..result import SampleRecord
from .handoff import Outbox
from .loop import LoopThread
from .pipeline import BudgetSpent, Context, Judging, SampleFailure, new_record, run_sample
from .prefetch import Prefetcher

__all__ = ["BudgetSpent", "Engine", "SampleFailure"]

#: Seconds an abandoned sample's task may take to end once cancelled (its
#: cleanup writes the record) before its record is handed over as it stands.
ABANDON_WAIT = 10.0


@dataclasses.dataclass(eq=False)
class _Job:
    """One submission of a sample.  ``task`` and ``abandoned`` are read and
    written on the loop thread only, so abandoning never races the start."""

    record: SampleRecord
    future: concurrent.futures.Future[SampleRecord] | None = None
    task: asyncio.Task[SampleRecord] | None = None
    abandoned: bool = False


class Engine:
    """Submits samples, hands out their results, and cleans up after itself."""

    def __init__(
        self,
        settings: Settings,
        source: Source,
        protocols: Sequence[Protocol],
        cache: ResponseCache | None,
        workers: int = 1,
        model_run: str | None = None,
        handoff: tuple[str, ResponseCache] | None = None,
        worker: str | None = None,
    ) -> None:
        """``handoff``: on an xdist worker, the key and the store where each
        finished record is also left for the controller (handoff.py):
        ``cache`` itself, or one of its own.  ``worker``: the xdist worker's
        id; its budget spend is shared through that store."""
        self.settings = settings
        self.source = source
        self.loop = LoopThread()
        self.images: Prefetcher[tuple[PreparedImage, str | None]] = Prefetcher(self._prepare_image)
        self.cache = AsyncCache(cache) if cache is not None else None
        # Where finished records go for the xdist controller.
        self._outbox = Outbox.of(handoff, cache, self.cache)
        self._jobs: dict[int, _Job] = {}
        self._lock = threading.Lock()
        self._limiters: dict[str, AdaptiveLimiter] = {}  # one per host (URL), see _build_context
        shared = self._outbox.budget_share(worker) if self._outbox is not None and worker else None
        self.budget = Budget.of(settings, shared)
        self._context = self._build_context(tuple(protocols), workers, model_run)

    # -- parts ---------------------------------------------------------------

    def _build_context(self, protocols: tuple[Protocol, ...], workers: int, model_run: str | None) -> Context:
        s = self.settings
        model_caller, judgings = _callers(s, protocols, workers, self._limiters)
        # The weights behind the model name (journal.py): a revision, or the run.
        weights = {"revision": s.model_revision} if s.model_revision else {"run": model_run} if model_run else {}
        return Context(s, judgings, model_caller, self.cache, self._image, weights, self.budget)

    def _prepare_image(self, index: int) -> tuple[PreparedImage, str | None]:
        raw = self.source.image_bytes(index)
        # The stored bytes' hash, not the sent ones': re-encoding may change with Pillow, the image does not.
        image = dataclasses.replace(prepare(raw, self.settings.image_max_side), source_sha256=hashlib.sha256(raw).hexdigest())
        if self.cache is not None:
            image.sha256  # noqa: B018 - hashed on this thread, not on the loop
        # Made where the image is: an xdist controller writing the HTML never sees image bytes.
        thumbnail = thumbnail_uri(image.data) if self.settings.html else None
        return image, thumbnail

    async def _image(self, sample: Sample) -> tuple[PreparedImage, str | None]:
        return await asyncio.wrap_future(self.images.take(sample.index))

    # -- samples -------------------------------------------------------------

    def submit(self, sample: Sample) -> concurrent.futures.Future[SampleRecord]:
        """Start a sample's pipeline unless it is running or done unclaimed;
        returns its future, done when the pipeline has ended."""
        with self._lock:
            job = self._jobs.get(sample.index)
            if job is None:
                job = _Job(new_record(sample))
                self._jobs[sample.index] = job
                job.future = self.loop.submit(self._run(sample, job))
            assert job.future is not None
            return job.future

    async def _run(self, sample: Sample, job: _Job) -> SampleRecord:
        record = job.record
        if job.abandoned:  # given up before it started: nothing to run or write
            return record
        job.task = asyncio.current_task()
        try:
            return await run_sample(self._context, sample, record)
        finally:
            limiter = self._context.model.limiter
            record["concurrency_limit"] = limiter.limit
            if self._outbox is not None:
                await self._outbox.leave(sample.index, record)

    def prefetch_image(self, sample: Sample) -> None:
        """Prepare a sample's image ahead of its calls (costs no API call)."""
        if sample.problem is None:
            self.images.prefetch(sample.index)

    def result(self, sample: Sample, timeout: float | None = None) -> SampleRecord:
        """Wait for a sample's record and claim it; raises ``SampleFailure``.
        Claimed means forgotten here: asking again runs the sample again."""
        self.submit(sample)
        job = self._jobs[sample.index]
        assert job.future is not None
        try:
            # Done means the task ended: the record is no longer written.
            return job.future.result(timeout)
        finally:
            if job.future.done():
                with self._lock:
                    if self._jobs.get(sample.index) is job:
                        del self._jobs[sample.index]

    def abandon(self, sample: Sample) -> SampleRecord | None:
        """Cancel a sample whose item gave up waiting (a pytest-timeout); its
        record says what it had obtained and paid for.

        The record is handed over only once the task has ended (its cleanup
        writes to it), as a copy made on the loop: the caller writes the
        reason and an xdist worker serializes it, neither while the loop
        thread may still change it.  None if the loop does not answer."""
        with self._lock:
            job = self._jobs.pop(sample.index, None)
        if job is None:
            return None
        try:
            return self.loop.run(self._stop(job), ABANDON_WAIT + 5)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            return None

    @staticmethod
    async def _stop(job: _Job) -> SampleRecord:
        """On the loop: cancel the job's task, wait for it to end, copy its record."""
        job.abandoned = True
        task = job.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=ABANDON_WAIT)
        return copy.deepcopy(job.record)

    def _budget_spent(self) -> bool:
        """Whether the budget is spent, also by other xdist workers (a
        worker shut down because another one's spend stopped the run)."""
        assert self.budget is not None
        try:
            return self.loop.run(self.budget.check(), ABANDON_WAIT) is not None
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            return self.budget.spent is not None

    def problems(self) -> list[str]:
        """Warnings worth showing once (an unusable cache, a host that asked
        for a long pause)."""
        found = list(self.cache.problems) if self.cache is not None else []
        return found + [limiter.notice for limiter in list(self._limiters.values()) if limiter.notice]

    # -- shutdown ------------------------------------------------------------

    def close(self) -> list[SampleRecord]:
        """Cancel what is still in flight, release every resource, and return
        the records of samples submitted but never claimed (look-ahead cut
        short by -x or --maxfail): their calls were paid for too."""
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
        if self.budget is not None and self._budget_spent():
            # A run stopped by its budget lets the calls in flight finish (they
            # are paid for): no new call starts, so this wait is short.
            concurrent.futures.wait([job.future for job in jobs if job.future is not None], timeout=self.settings.timeout)
        for job in jobs:
            if job.future is not None:
                job.future.cancel()
        # Read once the loop below has ended every task.
        unclaimed = [job.record for job in jobs]
        context = self._context

        async def aclose() -> None:
            await context.model.close()
            for judging in context.judgings:
                await judging.judge.close()

        self.loop.close(aclose)
        self.images.close()
        if self.cache is not None:
            self.cache.close()
        if self._outbox is not None:
            self._outbox.close()
        # Also a sample judged from the cache alone: an interrupted run reports it.
        return [record for record in unclaimed if record["calls"]["model"] or record["calls"]["judge"] or record["status"] != "failed"]


def _callers(
    s: Settings, protocols: tuple[Protocol, ...], workers: int, limiters: dict[str, AdaptiveLimiter]
) -> tuple[Caller, tuple[Judging, ...]]:
    """The model's caller and one judging per protocol.  ``limiters``: the
    engine's, one per host (URL), filled here."""
    model, judge = endpoints(s)
    # One limiter per host: a model and a judge served by the same host
    # share its rate limit.  The bound is what the engine can have in
    # flight; the limiter lowers it while the host answers 429.
    bound = s.concurrency * s.judge_repeats * len(protocols)
    caps: dict[str, RateCap] = {}
    # --mia-rpm is for the whole run: each of W xdist workers takes 1/W.
    rpm = s.rpm / workers if s.rpm else None
    for endpoint in (model, judge):
        limiters.setdefault(endpoint.url, AdaptiveLimiter(bound))
        if rpm:
            caps.setdefault(endpoint.url, RateCap(rpm))
    # The HTTP clients: one pool for both roles, a local one for the built-in mock.
    clients = mocking.http_clients(s)
    common: dict[str, Any] = {"timeout": s.timeout, "max_retries": s.max_retries, "rate_limit_wait": s.rate_limit_wait}
    model_caller = Caller(
        model,
        model_sampling(s),
        limiter=limiters[model.url],
        rate_cap=caps.get(model.url),
        http_client=clients["model"],
        **common,
    )
    # One judge caller per protocol, each with the protocol's sampling
    # settings; they share the judge endpoint's limiter, rate cap,
    # connection pool and breaker (a dead judge is dead for every protocol).
    judgings: list[Judging] = []
    for protocol in protocols:
        judge_caller = Caller(
            judge,
            judge_sampling(s, protocol),
            limiter=limiters[judge.url],
            rate_cap=caps.get(judge.url),
            require_text=True,
            http_client=clients["judge"],
            breaker=judgings[0].judge.breaker if judgings else None,
            **common,
        )
        judgings.append(Judging(protocol, judge_sees_image(s, protocol), judge_caller))
    return model_caller, tuple(judgings)
