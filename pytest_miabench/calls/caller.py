"""Calls to OpenAI-compatible chat endpoints, through the openai SDK's typed API.

One ``Caller`` per role (model, judge).  A call goes out as
``client.chat.completions.with_raw_response.create(...)`` (raw, for the
rate-limit headers), or ``client.responses.with_raw_response.create(...)``
for a role on the Responses API (``--mia-api responses``: the same request,
carried over part for part); the SDK's own retry loop is off (``max_retries=0``)
because the policy here differs from it in three ways it cannot express:

* 429s are retried until a time budget is spent, not a count, and every
  standard header is honoured (``ratelimit.server_ask``); the endpoint's
  concurrency shrinks and grows back (``ratelimit.AdaptiveLimiter``);
* a reasoning model that refuses ``max_tokens`` or a non-default temperature
  is asked again the way it accepts, and the deviation is recorded;
* the first calls of a role failing the same systematic way (connection
  refused, DNS, 401/403/404) trip a breaker that ends the session at once.

Only ``openai`` exception types (and ``MalformedReply``, a 200 whose body is
not a chat completion) are retried: a bug in this package is never retried
as a server fault.  Every attempt is counted, the paid ones included.

Each attempt is classify → decide → act: ``classify.classify`` names what
it met, ``policy.decide`` (a pure function) says what to do about it, and
``Caller`` does it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .classify import classify
from .client import Sampling
from .endpoint import Endpoint, api_path, open_client
from .policy import (
    Accept,
    BreakerState,
    Decision,
    Fail,
    Hold,
    Notice,
    RateLimited,
    Replied,
    Resend,
    Retry,
    Spent,
    State,
    Trip,
    decide,
    seconds_text,
)
from .ratelimit import AdaptiveLimiter, HostPaused, RateCap, Slot, server_ask
from .replies import Completion, MalformedReply, completion_of, response_completion_of, responses_input
from .scrub import scrub, short
from .transport import proxy_for


class CallError(Exception):
    """A call that did not produce a reply, after any retries."""

    def __init__(self, endpoint: Endpoint, detail: str, attempts: int) -> None:
        # Error bodies may echo the Authorization header back at us.
        detail = scrub(detail, endpoint.secrets())
        self.endpoint = endpoint
        self.detail = detail
        self.attempts = attempts
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{endpoint.role} call to {endpoint.host} ({endpoint.model}) failed{tries}: {detail}")


class EndpointDown(CallError):
    """The role's breaker tripped: its endpoint fails every call the same way."""


@dataclass
class CallStats:
    """What one logical call cost: attempts sent (each may be paid)."""

    attempts: int = 0
    rate_limited: int = 0
    # Attempts sent again the way the endpoint accepts (``Sampling``): an
    # adaptation, not a retry of a failure.
    resent: int = 0


