"""The call policy as a table: ``policy.decide`` is a pure function, so each
row is an outcome and a state, and the decision they must give.  No server:
the end-to-end behaviour is test_faults, test_ratelimit, test_hardening*'s."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pytest_miabench.calls.client import Sampling
from pytest_miabench.calls.policy import (
    BREAKER_ATTEMPTS,
    Accept,
    BreakerState,
    ConnectionFailed,
    Decision,
    Fail,
    Hold,
    Malformed,
    Notice,
    Outcome,
    RateLimited,
    Refused,
    Replied,
    Resend,
    Retry,
    Spent,
    State,
    StatusError,
    TimedOut,
    Trip,
    decide,
)
from pytest_miabench.calls.ratelimit import Ask

NAME = "model endpoint h:1 (m)"
NOW = 100.0
BUDGET = 60.0  # --mia-rate-limit-wait
B0 = BreakerState(NAME)
DISARMED = replace(B0, armed=False)
SENT = {"max_tokens": 100, "temperature": 0.5}
# jitter 0.5: a backoff is half its cap (0.5 s doubling per try, at most 30 s).
FIRST_BACKOFF = 0.25

R3 = Ask(3.0, "Retry-After: 3")
R30 = Ask(30.0, "Retry-After: 30")
R3600 = Ask(3600.0, "Retry-After: 3600")
RESET = Ask(3600.0, "x-ratelimit-reset-requests: 1h")

HTML = "HTTP 200 with content type text/html, not JSON, from POST /v1/chat/completions"
BODY_400 = 'HTTP 400 "No connected db" from POST /v1/chat/completions'
REFUSED = "connection refused"
FAR = " (POST /chat/completions; the base URL does not end in /v1: try http://h:1/v1)"


def tripped_by(cause: str, note: str = "") -> BreakerState:
    causes = (cause,) * BREAKER_ATTEMPTS
    message = f"{NAME} is unusable: {cause} on each of the first {BREAKER_ATTEMPTS} attempts{note}; the run stops here (the rest of the samples are not run)"
    return BreakerState(NAME, True, causes, message)


def armed_with(cause: str, times: int = BREAKER_ATTEMPTS - 1) -> BreakerState:
    return BreakerState(NAME, True, (cause,) * times)


def sampling(kind: str) -> Sampling:
    if kind == "reasoning":  # asked the accepted way from the first call: max_completion_tokens, no temperature
        return Sampling.for_model("o3", 100, 0.5, None)
    return Sampling(max_tokens=100, temperature=0.5)


def state(**changes: Any) -> State:
    kind = changes.pop("sampling", "plain")
    base = State(now=NOW, jitter=0.5, spent=Spent(), breaker=B0, sampling=sampling(kind), sent=SENT, max_retries=2, budget=BUDGET)
    return replace(base, **changes)


def status(code: int, detail: str, **fields: Any) -> StatusError:
    return StatusError(code, detail, **fields)


def started(**fields: Any) -> Spent:
    """The budget's clock started now, with ``fields``."""
    return Spent(**{"started": NOW, "waits": 1, **fields})


