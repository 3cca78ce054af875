"""Compare a run with an earlier JSON report (``--mia-baseline``).

Only like can be compared: a baseline of another protocol, dataset or split
measures something else, so it is refused with a usage error rather than
producing a meaningless delta.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

from .result import SCHEMA_VERSION, BaselineComparison, ChangedSample, SampleRecord, Tally

CHANGED_LISTED = 20


class BaselineSample(TypedDict):
    index: int
    score: float | None


class Baseline(TypedDict):
    """What a comparison reads from a baseline report, checked by ``load``."""

    created: object
    total_score: float
    by_type: dict[str, float | None]
    by_component_type: dict[str, float | None]
    samples: list[BaselineSample]


class BaselineError(ValueError):
    """The baseline report cannot be used; the message says why."""


def load(path: str, protocol: str, dataset: str, split: str, fingerprint: str | None = None) -> Baseline:
    """Read and check a baseline report; keep what ``compare`` reads."""
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
    same_source = (their_data.get("source"), their_data.get("split")) == (dataset, split)
    # The same rows under another path (a CI checkout, a relative path) match too.
    same_rows = fingerprint is not None and their_data.get("fingerprint") == fingerprint
    if not (same_source or same_rows):
        raise BaselineError(
            f"{path}: made on dataset {their_data.get('source')!r} split {their_data.get('split')!r}, "
            f"this run uses {dataset!r} split {split!r} (and the rows differ)"
        )
    _check_shape(data, path)
    return {
        "created": data.get("created"),
        "total_score": data["total_score"],
        "by_type": data.get("by_type") or {},
        "by_component_type": data.get("by_component_type") or {},
        "samples": [{"index": s["index"], "score": s.get("score")} for s in data.get("samples") or []],
    }


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_shape(data: dict[str, Any], path: str) -> None:
    """Every field the comparison reads has the type a report gives it: a
    hand-edited or foreign file must fail here, at start-up, not after
    every sample has been paid for."""
    if not _number(data.get("total_score")):
        raise BaselineError(f"{path}: total_score is {data.get('total_score')!r}, not a number")
    for key in ("by_type", "by_component_type"):
        block = data.get(key, {})
        if not isinstance(block, dict) or not all(v is None or _number(v) for v in block.values()):
            raise BaselineError(f"{path}: {key} must map names to numbers")
    samples = data.get("samples", [])
    if not isinstance(samples, list):
        raise BaselineError(f"{path}: samples must be a list")
    for sample in samples:
        if not (
            isinstance(sample, dict)
            and isinstance(sample.get("index"), int)
            and (sample.get("score") is None or _number(sample.get("score")))
        ):
            raise BaselineError(f"{path}: every sample needs an integer index and a numeric or null score")


def _deltas(now: Mapping[str, float | None], before: Mapping[str, float | None]) -> dict[str, float | None]:
    keys = sorted(set(now) | set(before))
    out: dict[str, float | None] = {}
    for key in keys:
        a, b = now.get(key), before.get(key)
        out[key] = None if a is None or b is None else a - b
    return out


def compare(
    summary: Tally, results: Mapping[str, SampleRecord], baseline: Baseline, path: str, max_drop: float | None
) -> BaselineComparison:
    """The ``baseline`` block of a report: deltas, biggest movers, the gate.
    ``results`` maps node ids to this run's records."""
    total = summary["total_score"]
    before_total = baseline["total_score"]
    delta = None if total is None else total - before_total
    before_scores = {s["index"]: s["score"] for s in baseline["samples"]}
    run_indexes = {record["index"] for record in results.values()}
    changed: list[ChangedSample] = []
    for nodeid, record in results.items():
        index = record["index"]
        if index not in before_scores:
            continue
        before, after = before_scores[index], record["score"]
        if before == after:
            continue
        changed.append(
            {
                "index": index,
                "nodeid": nodeid,
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
        "created": baseline["created"],
        "total_score": before_total,
        "delta": delta,
        "by_type": _deltas(summary["by_type"], baseline["by_type"]),
        "by_component_type": _deltas(summary["by_component_type"], baseline["by_component_type"]),
        "n_changed": len(changed),
        # A delta of means over different sample sets is worth a warning.
        "n_only_baseline": len(set(before_scores) - run_indexes),
        "n_only_run": len(run_indexes - set(before_scores)),
        "changed": changed[:CHANGED_LISTED],
        "max_drop": max_drop,
        "gate_failed": gate_failed,
    }
