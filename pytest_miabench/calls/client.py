"""What a role's client asks for: its sampling parameters (``Sampling``),
as the settings ask for them (``model_sampling``, ``judge_sampling``: one
definition for the engine that sends them and the estimate that keys the
cache with them), and as the endpoint turns out to accept them (``adapt``).

The per-protocol judge settings these start from are ``protocols.sampling``'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config.settings import Settings
from ..protocols.base import Protocol
from ..protocols.sampling import judge_settings

# OpenAI's reasoning families refuse max_tokens and any temperature but the
# default; they are asked the accepted way from the first call.  Other hosts
# and names are adapted when they answer 400 (see ``Sampling.adapt``).
_REASONING_NAME = re.compile(r"^(?:[\w.-]+/)?(?:o\d|gpt-5)", re.IGNORECASE)


def model_sampling(settings: Settings) -> Sampling:
    """The model's sampling as the settings ask for it: what the engine
    sends and what the estimate keys the cache with (one definition)."""
    assert settings.model is not None  # resolve() requires it with --mia-bench
    return Sampling.for_model(settings.model, settings.max_tokens, settings.temperature, settings.reasoning_effort, settings.api)


def judge_sampling(settings: Settings, protocol: Protocol) -> Sampling:
    """The judge's sampling under ``protocol`` (its reference's defaults,
    overridden by the judge options), as ``model_sampling``."""
    chosen = judge_settings(settings, protocol)
    return Sampling.for_model(settings.judge_model, chosen.get("max_tokens"), chosen.get("temperature"), settings.judge_reasoning_effort, settings.judge_api)


@dataclass
class Sampling:
    """A role's sampling parameters, and how they were adapted to the endpoint.

    Starts as the protocol (or the user) asked; ``adapt`` changes it once per
    refusal, and ``deviations`` says in words what differs from the request.
    Shared by every call of the role, so only the first refusal costs a call.
    """

    max_tokens: int | None = None
    temperature: float | None = None
    reasoning_effort: str | None = None
    token_param: str = "max_tokens"
    send_temperature: bool = True
    deviations: list[str] = field(default_factory=list)
    # "chat" (chat.completions.create) or "responses" (responses.create),
    # which names the parameters its own way and has one token limit only.
    api: str = "chat"

    def __post_init__(self) -> None:
        if self.api == "responses":
            self.token_param = "max_output_tokens"

    @classmethod
    def for_model(
        cls, name: str, max_tokens: int | None, temperature: float | None, reasoning_effort: str | None, api: str = "chat"
    ) -> Sampling:
        sampling = cls(max_tokens, temperature, reasoning_effort, api=api)
        if _REASONING_NAME.match(name):
            sampling._use_completion_tokens(f"{name} is a reasoning model")
            sampling._drop_temperature(f"{name} is a reasoning model")
        return sampling

    def params(self) -> dict[str, Any]:
        """Keyword arguments for ``chat.completions.create`` (or ``responses.create``)."""
        params: dict[str, Any] = {}
        if self.max_tokens is not None:
            params[self.token_param] = self.max_tokens
        if self.temperature is not None and self.send_temperature:
            params["temperature"] = self.temperature
        if self.reasoning_effort is not None:
            if self.api == "responses":
                params["reasoning"] = {"effort": self.reasoning_effort}
            else:
                params["reasoning_effort"] = self.reasoning_effort
        return params

    def requested(self) -> dict[str, Any]:
        """The parameters as asked for (cache keys use these: an adaptation
        does not change what the run means to ask).  Named as chat names
        them whatever the API: the API kind is a key part of its own."""
        return Sampling(self.max_tokens, self.temperature, self.reasoning_effort).params()

    def refusal(self, param: str | None, text: str) -> str | None:
        """Which parameter a 400 refuses (``param``, ``text``: what its error
        names and says) that this sampling can send another way:
        ``max_tokens`` or ``temperature``; None if nothing applies."""
        if self.max_tokens is not None and self.token_param == "max_tokens" and (
            param == "max_tokens" or "max_completion_tokens" in text
        ):
            return "max_tokens"
        if self.temperature is not None and self.send_temperature and (
            param == "temperature" or ("temperature" in text and "unsupported" in text.lower())
        ):
            return "temperature"
        return None

    def adapt(self, refused: str) -> None:
        """Send ``refused`` (as ``refusal`` named it) the way the endpoint accepts."""
        if refused == "max_tokens":
            self._use_completion_tokens("the endpoint refused max_tokens")
        else:
            self._drop_temperature("the endpoint refused it")

    def outdated(self, param: str | None, text: str, sent: Mapping[str, Any]) -> bool:
        """Whether a 400 refuses a parameter ``sent`` held that the role no
        longer sends: another call's refusal changed the sampling while this
        request was in flight, and it is to be sent again, the accepted way."""
        now = self.params()
        return any(name in sent and name not in now and (param == name or name in text) for name in ("max_tokens", "temperature"))

    def _use_completion_tokens(self, why: str) -> bool:
        # max_output_tokens, the Responses API's only limit, has no alias to switch to.
        if self.max_tokens is None or self.token_param != "max_tokens":
            return False
        self.token_param = "max_completion_tokens"
        self.deviations.append(f"max_tokens={self.max_tokens} sent as max_completion_tokens ({why})")
        return True

    def _drop_temperature(self, why: str) -> bool:
        if self.temperature is None or not self.send_temperature:
            return False
        self.send_temperature = False
        self.deviations.append(f"temperature={self.temperature:g} not sent, the model's default applies ({why})")
        return True
