"""Judge protocols: one module each, behind the ``Protocol`` interface."""

from __future__ import annotations

from .base import (
    DROPPED,
    EXCLUDED,
    SCORED,
    VERDICT_STATUSES,
    ZERO,
    Protocol,
    SampleSpec,
    Verdict,
)


def builtin_protocols() -> dict[str, type[Protocol]]:
    """The protocols this package ships, by name."""
    from .evalscope import EvalscopeProtocol

    classes: list[type[Protocol]] = [EvalscopeProtocol]
    return {cls.name: cls for cls in classes}


__all__ = [
    "DROPPED",
    "EXCLUDED",
    "SCORED",
    "VERDICT_STATUSES",
    "ZERO",
    "Protocol",
    "SampleSpec",
    "Verdict",
    "builtin_protocols",
]
