"""Sampling settings sent with the API calls.

Below the engine and the reports, which both need them: the engine to build
the judge's request (and its cache key), the JSON report to record what the
judge ran with.
"""

from __future__ import annotations

from typing import TypedDict

from ..config.settings import Settings
from .base import Protocol


class JudgeSampling(TypedDict, total=False):
    """Request parameters; a key is absent when the server's default applies."""

    temperature: float
    max_tokens: int


def judge_settings(settings: Settings, protocol: Protocol) -> JudgeSampling:
    """The judge's sampling settings: the protocol's, unless overridden."""
    temperature = settings.judge_temperature if settings.judge_temperature is not None else protocol.temperature
    max_tokens = settings.judge_max_tokens if settings.judge_max_tokens is not None else protocol.max_tokens
    chosen: JudgeSampling = {}
    if temperature is not None:
        chosen["temperature"] = temperature
    if max_tokens is not None:
        chosen["max_tokens"] = max_tokens
    return chosen


def judge_sees_image(settings: Settings, protocol: Protocol) -> bool:
    """Whether the judge gets the image: as the protocol does, unless
    --mia-judge-image / --mia-no-judge-image says otherwise."""
    return protocol.judge_sees_image if settings.judge_image is None else settings.judge_image
