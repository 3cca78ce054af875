"""What a call does after an attempt, decided by a pure function.

A call is classify → decide → act: ``classify`` (classify.py) turns what
one attempt met (an exception, or a reply) into a small typed ``Outcome``;
``decide`` (here) maps it, with the call's and the role's state, to a
``Decision``; ``Caller`` (caller.py) acts on it: sends again, sleeps,
pauses the host, raises.  ``decide`` reads no clock, sleeps never and
changes nothing: the time, a random draw and every state come in as
arguments, and the new state goes out in the decision.

The rules, as the caller has always applied them:

* a 429 is retried after the wait the server asked for (held for every
  request to the host), else after a backoff, until the call's
  --mia-rate-limit-wait time budget would be passed; it is not counted
  against --mia-max-retries;
* a 400 refusing ``max_tokens`` or the temperature is sent again the way
  the endpoint accepts (``Resend``), as is one refusing a parameter another
  call's refusal already dropped while this request was in flight;
* 408, 409, 5xx, timeouts, failed connections and malformed replies are
  retried after a backoff (or the wait a 5xx asked for, within the budget)
  until --mia-max-retries is used up;
* the first attempts of a role failing the same systematic way (connection
  refused, DNS, 401/403/404, the same 4xx body, an HTML page) trip the
  breaker (``Trip``); one that says nothing of the endpoint disarms it, as
  a success does;
* anything else fails the call (``Fail``), with the message it reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .client import Sampling
from .ratelimit import Ask, backoff_cap, budget_message

_TRANSIENT_STATUS = {408, 409}
# How many first attempts of a role must fail the same systematic way (and
# none succeed) before the breaker ends the session.
BREAKER_ATTEMPTS = 3
# A wait the server asks for longer than this (seconds) is printed, once per
# host: a run that seems stuck says why.
NOTICE_AFTER = 5.0


# -- outcomes: what one attempt met, classified -----------------------------------


@dataclass(frozen=True)
class Replied:
    """A usable reply; ``ask``: a limit of the host with nothing left."""

    ask: Ask | None = None


@dataclass(frozen=True)
class RateLimited:
    """HTTP 429; ``ask``: the wait the server asked for."""

    detail: str
    ask: Ask | None = None


@dataclass(frozen=True)
class StatusError:
    """Another HTTP error status.  ``param`` and ``text``: the parameter
    its error body names and its message (a 400's refusal); ``ask``: a wait
    it asked for; ``cause`` and ``note``: the breaker's cause (None: it says
    nothing of the endpoint) and what its message adds, should it not be
    retried."""

    status: int
    detail: str
    ask: Ask | None = None
    param: str | None = None
    text: str = ""
    cause: str | None = None
    note: str = ""


@dataclass(frozen=True)
class TimedOut:
    """No whole reply within the request's timeout (seconds)."""

    seconds: float


@dataclass(frozen=True)
class ConnectionFailed:
    """No connection; ``cause``: the breaker's, when every call would fail
    alike (refused, DNS), None for a transient failure."""

    detail: str
    cause: str | None = None


@dataclass(frozen=True)
class Malformed:
    """A 200 whose body is not a usable reply; ``systematic``: not from such
    an API at all (an HTML page), so every call will get the same."""

    detail: str
    systematic: bool = False


@dataclass(frozen=True)
class Refused:
    """A reply not read or not followed (too large, a redirect): the same
    request would get it again.  ``cause``: the breaker's, when every call
    of the endpoint would meet it (a redirect)."""

    detail: str
    cause: str | None = None


Outcome = Replied | RateLimited | StatusError | TimedOut | ConnectionFailed | Malformed | Refused


# -- state: what the call and its role have spent and learnt --------------------


@dataclass(frozen=True)
class Spent:
    """What one call has spent: its transient failures (against
    --mia-max-retries) and its time budget (--mia-rate-limit-wait): the
    429s and the waits asked of it, since ``started`` (the event loop's
    time of the first, when the budget's clock starts)."""

    failures: int = 0
    rate_limited: int = 0
    waits: int = 0
    started: float | None = None


@dataclass(frozen=True)
class BreakerState:
    """A role's breaker: ``armed`` until a success (or a failure that says
    nothing of the endpoint), the systematic causes of its first failures,
    and once tripped the message that ends the session.  ``name``: the
    endpoint as the message names it."""

    name: str
    armed: bool = True
    causes: tuple[str, ...] = ()
    message: str | None = None

    @property
    def tripped(self) -> bool:
        return self.message is not None


