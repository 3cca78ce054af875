"""Living with rate limits: how long the server asked us to wait, backoff,
adaptive concurrency, an optional requests-per-minute cap, and a time budget
for retrying HTTP 429.

Pure asyncio building blocks for one event loop (no threads, stdlib only).
One request's attempt, as the caller is meant to use them::

    limiter = AdaptiveLimiter(concurrency)          # shared by all requests
    budget = RetryBudget(300.0)                     # one per request
    while True:
        async with limiter.slot() as slot:
            await cap.wait()                        # optional RateCap, inside the slot
            try:
                reply = await send()
            except RateLimitError as exc:           # HTTP 429
                ask = server_ask(exc.response.headers, time.time(), status=429)
                wait = None if ask is None else ask.seconds
                limiter.on_rate_limited(slot)
            else:
                limiter.on_success()
                ahead = server_ask(reply.headers, time.time())  # remaining == 0: stop early
                if ahead is not None:
                    limiter.pause(ahead.seconds)
                return reply
        delay = wait if wait is not None else backoff(budget.tries + 1, rng)
        if not budget.allows(delay):
            raise GiveUp(budget.message(delay))
        if wait is not None:
            limiter.pause(wait)                     # holds every new acquire, ours too
        else:
            await asyncio.sleep(delay)

429s are retried until the budget's time is spent, however many there were;
other transient errors (5xx, timeouts) tell the limiter nothing and keep
their count-based retry limit.  The cap is waited for inside the slot: a
start booked before a place was free would be spent queueing, and the
starts would bunch up behind the limiter instead of being spaced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import email.utils
import math
import random
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

DEFAULT_BUDGET = 300.0  # seconds of 429s a request may sit out before it fails

# A Go duration as OpenAI sends it: "1s", "6m0s", "20ms", "1h2m3.5s".
_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# A bare number this large is a Unix time, not a number of seconds.
_EPOCH = 1e9


# -- what the server asked ---------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """A wait the server asked for, and the header that asked, as messages
    name it (``Retry-After: 3600``, ``x-ratelimit-reset-requests: 6h0m0s``)."""

    seconds: float
    header: str


def server_ask(headers: Mapping[str, str], now: float, *, status: int | None = None) -> Ask | None:
    """How long the server asked us to wait before the next request, and
    which header asked (``Ask``), or None.

    ``headers`` is any mapping; names are looked up in lower case, which is
    what a case-insensitive mapping (httpx ``Headers``) expects.  ``now`` is
    wall-clock time (``time.time()``): Retry-After may be an HTTP date.

    Read: ``retry-after-ms`` (else ``retry-after``, seconds or HTTP date), and
    OpenAI's ``x-ratelimit-reset-requests`` / ``-tokens`` (Go durations).  A
    reset counts when its ``x-ratelimit-remaining-*`` is 0; on a 429 (pass
    ``status``) also when that count is missing, since then the reset is the
    only hint.  A reset whose limit still has room is not why we were limited
    (a tokens reset can be minutes while requests are the limit), so it never
    counts.  The answer is the longest wait that counts; garbage counts as
    absent.
    """
    asks: list[Ask] = []
    asked = _retry_after(headers, now)
    if asked is not None:
        asks.append(asked)
    for kind in ("requests", "tokens"):
        name = f"x-ratelimit-reset-{kind}"
        text = _header(headers, name)
        reset = _duration(text, now)
        if reset is None:
            continue
        remaining = _seconds(_header(headers, f"x-ratelimit-remaining-{kind}"))
        if (remaining is not None and remaining <= 0) or (remaining is None and status == 429):
            asks.append(Ask(reset, _named(name, text)))
    return max(asks, key=lambda ask: ask.seconds) if asks else None


def _named(name: str, value: str | None) -> str:
    """``name: value`` for a message; the value was parsed, so it is short
    and plain (a number, a duration or a date), but is cut all the same."""
    return f"{name}: {(value or '')[:40]}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    try:
        value = headers.get(name)
    except Exception:  # a broken mapping is as good as no header
        return None
    return value.strip() if isinstance(value, str) else None


def _seconds(text: str | None) -> float | None:
    """A finite, non-negative number, else None."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _retry_after(headers: Mapping[str, str], now: float) -> Ask | None:
    ms_text = _header(headers, "retry-after-ms")
    ms = _seconds(ms_text)
    if ms is not None:
        return Ask(ms / 1000.0, _named("retry-after-ms", ms_text))
    text = _header(headers, "retry-after")
    if text is None:
        return None
    seconds = _seconds(text)
    if seconds is not None:
        return Ask(seconds, _named("Retry-After", text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322's "UTC, origin unknown"
        when = when.replace(tzinfo=datetime.timezone.utc)
    return Ask(max(0.0, when.timestamp() - now), _named("Retry-After", text))


def _duration(text: str | None, now: float) -> float | None:
    """A Go duration ("6m0s"), bare seconds ("1.5"), or a Unix time."""
    if text is None:
        return None
    seconds = _seconds(text)
    if seconds is not None:
        return max(0.0, seconds - now) if seconds >= _EPOCH else seconds
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(number) * _UNIT[unit] for number, unit in _DURATION_PART.findall(text))


# -- our own waits -------------------------------------------------------------


def backoff(attempt: int, rng: random.Random, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter: uniform over [0, min(cap, base * 2**(attempt-1))].

    ``rng`` is the caller's own ``random.Random``: the global one is reseeded
    per test by pytest-randomly, which would make every request's jitter
    alike.  Full jitter spreads a crowd of retries over the whole interval.
    """
    return rng.uniform(0.0, backoff_cap(attempt, base, cap))


def backoff_cap(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """The top of ``backoff``'s interval, min(cap, base * 2**(attempt-1)):
    a uniform draw from [0, 1) times this is a ``backoff`` (the call policy
    is given the draw, and stays a pure function)."""
    exponent = min(max(attempt, 1) - 1, 64)  # 2**64 * base is past any cap; no float overflow
    return min(cap, base * 2.0**exponent)


class RetryBudget:
    """How long one request may keep retrying 429s, and waiting out what
    servers ask for (a Retry-After on a 5xx too).

    The clock starts at the first 429 or server-asked wait (time queued
    before it is not the server's doing) and runs on the event loop's clock
    unless ``clock`` is given.  A wait that would end past the deadline is
    refused at once, rather than slept through only to fail.
    """

    def __init__(self, seconds: float = DEFAULT_BUDGET, *, clock: Callable[[], float] | None = None) -> None:
        if not seconds >= 0:
            raise ValueError(f"rate-limit budget must be >= 0 seconds, got {seconds!r}")
        self.seconds = seconds
        self.tries = 0  # 429s seen by this request
        self.waits = 0  # waits asked of the budget, 429s included
        self._clock = clock
        self._started: float | None = None

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    @property
    def waited(self) -> float:
        """Seconds since the first 429 or asked wait (0 before it)."""
        return 0.0 if self._started is None else self._now() - self._started

    def allows(self, delay: float, *, rate_limited: bool = True) -> bool:
        """Record a 429 (or, with ``rate_limited=False``, another wait the
        server asked for); whether waiting ``delay`` more seconds stays
        within the budget."""
        now = self._now()
        if self._started is None:
            self._started = now
        self.tries += rate_limited
        self.waits += 1
        return now + delay <= self._started + self.seconds

    def message(self, delay: float) -> str:
        """Why we give up, for the error report."""
        return budget_message(self.seconds, self.tries, self.waits, self.waited, delay)


def budget_message(seconds: float, tries: int, waits: int, waited: float, delay: float) -> str:
    """Why a request gives up on a budget of ``seconds``: ``tries`` 429s
    (else ``waits`` waits asked for) over ``waited`` seconds, and ``delay`` more to go."""
    if tries:
        seen = f"rate limited (HTTP 429) {tries} time{'s' if tries != 1 else ''}"
    else:
        seen = f"asked to wait {waits} time{'s' if waits != 1 else ''}"
    return f"{seen} over {waited:.1f} s; waiting {delay:.1f} s more would pass the {seconds:g} s rate-limit budget"


class RateCap:
    """At most ``per_minute`` request starts per 60 s, evenly spaced, the first at once.

    Each ``wait()`` books the next start time when it is called, so callers
    start in call order.  A cancelled booking that is still the latest is
    given back; an earlier one leaves a gap (a start not used), never a burst.
    """

    def __init__(self, per_minute: float, *, clock: Callable[[], float] | None = None) -> None:
        if not (per_minute > 0 and math.isfinite(per_minute)):
            raise ValueError(f"requests per minute must be a positive number, got {per_minute!r}")
        self.interval = 60.0 / per_minute
        self._clock = clock
        self._next: float | None = None  # earliest start not yet booked

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def book(self) -> float:
        """Book the next start; seconds until it (0: start now)."""
        now = self._now()
        start = now if self._next is None else max(now, self._next)
        self._next = start + self.interval
        return start - now

    async def wait(self) -> None:
        """Sleep until this caller's start time."""
        delay = self.book()
        if delay <= 0:
            return
        booked_next = self._next
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if self._next == booked_next:  # nobody booked after us: the start is free again
                self._next = booked_next - self.interval if booked_next is not None else None
            raise


# -- adaptive concurrency -------------------------------------------------------


class HostPaused(Exception):
    """An acquire while the limiter refuses: the server asked for a pause
    longer than any request may wait (``AdaptiveLimiter.refuse``)."""


class Slot:
    """One granted place in an ``AdaptiveLimiter``; remembers when it was granted."""

    __slots__ = ("generation", "released")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.released = False


class AdaptiveLimiter:
    """Bounds requests in flight, and adapts the bound to 429s (AIMD).

    * The limit begins at ``limit_max`` (the concurrency the user asked
      for), as a bare client would: an unlimited server pays nothing for
      the limiter.  Against a rate-limited server the first burst meets
      429s, which cost no tokens and bring the first cut at once.  With
      ``initial`` below ``limit_max`` it starts there instead and grows by
      one per success (doubling each round trip) until the first 429.
    * ``on_rate_limited(slot)``: the limit drops to half of what was in
      flight (at least 1), once per congestion event: a 429 from a request
      granted before the last cut is already accounted for, so it is
      counted but cuts nothing.
    * ``on_success()``: after the first 429, the limit grows by one per
      ``limit`` successes, up to ``limit_max``.
    * ``pause(seconds)``: no slot is granted until then (one 429 saying
      "1 s" stops the other requests from storming the server meanwhile).
    * ``refuse(seconds, reason)``: a pause nobody may wait out; until then
      every acquire, queued ones included, raises ``HostPaused(reason)``.

    Waiters are served first come, first served; a cancelled waiter gives
    its place (or the slot it had just been given) back.  Use from one
    event loop; ``pause`` and the acquires need it running.
    """

    def __init__(self, limit_max: int, *, initial: int | None = None) -> None:
        if limit_max < 1:
            raise ValueError(f"concurrency must be >= 1, got {limit_max}")
        self.limit_max = limit_max
        self._limit = min(max(limit_max if initial is None else initial, 1), limit_max)
        self._in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._generation = 0
        self._slow_start = self._limit < limit_max
        self._successes = 0  # since the limit last changed, in congestion avoidance
        self._paused_until = -math.inf  # loop time
        self._resume: asyncio.TimerHandle | None = None
        self._refused_until = -math.inf  # loop time
        self._refusal = ""
        # The first long pause, in words, for the run's warnings (set by the caller).
        self.notice: str | None = None
        # What the run report shows.
        self.successes = 0  # replies the host accepted: it is an API, whatever it refuses
        self.rate_limited = 0
        self.cuts = 0
        self.min_limit = self._limit
        self.max_limit_reached = self._limit
        self.max_in_flight = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def paused(self) -> bool:
        return asyncio.get_running_loop().time() < self._paused_until

    # -- slots -----------------------------------------------------------------

    async def acquire(self) -> Slot:
        """Wait for a place; FIFO, and never during a pause.  Raises
        ``HostPaused`` while the limiter refuses."""
        if asyncio.get_running_loop().time() < self._refused_until:
            raise HostPaused(self._refusal)
        if not self._waiters and self._in_flight < self._limit and not self.paused():
            self._take()
            return Slot(self._generation)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Granted a slot in the same tick we were cancelled: pass it on.
                self._in_flight -= 1
                self._grant()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        return Slot(self._generation)

    def release(self, slot: Slot) -> None:
        """Give a slot back (a second release of the same slot is ignored)."""
        if slot.released:
            return
        slot.released = True
        self._in_flight -= 1
        self._grant()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """``async with limiter.slot() as slot:``: one attempt's place."""
        taken = await self.acquire()
        try:
            yield taken
        finally:
            self.release(taken)

    def _take(self) -> None:
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _grant(self) -> None:
        """Hand free places to waiters, oldest first, unless paused."""
        if self._waiters and self.paused():
            return  # the resume timer calls again
        while self._waiters and self._in_flight < self._limit:
            waiter = self._waiters.popleft()
            if waiter.done():  # cancelled while queued
                continue
            self._take()
            waiter.set_result(None)

    # -- feedback ----------------------------------------------------------------

    def on_rate_limited(self, slot: Slot) -> bool:
        """A 429 for the request holding ``slot`` (call before releasing it).
        True when this cut the limit."""
        self.rate_limited += 1
        if slot.generation != self._generation:
            return False  # in flight before the last cut: the same congestion event
        self._slow_start = False
        self._generation += 1
        self.cuts += 1
        self._successes = 0
        self._set_limit(max(1, min(self._limit, self._in_flight) // 2))
        return True

    def on_success(self) -> None:
        """A request the server accepted: grow the limit back."""
        self.successes += 1
        if self._limit >= self.limit_max:
            return
        if self._slow_start:
            self._set_limit(self._limit + 1)
            return
        self._successes += 1
        if self._successes >= self._limit:
            self._successes = 0
            self._set_limit(self._limit + 1)

    def _set_limit(self, limit: int) -> None:
        self._limit = limit
        self.min_limit = min(self.min_limit, limit)
        self.max_limit_reached = max(self.max_limit_reached, limit)
        self._grant()

    def pause(self, seconds: float) -> None:
        """Grant no slot for ``seconds`` (a pause only ever gets longer)."""
        if not seconds > 0:
            return
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        if until <= self._paused_until:
            return
        self._paused_until = until
        if self._resume is not None:
            self._resume.cancel()
        self._resume = loop.call_at(until, self._end_pause)

    def refuse(self, seconds: float, reason: str) -> None:
        """Fail every acquire for ``seconds`` with ``HostPaused(reason)``,
        the queued ones at once: the server asked for a pause longer than
        any request may wait, so waiting would only stall the run."""
        if not seconds > 0:
            return
        until = asyncio.get_running_loop().time() + seconds
        if until > self._refused_until:
            self._refused_until, self._refusal = until, reason
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(HostPaused(self._refusal))

    def _end_pause(self) -> None:
        # The loop may run a timer up to its clock resolution early; this
        # timer is the latest deadline's (earlier ones were cancelled), so
        # the pause is over whatever loop.time() says.
        self._resume = None
        self._paused_until = -math.inf
        self._grant()
