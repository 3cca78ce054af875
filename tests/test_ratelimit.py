"""Rate limits: the server's wait headers, full-jitter backoff, the adaptive
concurrency limiter (AIMD, FIFO, cancellation, pause), the requests-per-minute
cap, the 429 time budget, and all of them together with the real openai
client against a loopback endpoint limited to 20 requests per second."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import openai
import pytest
from support.imports import heavy_imports
from support.ratelimited import HeadersMode, limited
from support.server import OpenAIServer, Reply, Request

from pytest_miabench.calls.ratelimit import AdaptiveLimiter, Ask, HostPaused, RateCap, RetryBudget, Slot, backoff, server_ask

T = TypeVar("T")

NOW = 1_800_000_000.0  # a fixed wall-clock time for HTTP dates


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(main())


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(5):
        await asyncio.sleep(0)


# -- server_ask ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "expected"),
    [
        ({}, 429, None),
        ({"retry-after-ms": "250"}, 429, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 429, 0.25),  # the precise one wins
        ({"retry-after-ms": "soon", "retry-after": "2"}, 429, 2.0),
        ({"retry-after": "1.5"}, 429, 1.5),
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 429, 30.0),
        ({"retry-after": email.utils.formatdate(NOW - 30, usegmt=True)}, 429, 0.0),  # already past
        ({"retry-after": email.utils.formatdate(NOW + 30).replace("+0000", "-0000")}, 429, 30.0),  # zone unknown: UTC
        ({"retry-after": "tomorrow"}, 429, None),
        ({"retry-after": "-5"}, 429, None),
        ({"retry-after": "nan"}, 429, None),
        ({"retry-after": "inf"}, 429, None),
        ({"retry-after-ms": ""}, 429, None),
        # OpenAI's reset durations
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"}, None, 1.0),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}, None, 360.0),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20ms"}, None, 0.02),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1h2m3.5s"}, None, 3723.5),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "0.5s"}, None, 0.5),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5"}, None, 1.5),  # bare seconds
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": str(NOW + 7)}, None, 7.0),  # a Unix time
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "250us"}, None, 0.00025),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6 minutes"}, 429, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "-1s"}, 429, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s2"}, 429, None),
        # a reset counts when its limit is spent, or on a 429 that does not say which limit
        ({"x-ratelimit-remaining-requests": "12", "x-ratelimit-reset-requests": "1s"}, None, None),
        ({"x-ratelimit-reset-requests": "1s"}, None, None),
        ({"x-ratelimit-reset-requests": "1s"}, 429, 1.0),
        ({"x-ratelimit-remaining-requests": "garbage", "x-ratelimit-reset-requests": "1s"}, 429, 1.0),
        # a limit with room left is not the one that limited us, however far its reset
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-remaining-tokens": "90000",
                "x-ratelimit-reset-tokens": "6m0s",
            },
            429,
            1.0,
        ),
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "2.5s",
            },
            None,
            2.5,
        ),
        ({"retry-after-ms": "100", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "3s"}, 429, 3.0),
        ({"retry-after": "4", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "3s"}, 429, 4.0),
    ],
)
def test_server_ask(headers: dict[str, str], status: int | None, expected: float | None) -> None:
    assert _seconds(server_ask(headers, NOW, status=status)) == pytest.approx(expected)


def _seconds(ask: Ask | None) -> float | None:
    return None if ask is None else ask.seconds


def test_server_ask_survives_a_broken_mapping() -> None:
    class Broken(dict[str, str]):
        def get(self, key: Any, default: Any = None) -> Any:
            raise RuntimeError("boom")

    assert server_ask(Broken(), NOW, status=429) is None
    assert server_ask({"retry-after": 5}, NOW, status=429) is None  # type: ignore[dict-item]


# -- backoff ---------------------------------------------------------------------


def test_backoff_is_full_jitter_within_the_capped_exponential() -> None:
    rng = random.Random(42)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (5, 8.0), (7, 30.0), (12, 30.0)]:
        draws = [backoff(attempt, rng) for _ in range(2000)]
        assert all(0.0 <= d <= ceiling for d in draws)
        # full jitter: the whole interval, not just its top half
        assert min(draws) < 0.05 * ceiling
        assert max(draws) > 0.95 * ceiling
    assert 0.0 <= backoff(10_000, rng, base=1.0, cap=5.0) <= 5.0  # no overflow
    assert 0.0 <= backoff(0, rng) <= 0.5


def test_backoff_draws_only_from_the_callers_rng() -> None:
    random.seed(1)
    first = [backoff(3, random.Random(7)) for _ in range(3)]
    random.seed(2)
    assert [backoff(3, random.Random(7)) for _ in range(3)] == first


# -- AdaptiveLimiter -------------------------------------------------------------


def test_one_cut_per_congestion_event() -> None:
    async def main() -> None:
        limiter = AdaptiveLimiter(16, initial=16)
        storm = [await limiter.acquire() for _ in range(16)]
        # All 16 were in flight when the first 429 came back: one event, one halving.
        assert [limiter.on_rate_limited(slot) for slot in storm] == [True] + [False] * 15
        assert (limiter.limit, limiter.rate_limited, limiter.cuts) == (8, 16, 1)
        for slot in storm:
            limiter.release(slot)
        # A request sent after the cut that is limited again is a new event.
        fresh = [await limiter.acquire() for _ in range(8)]
        assert limiter.on_rate_limited(fresh[3]) is True
        assert (limiter.limit, limiter.rate_limited, limiter.cuts) == (4, 17, 2)
        assert limiter.on_rate_limited(fresh[5]) is False

    run(main)


def test_the_cut_halves_what_was_in_flight_and_never_goes_below_one() -> None:
    async def main() -> None:
        limiter = AdaptiveLimiter(64, initial=64)
        few = [await limiter.acquire() for _ in range(6)]
        limiter.on_rate_limited(few[0])  # 6 in flight caused it, not the 64 allowed
        assert limiter.limit == 3
        for slot in few:
            limiter.release(slot)
        for _ in range(5):
            async with limiter.slot() as slot:
                limiter.on_rate_limited(slot)
        assert limiter.limit == 1
        assert limiter.min_limit == 1

    run(main)


def test_additive_growth_back_to_the_maximum() -> None:
    async def main() -> None:
        limiter = AdaptiveLimiter(12, initial=12)
        held = [await limiter.acquire() for _ in range(12)]
        limiter.on_rate_limited(held[0])
        assert limiter.limit == 6
        limits = []
        for _ in range(6 + 7 + 8 + 9 + 10 + 11 + 20):
            limiter.on_success()
            limits.append(limiter.limit)
        # +1 after `limit` successes: 6 successes to reach 7, 7 more to reach 8, ...
        assert limits[5 - 1] == 6 and limits[6 - 1] == 7
        assert limits[6 + 7 - 1] == 8
        assert limits[6 + 7 + 8 + 9 + 10 + 11 - 2] == 11
        assert limits[6 + 7 + 8 + 9 + 10 + 11 - 1] == 12
        assert max(limits) == 12 == limiter.limit_max == limiter.max_limit_reached

    run(main)


def test_the_limit_starts_at_the_concurrency_asked_for() -> None:
    assert AdaptiveLimiter(64).limit == 64
    assert AdaptiveLimiter(64, initial=100).limit == 64  # never above the maximum


def test_slow_start_doubles_until_the_first_429_then_grows_additively() -> None:
    async def main() -> None:
        limiter = AdaptiveLimiter(64, initial=8)
        assert limiter.limit == 8
        for _ in range(8):  # one round trip's worth of successes
            limiter.on_success()
        assert limiter.limit == 16
        held = [await limiter.acquire() for _ in range(16)]
        limiter.on_rate_limited(held[0])
        assert limiter.limit == 8
        for _ in range(8):
            limiter.on_success()
        assert limiter.limit == 9
        assert (limiter.min_limit, limiter.max_limit_reached) == (8, 16)

    run(main)


def test_a_cut_below_what_is_in_flight_holds_new_requests_back() -> None:
    async def main() -> None:
        limiter = AdaptiveLimiter(8, initial=8)
        held = [await limiter.acquire() for _ in range(8)]
        limiter.on_rate_limited(held[0])  # limit 4, 8 still in flight
        late = asyncio.ensure_future(limiter.acquire())
        for slot in held[:4]:
            limiter.release(slot)
        await settle()
        assert not late.done()  # 4 in flight = the limit
        limiter.release(held[4])
        await settle()
        assert late.done()
        assert limiter.in_flight == 4
        assert limiter.max_in_flight == 8

    run(main)


def test_waiters_are_served_first_come_first_served() -> None:
    async def main() -> None:
        limiter = AdaptiveLimiter(1, initial=1)
        order: list[str] = []

        async def worker(name: str) -> None:
            async with limiter.slot():
                order.append(name)
                await asyncio.sleep(0)

        first = await limiter.acquire()
        tasks = []
        for name in "abcde":
            tasks.append(asyncio.ensure_future(worker(name)))
            await settle()  # queued in this order
        limiter.release(first)
        # A newcomer arriving as the slot is handed over does not jump the queue.
        tasks.append(asyncio.ensure_future(worker("newcomer")))
        await asyncio.gather(*tasks)
        assert order == ["a", "b", "c", "d", "e", "newcomer"]
        assert limiter.in_flight == 0

    run(main)


def test_a_cancelled_waiter_leaks_no_slot() -> None:
    async def main() -> None:
        limiter = AdaptiveLimiter(1, initial=1)
        held = await limiter.acquire()
        queued = asyncio.ensure_future(limiter.acquire())
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(limiter.acquire(), 0.01)
        await settle()
        queued.cancel()
        await settle()
        limiter.release(held)
        assert limiter.in_flight == 0
        slot = await asyncio.wait_for(limiter.acquire(), 1)
        limiter.release(slot)
        limiter.release(slot)  # a second release is ignored, not a second free slot
        assert limiter.in_flight == 0

    run(main)


def test_a_waiter_cancelled_as_it_is_granted_passes_the_slot_on() -> None:
    async def main() -> None:
        limiter = AdaptiveLimiter(1, initial=1)
        held = await limiter.acquire()
        unlucky = asyncio.ensure_future(limiter.acquire())
        next_in_line = asyncio.ensure_future(limiter.acquire())
        await settle()
        limiter.release(held)  # hands the slot to `unlucky`, which has not run yet
        unlucky.cancel()  # ... and is cancelled before it does
        await settle()
        assert unlucky.cancelled()
        slot = await asyncio.wait_for(next_in_line, 1)
        assert limiter.in_flight == 1
        limiter.release(slot)
        assert limiter.in_flight == 0

    run(main)


def test_a_pause_holds_every_new_acquire_and_the_queue() -> None:
    async def main() -> None:
        limiter = AdaptiveLimiter(4, initial=4)
        held = await limiter.acquire()
        limiter.pause(3600)
        newcomer = asyncio.ensure_future(limiter.acquire())
        await settle()
        assert not newcomer.done()  # 3 free places, but the server said wait
        limiter.release(held)
        await settle()
        assert not newcomer.done() and limiter.in_flight == 0
        newcomer.cancel()

    run(main)


def test_a_pause_only_gets_longer() -> None:
    async def main() -> None:
        limiter = AdaptiveLimiter(4)
        limiter.pause(3600)
        limiter.pause(0.001)
        await asyncio.sleep(0.02)
        assert limiter.paused()

    run(main)


def test_after_a_pause_the_queue_is_served_in_order_up_to_the_limit() -> None:
    async def main() -> None:
        limiter = AdaptiveLimiter(2, initial=2)
        limiter.pause(0.01)
        granted: list[str] = []

        async def worker(name: str) -> Slot:
            slot = await limiter.acquire()
            granted.append(name)
            return slot

        tasks = []
        for name in "abc":
            tasks.append(asyncio.ensure_future(worker(name)))
            await settle()
        assert granted == []
        await asyncio.wait(tasks, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        await settle()
        assert granted == ["a", "b"]
        assert not limiter.paused()
        limiter.release(tasks[0].result())
        await asyncio.wait_for(tasks[2], 1)
        assert granted == ["a", "b", "c"]

    run(main)


def test_limiter_needs_at_least_one_place() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        AdaptiveLimiter(0)


# -- RateCap -----------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rate_cap_spaces_starts_evenly_the_first_at_once() -> None:
    clock = Clock(100.0)
    cap = RateCap(120, clock=clock)  # one start every 0.5 s
    assert [cap.book() for _ in range(4)] == [0.0, 0.5, 1.0, 1.5]
    clock.now = 110.0  # idle for a while: no saved-up burst afterwards
    assert [cap.book() for _ in range(3)] == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("per_minute", [0, -5, float("inf"), float("nan")])
def test_rate_cap_refuses_nonsense(per_minute: float) -> None:
    with pytest.raises(ValueError, match="per minute"):
        RateCap(per_minute)


def test_a_cancelled_wait_gives_its_start_back() -> None:
    async def main() -> None:
        clock = Clock(0.0)
        cap = RateCap(60, clock=clock)  # one start a second
        await cap.wait()
        second = asyncio.ensure_future(cap.wait())
        await settle()
        second.cancel()
        await settle()
        assert cap.book() == 1.0  # the cancelled start is reused, not skipped

    run(main)


# -- RetryBudget -------------------------------------------------------------------


def test_budget_is_time_not_a_count_and_starts_at_the_first_429() -> None:
    clock = Clock(1000.0)
    budget = RetryBudget(300, clock=clock)
    clock.now = 5000.0  # queued for a long time before the first 429: not charged
    assert all(budget.allows(0.05) for _ in range(1000))  # many short waits are fine
    clock.now = 5299.0
    assert budget.allows(1.0)  # ends exactly at the deadline
    assert not budget.allows(1.5)
    assert budget.tries == 1002
    assert budget.message(1.5) == (
        "rate limited (HTTP 429) 1002 times over 299.0 s; waiting 1.5 s more would pass the 300 s rate-limit budget"
    )


def test_a_wait_longer_than_the_budget_gives_up_at_once() -> None:
    budget = RetryBudget(300, clock=Clock(0.0))
    assert not budget.allows(3600.0)  # a daily limit: say so now, not in an hour
    assert "1 time over 0.0 s" in budget.message(3600.0)
    with pytest.raises(ValueError, match="budget"):
        RetryBudget(-1)


def test_a_server_asked_wait_on_a_5xx_spends_the_budget_without_counting_a_429() -> None:
    clock = Clock(0.0)
    budget = RetryBudget(60, clock=clock)
    assert budget.allows(30.0, rate_limited=False)
    clock.now = 30.0
    assert not budget.allows(31.0, rate_limited=False)  # the budget is for all the waits together
    assert budget.tries == 0
    assert budget.message(31.0) == "asked to wait 2 times over 30.0 s; waiting 31.0 s more would pass the 60 s rate-limit budget"


@pytest.mark.parametrize(
    ("headers", "status", "expected"),
    [
        ({"retry-after": "3600"}, 503, Ask(3600.0, "Retry-After: 3600")),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 429, Ask(1.5, "retry-after-ms: 1500")),
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 503, Ask(30.0, f"Retry-After: {email.utils.formatdate(NOW + 30, usegmt=True)}")),
        (
            {"retry-after": "2", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6h0m0s"},
            None,
            Ask(21600.0, "x-ratelimit-reset-tokens: 6h0m0s"),
        ),
        ({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "6h0m0s"}, None, None),
    ],
)
def test_server_ask_names_the_header_that_asked(headers: dict[str, str], status: int | None, expected: Ask | None) -> None:
    assert server_ask(headers, NOW, status=status) == expected


def test_a_refusal_fails_the_queue_and_every_new_acquire_until_it_ends() -> None:
    async def main() -> None:
        limiter = AdaptiveLimiter(1)
        held = await limiter.acquire()
        queued = asyncio.ensure_future(limiter.acquire())
        await settle()
        limiter.refuse(0.05, "the server asked for 6 hours")
        await settle()
        with pytest.raises(HostPaused, match="the server asked for 6 hours"):
            queued.result()
        with pytest.raises(HostPaused):
            await limiter.acquire()
        limiter.release(held)
        assert limiter.in_flight == 0
        await asyncio.sleep(0.1)
        limiter.release(await limiter.acquire())  # over: places are granted again

    run(main)


def test_importing_ratelimit_is_cheap() -> None:
    assert heavy_imports("pytest_miabench.calls.ratelimit") == []


# -- all together, with the real openai client -----------------------------------


async def call(client: openai.AsyncOpenAI, limiter: AdaptiveLimiter, rng: random.Random) -> str:
    """One request the way the caller is meant to make it: 429s retried on
    the server's word (or backoff) within the time budget, the limiter told
    of every outcome."""
    budget = RetryBudget(60)
    while True:
        async with limiter.slot() as slot:
            try:
                raw = await client.chat.completions.with_raw_response.create(model="vlm", messages=[{"role": "user", "content": "hi"}])
            except openai.RateLimitError as exc:
                wait = _seconds(server_ask(exc.response.headers, time.time(), status=429))
                limiter.on_rate_limited(slot)
            else:
                limiter.on_success()
                ahead = server_ask(raw.headers, time.time())  # remaining 0: the next one would be refused
                if ahead is not None:
                    limiter.pause(ahead.seconds)
                return raw.parse().choices[0].message.content or ""
        delay = wait if wait is not None else backoff(budget.tries + 1, rng)
        if not budget.allows(delay):
            raise AssertionError(budget.message(delay))
        if wait is not None:
            limiter.pause(wait)
        else:
            await asyncio.sleep(delay)


@pytest.mark.parametrize("headers_mode", ["full", "reset-requests-only"])
def test_200_requests_at_concurrency_64_against_20_per_second(headers_mode: HeadersMode) -> None:
    def inner(request: Request) -> Reply:
        return Reply("fine", delay=0.2)  # a model takes time: concurrency, not just pace, sets the rate

    script = limited(20, inner, headers_mode)
    limiter = AdaptiveLimiter(64)

    async def main() -> list[str]:
        client = openai.AsyncOpenAI(api_key="test", base_url=server.url, max_retries=0)
        try:
            rng = random.Random(5)
            return await asyncio.gather(*(call(client, limiter, rng) for _ in range(200)))
        finally:
            await client.close()

    with OpenAIServer(script) as server:
        started = time.perf_counter()
        answers = run(main)
        wall = time.perf_counter() - started
    print(
        f"\n{headers_mode}: 429s={script.rate_limited} limit min/max/final={limiter.min_limit}/{limiter.max_limit_reached}/{limiter.limit}"
        f" in flight max={limiter.max_in_flight} cuts={limiter.cuts} wall={wall:.1f}s"
    )
    assert answers == ["fine"] * 200
    assert script.succeeded == 200
    assert limiter.rate_limited == script.rate_limited  # every 429 reached the limiter
    # The limiter starts at 64: the first bursts meet 429s until halving
    # reaches the server's pace (64 -> 4 takes four cuts).  A storm (no
    # adaptation) would keep meeting them for the whole run.
    assert script.rate_limited < 2 * 64
    assert server.max_in_flight <= 64
    assert limiter.cuts >= 1 and limiter.min_limit < 20  # it did adapt