class Breaker:
    """Ends the session when an endpoint is plainly unusable.

    Holds the role's ``policy.BreakerState`` (the policy decides when it
    trips: ``policy.breaker_failed``) and wakes the calls waiting out a
    backoff once it trips.  Shared by every call of the endpoint.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.state = BreakerState(f"{endpoint.role} endpoint {endpoint.host} ({endpoint.model})")
        self.tripped: asyncio.Event = asyncio.Event()

    @property
    def message(self) -> str:
        return self.state.message or ""

    def update(self, state: BreakerState) -> None:
        self.state = state
        if state.tripped:
            self.tripped.set()


class Caller:
    """One role's client; used from the engine's event loop only."""

    def __init__(
        self,
        endpoint: Endpoint,
        sampling: Sampling,
        *,
        timeout: float,
        max_retries: int,
        rate_limit_wait: float,
        limiter: AdaptiveLimiter,
        rate_cap: RateCap | None,
        http_client: Any,
        require_text: bool = False,
        breaker: Breaker | None = None,
    ) -> None:
        """``breaker``: shared with the other callers of the same endpoint
        (one per judge protocol): a dead judge is dead for every protocol."""
        self.endpoint = endpoint
        self.sampling = sampling
        self.api = sampling.api  # the sampling names its parameters for this API
        self.timeout = timeout
        self.max_retries = max_retries
        self.rate_limit_wait = rate_limit_wait
        self.limiter = limiter
        self.rate_cap = rate_cap
        self.breaker = breaker if breaker is not None else Breaker(endpoint)
        # A judge reply without text (null content, a content filter) is a
        # failed call, retried, never a verdict of 0 stored in the cache.
        self.require_text = require_text
        # Retry jitter from a private generator: the global one is reseeded
        # per test by pytest-randomly and may be seeded by user code.
        self._rng = random.Random()
        # A connection failure names the proxy the calls go through, if any:
        # a dead proxy is not a dead endpoint.
        self.proxy = proxy_for(http_client, endpoint.url)
        self._client = open_client(endpoint, timeout=timeout, http_client=http_client)

    async def close(self) -> None:
        await self._client.close()

    async def complete(self, messages: list[dict[str, Any]], stats: CallStats) -> Completion:
        """One chat completion, retried on transient failures; raises CallError."""
        spent = Spent()
        while True:
            self._raise_if_tripped(stats)
            try:
                async with self.limiter.slot() as slot:
                    if self.rate_cap is not None:
                        await self.rate_cap.wait()
                    completion, decision = await self._attempt(messages, stats, slot, spent)
            except HostPaused as exc:  # the host asked for a pause beyond the budget
                raise CallError(self.endpoint, str(exc), stats.attempts) from None
            if completion is not None:
                return completion
            spent, action = decision.spent, decision.action
            if decision.hold is not None:
                # Every new request, this retry included, waits out the pause
                # in the limiter's queue: no storm of retries meanwhile.
                self._hold(decision.hold)
            elif isinstance(action, Retry) and action.delay > 0:
                # Our own backoff: wait outside the slot, and stop if the breaker trips.
                try:
                    await asyncio.wait_for(self.breaker.tripped.wait(), action.delay)
                except asyncio.TimeoutError:
                    pass

    async def _attempt(
        self, messages: list[dict[str, Any]], stats: CallStats, slot: Slot, spent: Spent
    ) -> tuple[Completion | None, Decision]:
        """One request, in its slot: classified, decided, and acted on but
        for the wait before a retry (the completion, if accepted)."""
        self._raise_if_tripped(stats)  # tripped while this call queued for its slot
        sent = self.sampling.params()
        stats.attempts += 1
        completion: Completion | None = None
        try:
            # The whole request, body included, is bounded: the
            # client's own timeout only bounds each read.
            completion, headers = await asyncio.wait_for(self._send(messages, sent), self.timeout)
        except Exception as exc:
            outcome = classify(
                exc,
                endpoint=self.endpoint,
                api=self.api,
                proxy=self.proxy,
                timeout=self.timeout,
                host_answered=self.limiter.successes > 0,
                now=time.time(),
            )
            if outcome is None:
                raise  # not a server's doing: never retried
        else:
            outcome = Replied(server_ask(headers, time.time()))  # a limit with nothing left
        if isinstance(outcome, Replied):
            self.limiter.on_success()
        elif isinstance(outcome, RateLimited):
            stats.rate_limited += 1
            self.limiter.on_rate_limited(slot)
        decision = decide(outcome, self._state(spent, sent))
        self._act(decision, stats)
        return completion, decision

    def _state(self, spent: Spent, sent: Mapping[str, Any]) -> State:
        """What the policy decides from, now."""
        return State(
            now=asyncio.get_running_loop().time(),
            jitter=self._rng.random(),
            spent=spent,
            breaker=self.breaker.state,
            sampling=self.sampling,
            sent=sent,
            max_retries=self.max_retries,
            budget=self.rate_limit_wait,
        )

    def _act(self, decision: Decision, stats: CallStats) -> None:
        """Do what ``decision`` says, in the attempt's slot: raise for a
        failed call, adapt the sampling, hold the host after a reply (a
        retry's hold and wait are ``complete``'s, once the slot is free)."""
        self.breaker.update(decision.breaker)
        if decision.notice is not None:
            self._notice(decision.notice)
        action = decision.action
        if isinstance(action, Trip):
            raise EndpointDown(self.endpoint, action.message, stats.attempts)
        if isinstance(action, Fail):
            raise CallError(self.endpoint, action.message, stats.attempts)
        if isinstance(action, Resend):
            stats.resent += 1  # the same request the accepted way: not a retry
            if action.adapt is not None:
                self.sampling.adapt(action.adapt)
        if isinstance(action, Accept) and decision.hold is not None:
            self._hold(decision.hold)

    def _hold(self, hold: Hold) -> None:
        """Pause the host's requests as the server asked, or refuse them
        until then (a pause beyond the budget: each fails with the reason)."""
        if hold.refusal is not None:
            self.limiter.refuse(hold.ask.seconds, hold.refusal)
        else:
            self.limiter.pause(hold.ask.seconds)

    def _notice(self, notice: Notice) -> None:
        """Say once per host (the limiter is the host's) that it asked for a
        long wait: a run that seems stuck says why."""
        if self.limiter.notice is None:
            ask = notice.ask
            text = f"{self.endpoint.host} asked for a pause of {seconds_text(ask.seconds)} s ({ask.header}); {notice.consequence}"
            self.limiter.notice = scrub(text, self.endpoint.secrets())

    def _raise_if_tripped(self, stats: CallStats) -> None:
        if self.breaker.tripped.is_set():
            raise EndpointDown(self.endpoint, self.breaker.message, stats.attempts)

    async def _send(self, messages: list[dict[str, Any]], params: Mapping[str, Any]) -> tuple[Completion, Any]:
        raw: Any
        if self.api == "responses":
            raw = await self._client.responses.with_raw_response.create(
                model=self.endpoint.model,
                input=responses_input(messages),  # type: ignore[arg-type]  # built as plain dicts
                **params,
            )
        else:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=self.endpoint.model,
                messages=messages,  # type: ignore[arg-type]  # built as plain dicts
                **params,
            )
        try:
            parsed = raw.parse()
        except ValueError as exc:  # the body is not JSON
            raise MalformedReply(f"body is not JSON: {short(str(exc))}") from None
        if isinstance(parsed, str):
            # The SDK hands back the text of a body that is neither JSON nor
            # declared so: an HTML page, a proxy's notice.  Not an OpenAI API.
            kind = short(raw.headers.get("content-type") or "(none)", 80)
            raise MalformedReply(f"HTTP 200 with content type {kind}, not JSON, from POST {api_path(self.endpoint, self.api)}", systematic=True)
        completion = response_completion_of(parsed) if self.api == "responses" else completion_of(parsed)
        if self.require_text and (completion.text is None or completion.finish_reason == "content_filter"):
            raise MalformedReply(f"no usable text (content {'null' if completion.text is None else 'filtered'}, finish_reason {completion.finish_reason})")
        secrets = self.endpoint.secrets()
        # A server that echoes the key must not get it into reports or the cache.
        if completion.text:
            completion.text = scrub(completion.text, secrets)
        if completion.reasoning:
            completion.reasoning = scrub(completion.reasoning, secrets)
        return completion, raw.headers
