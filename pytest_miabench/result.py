"""The per-sample result record: what an item produces and reports carry.

A plain dict of builtins on purpose: it crosses the xdist channel, which
only serializes builtin types, and it is written to the JSON report as is.
"""

from __future__ import annotations

from typing import Any

TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_prompt_tokens", "cached_completion_tokens")


def blank_result(index: int, type_: str, components: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A result with nothing obtained yet (status ``failed`` until judged)."""
    return {
        "index": index,
        "type": type_,
        "status": "failed",
        "score": None,
        "components": components or [],
        "response": None,
        "reasoning": None,
        "finish_reason": None,
        "judge_reply": None,
        "reason": "",
        "failed_stage": None,
        "metrics": {},
        "cached": {"model": False, "judge": False},
        "calls": {"model": 0, "judge": 0},
        "retries": 0,
        "rate_limited": 0,
        "sampling_deviations": [],
        # Tokens of this run's API calls, and of answers served from the cache.
        "usage": {role: dict.fromkeys(TOKEN_FIELDS, 0) for role in ("model", "judge")},
        "instruction": None,
        "image": None,
        "thumbnail": None,
        "seconds": 0.0,
    }