@dataclass(frozen=True)
class State:
    """All ``decide`` reads: the event loop's time, a uniform draw from
    [0, 1) for the backoff's jitter, the call's and the breaker's state, the
    role's sampling and what this attempt sent (read, never changed), and
    the limits the user set."""

    now: float
    jitter: float
    spent: Spent
    breaker: BreakerState
    sampling: Sampling
    sent: Mapping[str, Any]
    max_retries: int
    budget: float


# -- decisions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Accept:
    """The reply is the call's answer."""


@dataclass(frozen=True)
class Retry:
    """Send again after ``delay`` seconds (waited in the limiter's queue
    when the decision holds the host); ``reason``: what failed."""

    delay: float
    reason: str


@dataclass(frozen=True)
class Resend:
    """Send again at once, the way the endpoint accepts: ``adapt`` names the
    parameter to send another way; None when another call's refusal already
    changed the sampling while this request was in flight."""

    adapt: str | None = None


@dataclass(frozen=True)
class Trip:
    """The breaker tripped: the session ends with ``message``."""

    message: str


@dataclass(frozen=True)
class Fail:
    """The call fails with ``message``."""

    message: str


Action = Accept | Retry | Resend | Trip | Fail


@dataclass(frozen=True)
class Hold:
    """Hold the host's requests for the wait the server asked for, or,
    beyond the budget, fail them until then with ``refusal``."""

    ask: Ask
    refusal: str | None = None


@dataclass(frozen=True)
class Notice:
    """A long wait the server asked for, to be said once per host."""

    ask: Ask
    consequence: str = "calls wait it out"


@dataclass(frozen=True)
class Decision:
    """The action, the call's and the breaker's new state, and what the
    host is told: a hold of its requests, a notice."""

    action: Action
    spent: Spent
    breaker: BreakerState
    hold: Hold | None = None
    notice: Notice | None = None


# -- deciding -----------------------------------------------------------------------


def decide(outcome: Outcome, state: State) -> Decision:
    """What the call does after ``outcome``, given ``state``."""
    if isinstance(outcome, Replied):
        hold, notice = _hold(outcome.ask, state.budget)
        return Decision(Accept(), state.spent, replace(state.breaker, armed=False), hold, notice)
    if isinstance(outcome, RateLimited):
        return _rate_limited(outcome, state)
    if isinstance(outcome, StatusError):
        return _status(outcome, state)
    if isinstance(outcome, TimedOut):
        return _retry(f"request timed out after {outcome.seconds:g} s", state)
    if isinstance(outcome, ConnectionFailed):
        return _counted(state, outcome.cause, "") or _retry(outcome.detail, _failed(state, outcome.cause))
    if isinstance(outcome, Malformed):
        if not outcome.systematic:
            return _retry(f"malformed reply ({outcome.detail})", state)
        return _counted(state, outcome.detail, "") or _retry(f"malformed reply ({outcome.detail})", _failed(state, outcome.detail))
    return _counted(state, outcome.cause, "") or Decision(Fail(outcome.detail), state.spent, breaker_failed(state.breaker, outcome.cause))


def _rate_limited(outcome: RateLimited, state: State) -> Decision:
    """A 429: wait as asked (every request to the host), else back off,
    within the call's time budget."""
    ask = outcome.ask
    delay = ask.seconds if ask is not None else state.jitter * backoff_cap(state.spent.rate_limited + 1)
    spent = _waited(state.spent, state.now, rate_limited=True)
    if (over := _over_budget(spent, state, delay, ask)) is not None:
        return Decision(Fail(f"{outcome.detail}; {over}"), spent, state.breaker)
    hold, notice = _hold(ask, state.budget)
    return Decision(Retry(delay, outcome.detail), spent, state.breaker, hold, notice)


def _status(outcome: StatusError, state: State) -> Decision:
    """An error status: adapt to a 400's refusal, retry a transient one
    (within the budget when it asked for a wait), else fail."""
    if outcome.status == 400:
        if (refused := state.sampling.refusal(outcome.param, outcome.text)) is not None:
            return Decision(Resend(refused), state.spent, state.breaker)
        if state.sampling.outdated(outcome.param, outcome.text, state.sent):
            return Decision(Resend(), state.spent, state.breaker)
    if outcome.status in _TRANSIENT_STATUS or outcome.status >= 500:
        ask = outcome.ask
        if ask is None:
            return _retry(outcome.detail, state)
        spent = _waited(state.spent, state.now, rate_limited=False)
        if (over := _over_budget(spent, state, ask.seconds, ask)) is not None:
            return Decision(Fail(f"{outcome.detail}; {over}"), spent, state.breaker)
        return _retry(outcome.detail, replace(state, spent=spent), asked=ask.seconds, notice=_notice(ask))
    breaker = breaker_failed(state.breaker, outcome.cause, outcome.note)
    if breaker.message is not None:
        return Decision(Trip(breaker.message), state.spent, breaker)
    return Decision(Fail(outcome.detail), state.spent, breaker)


