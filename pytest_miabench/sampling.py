"""The judge's sampling settings: the protocol's, unless the user overrode them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocols.base import Protocol
    from .settings import Settings


def judge_settings(settings: Settings, protocol: Protocol) -> dict[str, Any]:
    """``temperature`` and ``max_tokens`` as the judge is asked (absent: the server's default)."""
    temperature = settings.judge_temperature if settings.judge_temperature is not None else protocol.temperature
    max_tokens = settings.judge_max_tokens if settings.judge_max_tokens is not None else protocol.max_tokens
    chosen: dict[str, Any] = {}
    if temperature is not None:
        chosen["temperature"] = temperature
    if max_tokens is not None:
        chosen["max_tokens"] = max_tokens
    return chosen
