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
    from .apple import AppleProtocol
    from .evalscope import EvalscopeProtocol
    from .evalscope_json import EvalscopeJsonProtocol
    from .lmms_eval import LmmsEvalProtocol
    from .vlmevalkit import VLMEvalKitProtocol

    # evalscope (1.5.2-1.10) first: it is the default.
    classes: list[type[Protocol]] = [
        EvalscopeProtocol,
        EvalscopeJsonProtocol,
        LmmsEvalProtocol,
        VLMEvalKitProtocol,
        AppleProtocol,
    ]
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
