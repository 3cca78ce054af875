"""The per-sample result record: what an item produces and reports carry.

A plain dict of builtins on purpose: it crosses the xdist channel, which
only serializes builtin types, and it is written to the JSON report as is.
"""

from __future__ import annotations

from typing import Any


def blank_result(index: int, type_: str, components: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A result with nothing obtained yet (status ``failed`` until judged)."""
    return {
        "index": index,
        "type": type_,
        "status": "failed",
        "score": None,
        "components": components or [],
        "response": None,
        "finish_reason": None,
        "judge_reply": None,
        "reason": "",
        "failed_stage": None,
        "metrics": {},
        "cached": {"model": False, "judge": False},
        "calls": {"model": 0, "judge": 0},
        "retries": 0,
        "usage": {
            "model": {"prompt_tokens": 0, "completion_tokens": 0},
            "judge": {"prompt_tokens": 0, "completion_tokens": 0},
        },
        "image": None,
        "seconds": 0.0,
    }
