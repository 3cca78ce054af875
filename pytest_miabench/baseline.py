"""Compare a run with an earlier JSON report (``--mia-baseline``).

Only like can be compared: a baseline of another protocol, dataset or split
measures something else, so it is refused with a usage error rather than
producing a meaningless delta.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .report import SCHEMA_VERSION

CHANGED_LISTED = 20


class BaselineError(ValueError):
    """The baseline report cannot be used; the message says why."""


def load(path: str, protocol: str, dataset: str, split: str) -> dict[str, Any]:
    """Read and check a baseline report."""
    try:
        data = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{path}: not a JSON report: {exc}") from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise BaselineError(f"{path}: not a pytest-miabench JSON report (no schema_version)")
    if data["schema_version"] != SCHEMA_VERSION:
        raise BaselineError(f"{path}: schema_version {data['schema_version']!r}, this version reads {SCHEMA_VERSION}")
    theirs = (data.get("protocol") or {}).get("name")
    if theirs != protocol:
        raise BaselineError(f"{path}: made with protocol {theirs!r}, this run uses {protocol!r}; scores are not comparable")
    their_data = data.get("dataset") or {}
    if (their_data.get("source"), their_data.get("split")) != (dataset, split):
        raise BaselineError(
            f"{path}: made on dataset {their_data.get('source')!r} split {their_data.get('split')!r}, "
            f"this run uses {dataset!r} split {split!r}"
        )
    if data.get("total_score") is None:
        raise BaselineError(f"{path}: has no total_score to compare with")
    return data


def _deltas(now: dict[str, Any], before: dict[str, Any]) -> dict[str, float | None]:
    keys = sorted(set(now) | set(before))
    out: dict[str, float | None] = {}
    for key in keys:
        a, b = now.get(key), before.get(key)
        out[key] = None if a is None or b is None else a - b
    return out


def compare(summary: dict[str, Any], samples: list[dict[str, Any]], baseline: dict[str, Any], path: str, max_drop: float | None) -> dict[str, Any]:
    """The ``baseline`` block of a report: deltas, biggest movers, the gate."""
    total = summary["total_score"]
    before_total = baseline["total_score"]
    delta = None if total is None else total - before_total
    before_scores = {s.get("index"): s.get("score") for s in baseline.get("samples") or []}
    changed = []
    for sample in samples:
        index = sample["index"]
        if index not in before_scores:
            continue
        before, after = before_scores[index], sample["score"]
        if before == after:
            continue
        changed.append(
            {
                "index": index,
                "nodeid": sample.get("nodeid"),
                "before": before,
                "after": after,
                "delta": None if before is None or after is None else after - before,
            }
        )
    # Biggest drops first: that is what a release gate is looking for.
    changed.sort(key=lambda c: (c["delta"] is None, c["delta"] if c["delta"] is not None else 0.0, c["index"]))
    gate_failed = None
    if max_drop is not None:
        gate_failed = delta is None or -delta > max_drop + 1e-12
    return {
        "path": path,
        "created": baseline.get("created"),
        "total_score": before_total,
        "delta": delta,
        "by_type": _deltas(summary["by_type"], baseline.get("by_type") or {}),
        "by_component_type": _deltas(summary["by_component_type"], baseline.get("by_component_type") or {}),
        "n_changed": len(changed),
        "changed": changed[:CHANGED_LISTED],
        "max_drop": max_drop,
        "gate_failed": gate_failed,
    }