ROWS: list[tuple[str, Outcome, dict[str, Any], Decision]] = [
    # -- a reply
    ("reply", Replied(), {}, Decision(Accept(), Spent(), DISARMED)),
    ("reply with a limit spent for 3 s: the host waits", Replied(R3), {}, Decision(Accept(), Spent(), DISARMED, Hold(R3))),
    ("reply with a limit spent for 30 s: waited, and said", Replied(R30), {}, Decision(Accept(), Spent(), DISARMED, Hold(R30), Notice(R30))),
    (
        "reply with a limit spent for an hour: the host's calls fail, said",
        Replied(RESET),
        {},
        Decision(
            Accept(),
            Spent(),
            DISARMED,
            Hold(RESET, "server asked to pause requests for 3600 s (x-ratelimit-reset-requests: 1h), more than the 60 s --mia-rate-limit-wait budget"),
            Notice(RESET, "calls to it fail until then (more than the 60 s --mia-rate-limit-wait budget)"),
        ),
    ),
    # -- 429: the time budget, not --mia-max-retries
    ("429 without Retry-After: backoff", RateLimited("HTTP 429: slow"), {}, Decision(Retry(FIRST_BACKOFF, "HTTP 429: slow"), started(rate_limited=1), B0)),
    ("429, the fifth: a longer backoff", RateLimited("HTTP 429: slow"), {"spent": Spent(rate_limited=4, waits=4, started=50.0)},
     Decision(Retry(4.0, "HTTP 429: slow"), Spent(rate_limited=5, waits=5, started=50.0), B0)),
    ("429 with Retry-After: held for the host", RateLimited("HTTP 429: slow", R3), {}, Decision(Retry(3.0, "HTTP 429: slow"), started(rate_limited=1), B0, Hold(R3))),
    ("429 with a long Retry-After within the budget: held, said", RateLimited("HTTP 429: slow", R30), {},
     Decision(Retry(30.0, "HTTP 429: slow"), started(rate_limited=1), B0, Hold(R30), Notice(R30))),
    ("429s not counted against --mia-max-retries", RateLimited("HTTP 429: slow"), {"spent": Spent(failures=2)},
     Decision(Retry(FIRST_BACKOFF, "HTTP 429: slow"), started(failures=2, rate_limited=1), B0)),
    ("429 with Retry-After beyond the budget: fails at once", RateLimited("HTTP 429: busy", R3600), {},
     Decision(Fail("HTTP 429: busy; server asked to retry after 3600 s (Retry-After: 3600), more than the 60 s --mia-rate-limit-wait budget"), started(rate_limited=1), B0)),
    ("429 whose backoff would pass the spent budget: fails", RateLimited("HTTP 429: slow"), {"now": 108.0, "spent": Spent(rate_limited=4, waits=4, started=50.0)},
     Decision(Fail("HTTP 429: slow; rate limited (HTTP 429) 5 times over 58.0 s; waiting 4.0 s more would pass the 60 s rate-limit budget (--mia-rate-limit-wait)"),
              Spent(rate_limited=5, waits=5, started=50.0), B0)),
    # -- 5xx, 408, 409: --mia-max-retries, and the budget for a wait they ask
    ("503: backoff", status(503, "HTTP 503: down"), {}, Decision(Retry(FIRST_BACKOFF, "HTTP 503: down"), Spent(failures=1), B0)),
    ("408: backoff", status(408, "HTTP 408: slow"), {}, Decision(Retry(FIRST_BACKOFF, "HTTP 408: slow"), Spent(failures=1), B0)),
    ("409: backoff", status(409, "HTTP 409: busy"), {}, Decision(Retry(FIRST_BACKOFF, "HTTP 409: busy"), Spent(failures=1), B0)),
    ("503, the retries used up: fails", status(503, "HTTP 503: down"), {"spent": Spent(failures=2)}, Decision(Fail("HTTP 503: down"), Spent(failures=3), B0)),
    ("503 with Retry-After 3 s: waited as asked", status(503, "HTTP 503: down", ask=R3), {}, Decision(Retry(3.0, "HTTP 503: down"), started(failures=1), B0)),
    ("503 with Retry-After 30 s: waited, said", status(503, "HTTP 503: down", ask=R30), {}, Decision(Retry(30.0, "HTTP 503: down"), started(failures=1), B0, None, Notice(R30))),
    ("503 with a long Retry-After, the retries used up: fails, said", status(503, "HTTP 503: down", ask=R30), {"spent": Spent(failures=2)},
     Decision(Fail("HTTP 503: down"), started(failures=3), B0, None, Notice(R30))),
    ("503 with Retry-After beyond the budget: fails at once", status(503, "HTTP 503: busy", ask=R3600), {},
     Decision(Fail("HTTP 503: busy; server asked to retry after 3600 s (Retry-After: 3600), more than the 60 s --mia-rate-limit-wait budget"), started(), B0)),
    ("503s asking past the spent budget: fails", status(503, "HTTP 503: busy", ask=R30), {"now": 140.0, "spent": Spent(failures=1, waits=1, started=100.0)},
     Decision(Fail("HTTP 503: busy; asked to wait 2 times over 40.0 s; waiting 30.0 s more would pass the 60 s rate-limit budget (--mia-rate-limit-wait)"),
              Spent(failures=1, waits=2, started=100.0), B0)),
    # -- timeouts, connections
    ("timeout: backoff", TimedOut(30.0), {}, Decision(Retry(FIRST_BACKOFF, "request timed out after 30 s"), Spent(failures=1), B0)),
    ("timeout, the retries used up: fails", TimedOut(2.5), {"spent": Spent(failures=2)}, Decision(Fail("request timed out after 2.5 s"), Spent(failures=3), B0)),
    ("transient connection failure: retried, the breaker disarmed", ConnectionFailed("connection failed (ReadError: )"), {},
     Decision(Retry(FIRST_BACKOFF, "connection failed (ReadError: )"), Spent(failures=1), DISARMED)),
    ("connection refused: retried, counted", ConnectionFailed("connection failed (refused)", REFUSED), {},
     Decision(Retry(FIRST_BACKOFF, "connection failed (refused)"), Spent(failures=1), armed_with(REFUSED, 1))),
    ("connection refused on every first attempt: trips", ConnectionFailed("connection failed (refused)", REFUSED), {"breaker": armed_with(REFUSED)},
     Decision(Trip(tripped_by(REFUSED).message or ""), Spent(), tripped_by(REFUSED))),
    ("connection refused once the host answered: retried", ConnectionFailed("connection failed (refused)", REFUSED), {"breaker": DISARMED},
     Decision(Retry(FIRST_BACKOFF, "connection failed (refused)"), Spent(failures=1), DISARMED)),
    ("connection refused after DNS failures: retried, does not trip", ConnectionFailed("connection failed (refused)", REFUSED), {"breaker": armed_with("host name not found (DNS)")},
     Decision(Retry(FIRST_BACKOFF, "connection failed (refused)"), Spent(failures=1), BreakerState(NAME, True, ("host name not found (DNS)",) * 2 + (REFUSED,)))),
    ("a systematic failure once another call tripped the breaker: trips", ConnectionFailed("connection failed (refused)", REFUSED), {"breaker": tripped_by("HTTP 401")},
     Decision(Trip(tripped_by("HTTP 401").message or ""), Spent(), tripped_by("HTTP 401"))),
    # -- 400: the sampling adapted, also for requests in flight
    ("400 naming max_tokens: sent as max_completion_tokens", status(400, "HTTP 400: no", param="max_tokens"), {}, Decision(Resend("max_tokens"), Spent(), B0)),
    ("400 saying use max_completion_tokens", status(400, "HTTP 400: no", text="Use 'max_completion_tokens' instead."), {}, Decision(Resend("max_tokens"), Spent(), B0)),
    ("400 naming temperature: dropped", status(400, "HTTP 400: no", param="temperature"), {}, Decision(Resend("temperature"), Spent(), B0)),
    ("400 saying temperature unsupported", status(400, "HTTP 400: no", text="Unsupported value: 'temperature'"), {}, Decision(Resend("temperature"), Spent(), B0)),
    ("400 refusing max_tokens in flight, already adapted: resent as is", status(400, "HTTP 400: no", param="max_tokens"), {"sampling": "reasoning"}, Decision(Resend(), Spent(), B0)),
    ("400 refusing temperature in flight, already dropped: resent as is", status(400, "HTTP 400: no", param="temperature"), {"sampling": "reasoning"}, Decision(Resend(), Spent(), B0)),
    ("400 refusing max_tokens, already adapted and not sent: fails", status(400, "HTTP 400: no", param="max_tokens"), {"sampling": "reasoning", "sent": {"max_completion_tokens": 100}, "breaker": DISARMED},
     Decision(Fail("HTTP 400: no"), Spent(), DISARMED)),
    ("422 naming max_tokens: not adapted, fails", status(422, "HTTP 422: no", param="max_tokens"), {"breaker": DISARMED}, Decision(Fail("HTTP 422: no"), Spent(), DISARMED)),
    # -- other 4xx: fail, and trip the breaker when the first ones repeat
    ("400 once the host answered: fails, disarms", status(400, "HTTP 400: bad"), {}, Decision(Fail("HTTP 400: bad"), Spent(), DISARMED)),
    ("400 from a host that never answered: fails, counted", status(400, "HTTP 400: No connected db", cause=BODY_400), {},
     Decision(Fail("HTTP 400: No connected db"), Spent(), armed_with(BODY_400, 1))),
    ("the same 400 body again and again: trips", status(400, "HTTP 400: No connected db", cause=BODY_400), {"breaker": armed_with(BODY_400)},
     Decision(Trip(tripped_by(BODY_400).message or ""), Spent(), tripped_by(BODY_400))),
    ("401 again and again: trips", status(401, "HTTP 401: no key", cause="HTTP 401"), {"breaker": armed_with("HTTP 401")},
     Decision(Trip(tripped_by("HTTP 401").message or ""), Spent(), tripped_by("HTTP 401"))),
    ("404 again and again: trips, naming the path", status(404, "HTTP 404", cause="HTTP 404", note=FAR), {"breaker": armed_with("HTTP 404")},
     Decision(Trip(tripped_by("HTTP 404", FAR).message or ""), Spent(), tripped_by("HTTP 404", FAR))),
    # -- malformed replies
    ("malformed reply: retried, the breaker untouched", Malformed("reply has no choices"), {"breaker": armed_with(REFUSED, 1)},
     Decision(Retry(FIRST_BACKOFF, "malformed reply (reply has no choices)"), Spent(failures=1), armed_with(REFUSED, 1))),
    ("malformed reply, the retries used up: fails", Malformed("reply has no choices"), {"spent": Spent(failures=2)},
     Decision(Fail("malformed reply (reply has no choices)"), Spent(failures=3), B0)),
    ("an HTML 200: retried, counted", Malformed(HTML, systematic=True), {}, Decision(Retry(FIRST_BACKOFF, f"malformed reply ({HTML})"), Spent(failures=1), armed_with(HTML, 1))),
    ("HTML 200s on every first attempt: trips", Malformed(HTML, systematic=True), {"breaker": armed_with(HTML)},
     Decision(Trip(tripped_by(HTML).message or ""), Spent(), tripped_by(HTML))),
    # -- replies refused (not read, not followed): never retried
    ("a reply too large: fails, disarms", Refused("reply body larger than 10 bytes"), {}, Decision(Fail("reply body larger than 10 bytes"), Spent(), DISARMED)),
    ("a redirect: fails, counted", Refused("the endpoint redirects; not retried", "redirected (HTTP 302)"), {},
     Decision(Fail("the endpoint redirects; not retried"), Spent(), armed_with("redirected (HTTP 302)", 1))),
    ("redirects on every first attempt: trips", Refused("the endpoint redirects; not retried", "redirected (HTTP 302)"), {"breaker": armed_with("redirected (HTTP 302)")},
     Decision(Trip(tripped_by("redirected (HTTP 302)").message or ""), Spent(), tripped_by("redirected (HTTP 302)"))),
]


@pytest.mark.parametrize(("outcome", "changes", "expected"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_decide(outcome: Outcome, changes: dict[str, Any], expected: Decision) -> None:
    assert decide(outcome, state(**changes)) == expected


def test_the_backoff_is_the_draw_times_the_capped_exponential() -> None:
    assert decide(TimedOut(1.0), state(jitter=0.0)).action == Retry(0.0, "request timed out after 1 s")
    assert decide(TimedOut(1.0), state(jitter=0.999, spent=Spent(failures=20), max_retries=99)).action == Retry(0.999 * 30.0, "request timed out after 1 s")


def test_deciding_changes_nothing_it_is_given() -> None:
    """Pure: the sampling is adapted by the caller acting on ``Resend``, not
    by ``decide``; the same inputs give the same decision."""
    given = state()
    first = decide(status(400, "HTTP 400: no", param="max_tokens"), given)
    assert given.sampling == sampling("plain") and given.sampling.params() == SENT
    assert decide(status(400, "HTTP 400: no", param="max_tokens"), given) == first
