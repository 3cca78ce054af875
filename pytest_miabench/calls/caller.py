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
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..config.settings import AZURE_TOKEN_ENV
from .client import Sampling
from .endpoint import Endpoint, api_path, open_client
from .ratelimit import AdaptiveLimiter, Ask, HostPaused, RateCap, RetryBudget, Slot, backoff, server_ask
from .replies import Completion, MalformedReply, completion_of, response_completion_of, responses_input
from .scrub import scrub, short
from .transport import RefusedReply, proxy_for

if TYPE_CHECKING:
    import openai

_TRANSIENT_STATUS = {408, 409}
# How many first attempts of a role must fail the same systematic way (and
# none succeed) before the breaker ends the session.
BREAKER_ATTEMPTS = 3
# A wait the server asks for longer than this (seconds) is printed, once per
# host: a run that seems stuck says why.
NOTICE_AFTER = 5.0


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

    Trips when the first ``BREAKER_ATTEMPTS`` attempts of a role all failed
    with the same systematic cause and none succeeded: a dead host, a wrong
    URL, a bad key or model name fail every later call too, and 400 samples
    times seven attempts would take many minutes to say so.  One success
    disarms it for the run: later failures are ordinary, per-sample ones.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.armed = True
        self.causes: list[str] = []
        self.tripped: asyncio.Event = asyncio.Event()
        self.message = ""

    def success(self) -> None:
        self.armed = False

    def failure(self, systematic: str | None, note: str = "") -> None:
        """An attempt failed; ``systematic`` is its cause when every call
        would fail the same way (compared as text), ``note`` what the
        message adds (the path called, a hint)."""
        if not self.armed or self.tripped.is_set():
            return
        if systematic is None:
            self.armed = False
            return
        self.causes.append(systematic)
        if len(self.causes) >= BREAKER_ATTEMPTS and len(set(self.causes)) == 1:
            e = self.endpoint
            self.message = (
                f"{e.role} endpoint {e.host} ({e.model}) is unusable: {systematic} on each of the first "
                f"{len(self.causes)} attempts{note}; the run stops here (the rest of the samples are not run)"
            )
            self.tripped.set()


@dataclass
class _Tries:
    """What one call has spent: its 429 budget and its transient failures
    (against --mia-max-retries)."""

    budget: RetryBudget
    failures: int = 0


