"""A spend ceiling for a run: ``--mia-budget-tokens N`` and ``--mia-budget-usd X``.

One ``Budget`` per process, consulted by ``pipeline._cached_call`` before a
call starts and told what each reply cost (the tokens the endpoint reported,
prompt plus completion, reasoning included).  Once the spend has reached the
ceiling no new call starts; calls already in flight finish, their answers
are kept and cached, so a run can overshoot by at most what was in flight.

Under xdist the budget is for the whole run, not per worker, so workers
share their spend.  They do it through the store they already share with the
controller for the interrupt handoff (``run/handoff.py``): the response cache,
or without one (``--mia-no-cache``) a SQLite file in a temporary directory
of the session, which the controller makes before any worker starts and
removes at the end.  Each worker writes only its own total, under
``<session>:<worker>`` in the ``budget`` layer (one row per worker, so no
read-modify-write race between processes), and sums every worker's row
before a call starts.  SQLite in WAL mode is already what makes concurrent
writers safe there; a counter file of our own would need its own locking.
A store that fails (a locked or broken database) costs the sharing, not the
run: each worker then counts its own spend only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config.settings import Settings

#: The cache layer where workers share their spend (see the module's docstring).
LAYER = "budget"
#: How a budget's reason starts: items, the gate and the aggregator recognise it by this.
REASON_PREFIX = "budget spent"


class SharedStore(Protocol):
    """What the budget needs of ``cache.AsyncCache``."""

    async def put(self, layer: str, key: str, value: dict[str, Any]) -> None: ...

    async def values(self, layer: str, prefix: str) -> list[dict[str, Any]]: ...


def role_prices(settings: Settings) -> dict[str, tuple[float, float]]:
    """Dollars per million input/output tokens of each role whose model
    ``--mia-price`` names ({"model": (in, out), "judge": ...})."""
    prices = {name: (inp, out) for name, inp, out in settings.price or ()}
    found = {}
    for role, name in (("model", settings.model), ("judge", settings.judge_model)):
        if name is not None and name in prices:
            found[role] = prices[name]
    return found


def dollars(prices: Mapping[str, tuple[float, float]], role: str, prompt_tokens: int, completion_tokens: int) -> float:
    """What a call's tokens cost at ``prices`` (0 for a role without a price)."""
    inp, out = prices.get(role, (0.0, 0.0))
    return (prompt_tokens * inp + completion_tokens * out) / 1e6


@dataclass
class Spend:
    tokens: int = 0
    usd: float = 0.0


@dataclass
class Budget:
    """The ceiling, this process's spend, and the other workers' last known one."""

    tokens: int | None
    usd: float | None
    prices: dict[str, tuple[float, float]]
    # xdist: (key prefix of this session, this worker's id, the shared store).
    shared: tuple[str, str, SharedStore] | None = None
    own: Spend = field(default_factory=Spend)
    others: Spend = field(default_factory=Spend)
    #: Why new calls are refused, once the budget is spent (None before).
    spent: str | None = None

    @classmethod
    def of(cls, settings: Settings, shared: tuple[str, str, SharedStore] | None = None) -> Budget | None:
        if settings.budget_tokens is None and settings.budget_usd is None:
            return None
        return cls(settings.budget_tokens, settings.budget_usd, role_prices(settings), shared)

    async def check(self) -> str | None:
        """Before a call starts: None when it may, else why not (and from
        then on, for every later call of this process)."""
        if self.spent is not None:
            return self.spent
        if self.shared is not None:
            await self._read_others()
        total = Spend(self.own.tokens + self.others.tokens, self.own.usd + self.others.usd)
        if self.tokens is not None and total.tokens >= self.tokens:
            self.spent = f"{REASON_PREFIX}: {total.tokens} tokens reported, the budget is {self.tokens} (--mia-budget-tokens)"
        elif self.usd is not None and total.usd >= self.usd:
            self.spent = f"{REASON_PREFIX}: ${total.usd:.4f} spent, the budget is ${self.usd:g} (--mia-budget-usd)"
        return self.spent

    async def spend(self, role: str, prompt_tokens: int, completion_tokens: int) -> None:
        """A reply arrived: count what the endpoint reported it cost."""
        self.own.tokens += prompt_tokens + completion_tokens
        self.own.usd += dollars(self.prices, role, prompt_tokens, completion_tokens)
        if self.shared is not None:
            prefix, worker, store = self.shared
            await store.put(LAYER, f"{prefix}:{worker}", {"worker": worker, "tokens": self.own.tokens, "usd": self.own.usd})

    async def _read_others(self) -> None:
        prefix, worker, store = self.shared  # type: ignore[misc]  # checked by the caller
        tokens, usd = 0, 0.0
        for value in await store.values(LAYER, f"{prefix}:"):
            if value.get("worker") == worker:
                continue
            t, u = value.get("tokens"), value.get("usd")
            if isinstance(t, int) and not isinstance(t, bool) and t > 0:
                tokens += t
            if isinstance(u, (int, float)) and not isinstance(u, bool) and math.isfinite(u) and u > 0:
                usd += float(u)
        self.others = Spend(tokens, usd)
