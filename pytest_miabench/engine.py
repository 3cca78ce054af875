"""Runs samples: image -> model call -> judge call -> verdict, many at a time.

pytest runs items one after another; a sample is mostly waiting on two HTTP
calls.  So each pytest process owns one asyncio loop on a background thread,
and an item's whole pipeline is submitted there ahead of its turn (bounded
look-ahead, decided by ``runner.py``).  The item then just waits for its own
result.  Each sample is submitted at most once per process, so the server
sees exactly one model call and one judge call per sample.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from . import cache as cache_mod
from .client import IMAGE_SLOT, Caller, CallError, CallStats, Completion, Endpoint, encode_body
from .dataset import Sample, SampleDataError, Source
from .images import ImageError, PreparedImage, prepare
from .protocols.base import SCORED, Protocol, SampleSpec, Verdict
from .result import blank_result
from .settings import Settings

FIRST_REQUEST_HEAD_START = 0.25  # seconds the first sample's call may go alone
SETTLE_DELAY = 0.05  # seconds after the first window is out before on_settled


class SampleFailure(Exception):
    """The sample could not be run.  ``result`` keeps whatever was obtained
    (e.g. the model's answer when only the judge failed)."""

    def __init__(self, stage: str, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message
        self.result = result


def model_endpoint(settings: Settings) -> Endpoint:
    assert settings.model is not None
    return Endpoint("model", settings.model, settings.base_url, settings.api_key_env, settings.api_key_env_explicit)


def judge_endpoint(settings: Settings) -> Endpoint:
    return Endpoint(
        "judge", settings.judge_model, settings.judge_base_url, settings.judge_api_key_env, settings.judge_api_key_env_explicit
    )


def _empty_result(sample: Sample) -> dict[str, Any]:
    spec = sample.spec
    components = []
    if spec is not None:
        components = [
            {"text": text, "type": ctype, "weight": weight, "score": None}
            for text, ctype, weight in zip(spec.components, spec.component_types, spec.weights)
        ]
    result = blank_result(sample.index, sample.type, components)
    result["instruction"] = spec.instruction if spec is not None else None
    return result


class Engine:
    """One per pytest process: an event loop thread, two callers, the cache."""

    def __init__(
        self,
        settings: Settings,
        source: Source,
        protocol: Protocol,
        response_cache: cache_mod.ResponseCache | None,
        judge_image: bool,
        on_settled: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.protocol = protocol
        self.cache = response_cache
        self.judge_image = judge_image
        self.model_endpoint = model_endpoint(settings)
        self.judge_endpoint = judge_endpoint(settings)
        self._futures: dict[int, concurrent.futures.Future[dict[str, Any]]] = {}
        self._images: dict[int, concurrent.futures.Future[tuple[PreparedImage, str | None]]] = {}
        self._lock = threading.Lock()
        # The first request waits on the openai import (~0.4 s of pure
        # Python), the clients and the SDK's first-call set-up; image work
        # on other threads competes with them for the GIL.  So the first
        # sample's image starts at once, the rest of the window's when their
        # pipelines start (on the loop, after the clients are built), and
        # the prefetched next window's once the first call has come back.
        self._prefetch_held: list[int] | None = []
        # The other samples' calls wait until the first request is on its
        # way: the SDK's first call does set-up work between awaits, and 31
        # other requests being built meanwhile would delay it.
        self._first: int | None = None
        self._first_sent: asyncio.Event | None = None
        # Called once on the loop thread when the first window's requests
        # are all out, or when the first sample ends: a quiet moment.
        self._on_settled = on_settled
        self._requests_sent = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._callers: tuple[Caller, Caller] | None = None
        # Image work is CPU-bound; two threads overlap it with network waits
        # without letting 32 huge decodes run at once.
        self._image_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="mia-image")

    # -- lifecycle ---------------------------------------------------------

    def _start(self, first: Sample) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            # The first sample's image is read and prepared on an image
            # thread while the loop thread builds the clients (importing
            # openai takes ~0.4 s): the two make the first request's path.
            if first.problem is None:  # the caller holds self._lock
                self._images[first.index] = self._image_pool.submit(self._prepare_image, first.index)
            self._first = first.index
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="mia-bench-loop", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
            loop.call_soon_threadsafe(self._get_callers)
        return self._loop

    def close(self) -> None:
        """Cancel what is still in flight and release the loop and clients."""
        loop = self._loop
        if loop is not None:
            for future in self._futures.values():
                future.cancel()
            try:
                asyncio.run_coroutine_threadsafe(self._aclose(), loop).result(timeout=10)
            except Exception:  # closing must never mask the run's own outcome
                pass
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            if not loop.is_running():
                loop.close()
            self._loop = None
        self._image_pool.shutdown(wait=False, cancel_futures=True)
        if self.cache is not None:
            self.cache.close()

    async def _aclose(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._callers is not None:
            for caller in self._callers:
                await caller.close()

    # -- submission --------------------------------------------------------

    def submit(self, sample: Sample) -> concurrent.futures.Future[dict[str, Any]]:
        """Start a sample's pipeline unless it was started already."""
        with self._lock:
            future = self._futures.get(sample.index)
            if future is None:
                loop = self._start(sample)
                future = asyncio.run_coroutine_threadsafe(self._run(sample), loop)
                self._futures[sample.index] = future
            return future

    def prefetch_image(self, sample: Sample) -> None:
        """Prepare a sample's image ahead of its API calls.  Costs no API
        call, so it may run further ahead than the call window: a slow decode
        then no longer holds the window up."""
        if sample.problem is not None:
            return
        with self._lock:
            if sample.index in self._images or sample.index in self._futures:
                return
            if self._prefetch_held is None:
                self._images[sample.index] = self._image_pool.submit(self._prepare_image, sample.index)
            else:
                self._prefetch_held.append(sample.index)

    def _release_prefetch(self) -> None:
        """A call has come back: start the held prefetches, in run order."""
        if self._prefetch_held is None:
            return
        with self._lock:
            held, self._prefetch_held = self._prefetch_held or [], None
            for index in held:
                if index not in self._images:
                    self._images[index] = self._image_pool.submit(self._prepare_image, index)

    def _image_future(self, sample: Sample) -> concurrent.futures.Future[tuple[PreparedImage, str | None]]:
        with self._lock:
            future = self._images.pop(sample.index, None)
            if self._prefetch_held and sample.index in self._prefetch_held:
                self._prefetch_held.remove(sample.index)
        if future is None:
            future = self._image_pool.submit(self._prepare_image, sample.index)
        return future

    def result(self, sample: Sample) -> dict[str, Any]:
        """Wait for a sample's result; raises ``SampleFailure``."""
        return self.submit(sample).result()

    # -- the pipeline ------------------------------------------------------

    def _get_callers(self) -> tuple[Caller, Caller]:
        if self._callers is None:
            s = self.settings
            import openai

            # One connection pool and one TLS context (loading the CA
            # bundle costs ~20 ms a client) for both roles.
            http_client = openai.DefaultAsyncHttpxClient(event_hooks={"request": [self._request_hook]})
            self._callers = (
                Caller(self.model_endpoint, s.timeout, s.max_retries, http_client),
                Caller(self.judge_endpoint, s.timeout, s.max_retries, http_client),
            )
        return self._callers

    async def _run(self, sample: Sample) -> dict[str, Any]:
        started = time.perf_counter()
        result = _empty_result(sample)
        try:
            await self._pipeline(sample, result)
        except SampleFailure as failure:
            result["reason"] = failure.message
            result["failed_stage"] = failure.stage
            raise
        except Exception as exc:
            # A bug or an unforeseen reply must not lose the sample: it is
            # reported as failed with the cause, and the run goes on.
            message = f"row {sample.index}: unexpected {type(exc).__name__}: {exc}"
            result["reason"] = message
            result["failed_stage"] = "internal"
            raise SampleFailure("internal", message, result) from exc
        finally:
            result["seconds"] = round(time.perf_counter() - started, 4)
            self._release_prefetch()  # e.g. every call answered from the cache
            if sample.index == self._first:
                self._first_sent_event().set()  # it sent nothing (cache, failure): release the others
            self._settled()
        return result

    def _settled(self) -> None:
        callback, self._on_settled = self._on_settled, None
        if callback is not None:
            callback()

    def _first_sent_event(self) -> asyncio.Event:
        if self._first_sent is None:
            self._first_sent = asyncio.Event()  # created on the loop thread
        return self._first_sent

    async def _request_hook(self, request: Any) -> None:
        """httpx calls this as each request goes out."""
        if self._first_sent is not None and not self._first_sent.is_set():
            self._first_sent.set()
        self._requests_sent += 1
        if self._on_settled is not None and self._requests_sent >= len(self._futures):
            # Every sample submitted so far has a call out; let the writes finish.
            asyncio.get_running_loop().call_later(SETTLE_DELAY, self._settled)

    async def _pipeline(self, sample: Sample, result: dict[str, Any]) -> None:
        if sample.problem is not None or sample.spec is None:
            raise SampleFailure("dataset", sample.problem or f"row {sample.index}: unusable", result)
        spec = sample.spec
        try:
            image, thumbnail = await asyncio.wrap_future(self._image_future(sample))
        except (ImageError, SampleDataError) as exc:
            text = str(exc)
            prefix = f"row {sample.index}: "
            raise SampleFailure("image", text if text.startswith(prefix) else f"{prefix}image: {text}", result) from None
        result["image"] = {
            "mime": image.mime,
            "width": image.width,
            "height": image.height,
            "format": image.source_format,
            "reencoded": image.reencoded,
            "bytes": len(image.data),
        }
        result["thumbnail"] = thumbnail
        model_caller, judge_caller = self._get_callers()
        first_sent = self._first_sent_event()
        if sample.index != self._first and not first_sent.is_set():
            try:  # bounded: the first sample may be slow to start (a huge image)
                await asyncio.wait_for(first_sent.wait(), FIRST_REQUEST_HEAD_START)
            except asyncio.TimeoutError:
                pass

        completion = await self._model_answer(model_caller, spec, image, result)
        response = completion.text if completion.text is not None else ""
        prompt = self.protocol.build_prompt(spec, response)
        judge_image = image if self.judge_image else None
        # Repeated verdicts are independent calls: ask them all at once.
        pairs = await asyncio.gather(
            *(self._judge(judge_caller, spec, prompt, judge_image, r, result) for r in range(self.settings.judge_repeats))
        )
        replies = [reply for reply, _ in pairs]
        verdicts = [verdict for _, verdict in pairs]
        result["judge_reply"] = replies[0]
        if len(replies) > 1:
            result["judge_replies"] = replies
            result["judge_scores"] = [v.score for v in verdicts]
        combined = combine(verdicts)
        result["status"] = combined.status
        result["score"] = combined.score
        result["reason"] = combined.reason
        result["metrics"] = dict(combined.metrics)
        for component, value in zip(result["components"], combined.components):
            component["score"] = value

    async def _judge(
        self,
        caller: Caller,
        spec: SampleSpec,
        prompt: str,
        image: PreparedImage | None,
        repeat: int,
        result: dict[str, Any],
    ) -> tuple[str | None, Verdict]:
        """One verdict, re-asking up to ``judge_retries`` times while the
        reply cannot be parsed.  Each re-ask and repeat is its own cache entry."""
        reply: str | None = None
        verdict: Verdict | None = None
        for reask in range(self.settings.judge_retries + 1):
            if reask:
                result["judge_reasks"] = result.get("judge_reasks", 0) + 1
            completion = await self._judge_reply(caller, prompt, image, repeat, reask, result)
            reply = completion.text
            verdict = self.protocol.parse(spec, reply)
            if verdict.status == SCORED:
                break
        assert verdict is not None
        return reply, verdict

    def _prepare_image(self, index: int) -> tuple[PreparedImage, str | None]:
        image = prepare(self.source.image_bytes(index), self.settings.image_max_side)
        if self.cache is not None:
            image.sha256  # noqa: B018 - hashed here, not on the thread that drives the requests
        thumbnail = None
        if self.settings.html:
            # Made here, on the process that has the image: an xdist
            # controller writing the HTML never sees image bytes.
            from .html import thumbnail_uri

            thumbnail = thumbnail_uri(image.data)
        return image, thumbnail

    async def _cached_call(
        self,
        layer: str,
        caller: Caller,
        key_parts: Callable[[], dict[str, Any]],
        body: Callable[[], bytes],
        result: dict[str, Any],
        read_cache: bool = True,
    ) -> Completion:
        # Keys (hashes of the image and the prompt) only when there is a cache.
        key = cache_mod.cache_key(key_parts()) if self.cache is not None else ""
        if self.cache is not None and read_cache:
            hit = self.cache.get(layer, key)
            if hit is not None:
                result["cached"][layer] = True
                completion = Completion.from_json(hit)
                usage = result["usage"][layer]
                usage["cached_prompt_tokens"] += completion.prompt_tokens
                usage["cached_completion_tokens"] += completion.completion_tokens
                return completion
        stats = CallStats()
        try:
            completion = await caller.complete(body(), stats)
        except CallError as exc:
            result["calls"][layer] += stats.attempts
            result["retries"] += max(0, stats.attempts - 1)
            raise SampleFailure(layer, f"row {result['index']}: {exc}", result) from None
        finally:
            self._release_prefetch()
        result["calls"][layer] += stats.attempts
        result["retries"] += stats.attempts - 1
        usage = result["usage"][layer]
        usage["prompt_tokens"] += completion.prompt_tokens
        usage["completion_tokens"] += completion.completion_tokens
        if self.cache is not None:
            self.cache.put(layer, key, completion.to_json())
        return completion

    async def _model_answer(
        self, caller: Caller, spec: SampleSpec, image: PreparedImage, result: dict[str, Any]
    ) -> Completion:
        s = self.settings
        settings: dict[str, Any] = {}
        if s.max_tokens is not None:
            settings["max_tokens"] = s.max_tokens
        if s.temperature is not None:
            settings["temperature"] = s.temperature
        content = [
            {"type": "image_url", "image_url": {"url": IMAGE_SLOT}},
            {"type": "text", "text": spec.instruction},
        ]
        params = {"model": caller.endpoint.model, "messages": [{"role": "user", "content": content}], **settings}

        def key_parts() -> dict[str, Any]:
            return {
                "v": cache_mod.SCHEMA_VERSION,
                "url": caller.endpoint.url,
                "model": caller.endpoint.model,
                "settings": settings,
                "image": {"sha256": image.sha256, "mime": image.mime},
                "text": spec.instruction,
            }

        completion = await self._cached_call(cache_mod.MODEL, caller, key_parts, lambda: encode_body(params, image), result)
        result["response"] = completion.text
        result["finish_reason"] = completion.finish_reason
        return completion

    async def _judge_reply(
        self,
        caller: Caller,
        prompt: str,
        image: PreparedImage | None,
        repeat: int,
        reask: int,
        result: dict[str, Any],
    ) -> Completion:
        protocol = self.protocol
        settings = judge_settings(self.settings, protocol)
        content = protocol.judge_content(prompt, IMAGE_SLOT if image is not None else None)
        params = {"model": caller.endpoint.model, "messages": [{"role": "user", "content": content}], **settings}

        def key_parts() -> dict[str, Any]:
            parts: dict[str, Any] = {
                "v": cache_mod.SCHEMA_VERSION,
                "url": caller.endpoint.url,
                "model": caller.endpoint.model,
                "protocol": protocol.name,
                "prompt_version": protocol.prompt_version,
                "settings": settings,
                "prompt": prompt,
                "image": None if image is None else {"sha256": image.sha256, "detail": protocol.image_detail},
            }
            # The first verdict keeps the plain key, so K=1 and K=3 share it.
            if repeat:
                parts["repeat"] = repeat
            if reask:
                parts["reask"] = reask
            return parts

        return await self._cached_call(
            cache_mod.JUDGE, caller, key_parts, lambda: encode_body(params, image), result, read_cache=not self.settings.rejudge
        )


def judge_settings(settings: Settings, protocol: Protocol) -> dict[str, Any]:
    """The judge's sampling settings: the protocol's, unless overridden."""
    temperature = settings.judge_temperature if settings.judge_temperature is not None else protocol.temperature
    max_tokens = settings.judge_max_tokens if settings.judge_max_tokens is not None else protocol.max_tokens
    chosen: dict[str, Any] = {}
    if temperature is not None:
        chosen["temperature"] = temperature
    if max_tokens is not None:
        chosen["max_tokens"] = max_tokens
    return chosen


def combine(verdicts: list[Verdict]) -> Verdict:
    """Several verdicts on one response (``--mia-judge-repeats``) -> one:
    the mean of the usable ones.  With none usable, the first one stands."""
    if len(verdicts) == 1:
        return verdicts[0]
    usable = [v for v in verdicts if v.score is not None]
    if not usable:
        return verdicts[0]

    def mean(values: list[float]) -> float:
        return math.fsum(values) / len(values)

    positions = len(usable[0].components)
    components = []
    for i in range(positions):
        values = [c for v in usable if i < len(v.components) and (c := v.components[i]) is not None]
        components.append(mean(values) if values else None)
    keys = sorted({key for v in usable for key in v.metrics})
    metrics = {key: mean([v.metrics[key] for v in usable if key in v.metrics]) for key in keys}
    status = SCORED if any(v.status == SCORED for v in usable) else usable[0].status
    score = mean([v.score for v in usable if v.score is not None])
    dropped = len(verdicts) - len(usable)
    reason = f"{dropped} of {len(verdicts)} verdicts unusable" if dropped else ""
    return Verdict(status, score, tuple(components), metrics, reason)