@dataclass(frozen=True)
class _Next:
    """After a failed attempt: send again after ``delay`` seconds, or once
    the host's pause for ``ask`` is over (waited in the limiter's queue)."""

    delay: float = 0.0
    ask: Ask | None = None


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
        import openai

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
        self._openai = openai
        # A connection failure names the proxy the calls go through, if any:
        # a dead proxy is not a dead endpoint.
        self.proxy = proxy_for(http_client, endpoint.url)
        self._client = open_client(endpoint, timeout=timeout, http_client=http_client)

    async def close(self) -> None:
        await self._client.close()

    async def complete(self, messages: list[dict[str, Any]], stats: CallStats) -> Completion:
        """One chat completion, retried on transient failures; raises CallError."""
        tries = _Tries(RetryBudget(self.rate_limit_wait))
        while True:
            self._raise_if_tripped(stats)
            try:
                async with self.limiter.slot() as slot:
                    if self.rate_cap is not None:
                        await self.rate_cap.wait()
                    outcome = await self._attempt(messages, stats, slot, tries)
            except HostPaused as exc:  # the host asked for a pause beyond the budget
                raise CallError(self.endpoint, str(exc), stats.attempts) from None
            if isinstance(outcome, Completion):
                return outcome
            if outcome.ask is not None:
                # Every new request, this retry included, waits out the pause
                # in the limiter's queue: no storm of retries meanwhile.
                self._hold(outcome.ask)
            elif outcome.delay > 0:
                # Our own backoff: wait outside the slot, and stop if the breaker trips.
                try:
                    await asyncio.wait_for(self.breaker.tripped.wait(), outcome.delay)
                except asyncio.TimeoutError:
                    pass

    async def _attempt(self, messages: list[dict[str, Any]], stats: CallStats, slot: Slot, tries: _Tries) -> Completion | _Next:
        """One request, in its slot: the completion, or what to do next."""
        openai = self._openai
        self._raise_if_tripped(stats)  # tripped while this call queued for its slot
        sent = self.sampling.params()
        stats.attempts += 1
        try:
            # The whole request, body included, is bounded: the
            # client's own timeout only bounds each read.
            completion, headers = await asyncio.wait_for(self._send(messages, sent), self.timeout)
        except openai.APIStatusError as exc:
            return self._on_status(exc, sent, stats, slot, tries)
        except (openai.APITimeoutError, asyncio.TimeoutError):
            return self._retry(f"request timed out after {self.timeout:g} s", stats, tries)
        except (openai.APIConnectionError, RefusedReply) as exc:
            if (refused := _cause_of_type(exc, RefusedReply)) is not None:
                assert isinstance(refused, RefusedReply)
                self.breaker.failure(refused.systematic)  # None: the endpoint answers, not a dead host
                self._raise_if_tripped(stats)
                raise CallError(self.endpoint, str(refused), stats.attempts) from None
            cause = _root_cause(exc)
            self.breaker.failure(_systematic_connection_error(cause, self.proxy))
            self._raise_if_tripped(stats)
            return self._retry(_connection_failure(cause, self.proxy), stats, tries)
        except MalformedReply as exc:
            if exc.systematic:
                self.breaker.failure(str(exc))
                self._raise_if_tripped(stats)
            return self._retry(f"malformed reply ({exc})", stats, tries)
        self.limiter.on_success()
        self.breaker.success()
        # A limit with nothing left: hold the next requests until it resets.
        if (ahead := server_ask(headers, time.time())) is not None:
            self._hold(ahead)
        return completion

    def _on_status(self, exc: openai.APIStatusError, sent: Mapping[str, Any], stats: CallStats, slot: Slot, tries: _Tries) -> _Next:
        """What an HTTP error status means for the call: wait and retry,
        send again, or fail (CallError)."""
        status, detail = exc.status_code, _status_detail(exc, self.endpoint)
        if status == 429:
            stats.rate_limited += 1
            self.limiter.on_rate_limited(slot)
            ask = server_ask(exc.response.headers, time.time(), status=429)
            delay = ask.seconds if ask is not None else backoff(tries.budget.tries + 1, self._rng)
            self._within_budget(delay, ask, detail, stats, tries)
            return _Next(delay, ask)
        if self.sampling.adapt(exc) or self.sampling.outdated(exc, sent):
            stats.resent += 1  # the same request the accepted way: not a retry
            return _Next()
        if status in _TRANSIENT_STATUS or status >= 500:
            ask = server_ask(exc.response.headers, time.time())
            if ask is not None:
                self._within_budget(ask.seconds, ask, detail, stats, tries, rate_limited=False)
                self._notice(ask)
            return self._retry(detail, stats, tries, ask.seconds if ask is not None else None)
        self.breaker.failure(*_systematic_status(exc, self.endpoint, host_answered=self.limiter.successes > 0, api=self.api))
        self._raise_if_tripped(stats)
        raise CallError(self.endpoint, detail, stats.attempts) from None

    def _retry(self, detail: str, stats: CallStats, tries: _Tries, asked: float | None = None) -> _Next:
        """A transient failure: retry after a backoff (or the wait the server
        asked for), or CallError when the retries are used up."""
        tries.failures += 1
        if tries.failures > self.max_retries:
            raise CallError(self.endpoint, detail, stats.attempts)
        return _Next(asked if asked is not None else backoff(tries.failures, self._rng))

    def _within_budget(self, delay: float, ask: Ask | None, detail: str, stats: CallStats, tries: _Tries, *, rate_limited: bool = True) -> None:
        """CallError, at once, when waiting ``delay`` more would pass the
        call's --mia-rate-limit-wait budget."""
        budget = tries.budget
        if budget.allows(delay, rate_limited=rate_limited):
            return
        if ask is not None and ask.seconds > budget.seconds:
            why = f"server asked to retry after {_seconds_text(ask.seconds)} s ({ask.header}), more than the {budget.seconds:g} s --mia-rate-limit-wait budget"
        else:
            why = f"{budget.message(delay)} (--mia-rate-limit-wait)"
        raise CallError(self.endpoint, f"{detail}; {why}", stats.attempts)

    def _hold(self, ask: Ask) -> None:
        """Pause the host's requests as the server asked; a pause beyond the
        budget fails them instead (each with the reason), never stalls."""
        if ask.seconds > self.rate_limit_wait:
            reason = (
                f"server asked to pause requests for {_seconds_text(ask.seconds)} s ({ask.header}), "
                f"more than the {self.rate_limit_wait:g} s --mia-rate-limit-wait budget"
            )
            self._notice(ask, f"calls to it fail until then (more than the {self.rate_limit_wait:g} s --mia-rate-limit-wait budget)")
            self.limiter.refuse(ask.seconds, reason)
        else:
            self._notice(ask)
            self.limiter.pause(ask.seconds)

    def _notice(self, ask: Ask, consequence: str = "calls wait it out") -> None:
        """Say once per host (the limiter is the host's) that it asked for a
        long wait: a run that seems stuck says why."""
        if ask.seconds > NOTICE_AFTER and self.limiter.notice is None:
            text = f"{self.endpoint.host} asked for a pause of {_seconds_text(ask.seconds)} s ({ask.header}); {consequence}"
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


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost cause of a wrapped error (openai -> httpx -> httpcore -> OSError)."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc


def _cause_of_type(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of ``kind`` in ``exc``'s chain of causes, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _systematic_connection_error(cause: BaseException, proxy: str | None = None) -> str | None:
    if isinstance(cause, ConnectionRefusedError):
        return f"connection refused by the proxy {proxy}" if proxy else "connection refused"
    if isinstance(cause, socket.gaierror):
        return f"host name of the proxy {proxy} not found (DNS)" if proxy else "host name not found (DNS)"
    return None


def _connection_failure(cause: BaseException, proxy: str | None) -> str:
    """A failed connection in words; through a proxy, it is the proxy's
    (the proxy answers an unreachable endpoint with an HTTP error)."""
    what = f"{type(cause).__name__}: {short(str(cause))}"
    return f"connection to the proxy {proxy} failed ({what}); the endpoint was not reached" if proxy else f"connection failed ({what})"


def _error_message(exc: openai.APIStatusError) -> str:
    """What an error reply says: its JSON error message, else its text."""
    body = exc.body
    message = ""
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = str(inner.get("message", "")) if isinstance(inner, dict) else str(inner)
    elif body is not None:
        message = str(body)
    if not message:
        try:  # a plain-text or HTML error page: its own words beat "Error code: 400"
            message = exc.response.text
        except Exception:  # a streamed or closed body has no text to give
            message = ""
    return message


def _status_detail(exc: openai.APIStatusError, endpoint: Endpoint) -> str:
    status = exc.status_code
    message = _error_message(exc)
    detail = f"HTTP {status}"
    if message:
        detail += f": {short(message)}"
    if status == 404 and (hint := _v1_hint(endpoint)):
        detail += f" ({hint})"
    if status in (400, 401, 403) and endpoint.key_withheld():
        flag = "--mia-judge-api-key-env" if endpoint.role == "judge" else "--mia-api-key-env"
        detail += f" (no key sent: ${endpoint.api_key_env} goes only to api.openai.com unless you name it with {flag})"
    elif status in (401, 403) and endpoint.uses_token():
        source = f"${AZURE_TOKEN_ENV}" if endpoint.ad_token() is not None else "azure-identity"
        detail += (
            f" (a Microsoft Entra ID token from {source} was sent instead of a key: it may have expired, "
            "or the identity lacks an Azure OpenAI role such as Cognitive Services OpenAI User)"
        )
    elif status in (401, 403) and endpoint.key() is None:
        detail += f" (no key: ${endpoint.api_key_env} is not set)"
    return detail


def _systematic_status(exc: openai.APIStatusError, endpoint: Endpoint, *, host_answered: bool, api: str = "chat") -> tuple[str | None, str]:
    """The breaker's cause for a status that is not retried (and a note for
    its message): 401, 403 and 404 always fail alike; another 4xx does when
    its body repeats (a proxy's "No connected db"), so the body is part of
    the cause, unless the host has answered a chat completion (then it is
    an API, and its 400s are about the requests).  None: a status that says
    nothing of the endpoint."""
    status, path = exc.status_code, api_path(endpoint, api)
    if status in (401, 403):
        return f"HTTP {status}", ""
    if status == 404:
        hint = _v1_hint(endpoint)
        return "HTTP 404", f" (POST {path}{'; ' + hint if hint else ''})"
    if 400 <= status < 500 and not host_answered:
        body = short(_error_message(exc), 80)
        return f'HTTP {status} "{body}" from POST {path}', ""
    return None, ""



def _v1_hint(endpoint: Endpoint) -> str:
    """For a 404: OpenAI-compatible servers (Ollama, vLLM) serve under
    /v1, and a base URL without it is the usual mistake; an Azure
    deployment's 404 is a deployment name or api-version Azure does not know."""
    if endpoint.deployment is not None:
        return f"check the Azure deployment name {endpoint.deployment!r} and api-version {endpoint.azure_api_version()!r}"
    url = endpoint.client_url.rstrip("/")
    if urlsplit(url).path.endswith("/v1"):
        return ""
    return f"the base URL does not end in /v1: try {url}/v1"


def _seconds_text(seconds: float) -> str:
    """Seconds for a message: whole from 10 s up, never in e-notation."""
    return f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.3g}"