def _retry(detail: str, state: State, *, asked: float | None = None, notice: Notice | None = None) -> Decision:
    """A transient failure: retry after the wait the server asked for, else
    a backoff, or fail once --mia-max-retries are used up."""
    spent = replace(state.spent, failures=state.spent.failures + 1)
    if spent.failures > state.max_retries:
        return Decision(Fail(detail), spent, state.breaker, notice=notice)
    delay = asked if asked is not None else state.jitter * backoff_cap(spent.failures)
    return Decision(Retry(delay, detail), spent, state.breaker, notice=notice)


def _counted(state: State, cause: str | None, note: str) -> Decision | None:
    """The ``Trip`` when this failure trips the breaker (or it already
    tripped), else None."""
    breaker = breaker_failed(state.breaker, cause, note)
    return Decision(Trip(breaker.message), state.spent, breaker) if breaker.message is not None else None


def _failed(state: State, cause: str | None) -> State:
    return replace(state, breaker=breaker_failed(state.breaker, cause))


def breaker_failed(breaker: BreakerState, cause: str | None, note: str = "") -> BreakerState:
    """The breaker after a failed attempt.  ``cause``: the failure's when
    every call would fail the same way (compared as text), None to disarm
    it; ``note``: what the message adds (the path called, a hint).  Trips
    when the first ``BREAKER_ATTEMPTS`` attempts all failed alike: a dead
    host, a wrong URL, a bad key or model name fail every later call too,
    and 400 samples times seven attempts would take many minutes to say so."""
    if not breaker.armed or breaker.tripped:
        return breaker
    if cause is None:
        return replace(breaker, armed=False)
    causes = (*breaker.causes, cause)
    message = None
    if len(causes) >= BREAKER_ATTEMPTS and len(set(causes)) == 1:
        message = (
            f"{breaker.name} is unusable: {cause} on each of the first "
            f"{len(causes)} attempts{note}; the run stops here (the rest of the samples are not run)"
        )
    return replace(breaker, causes=causes, message=message)


# -- the time budget and the server's waits -------------------------------------------


def _waited(spent: Spent, now: float, *, rate_limited: bool) -> Spent:
    """``spent`` with one more wait asked of the budget (a 429, or a wait a
    server asked for); the budget's clock starts at the first."""
    started = now if spent.started is None else spent.started
    return replace(spent, started=started, rate_limited=spent.rate_limited + rate_limited, waits=spent.waits + 1)


def _over_budget(spent: Spent, state: State, delay: float, ask: Ask | None) -> str | None:
    """Why waiting ``delay`` more would pass the call's budget, else None."""
    assert spent.started is not None  # _waited started the clock
    if state.now + delay <= spent.started + state.budget:
        return None
    if ask is not None and ask.seconds > state.budget:
        return f"server asked to retry after {seconds_text(ask.seconds)} s ({ask.header}), more than the {state.budget:g} s --mia-rate-limit-wait budget"
    return f"{budget_message(state.budget, spent.rate_limited, spent.waits, state.now - spent.started, delay)} (--mia-rate-limit-wait)"


def _hold(ask: Ask | None, budget: float) -> tuple[Hold | None, Notice | None]:
    """Pause the host's requests as the server asked; a pause beyond the
    budget fails them instead (each with the reason), never stalls."""
    if ask is None:
        return None, None
    if ask.seconds <= budget:
        return Hold(ask), _notice(ask)
    reason = (
        f"server asked to pause requests for {seconds_text(ask.seconds)} s ({ask.header}), "
        f"more than the {budget:g} s --mia-rate-limit-wait budget"
    )
    return Hold(ask, reason), _notice(ask, f"calls to it fail until then (more than the {budget:g} s --mia-rate-limit-wait budget)")


def _notice(ask: Ask, consequence: str = "calls wait it out") -> Notice | None:
    """A wait long enough to be said: a run that seems stuck says why."""
    return Notice(ask, consequence) if ask.seconds > NOTICE_AFTER else None


def seconds_text(seconds: float) -> str:
    """Seconds for a message: whole from 10 s up, never in e-notation."""
    return f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.3g}"
