"""The JSON report and the terminal summary, both from the aggregator."""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .engine import judge_settings

if TYPE_CHECKING:
    from .aggregate import Aggregator

SCHEMA_VERSION = 1
SAMPLE_FIELDS = (
    "index",
    "nodeid",
    "type",
    "score",
    "status",
    "reason",
    "components",
    "response",
    "finish_reason",
    "judge_reply",
    "judge_replies",
    "judge_scores",
    "judge_reasks",
    "cached",
    "calls",
    "retries",
    "usage",
    "image",
    "seconds",
)


def build_report(agg: Aggregator) -> dict[str, Any]:
    """Everything a later run or a reader needs; never a key (only the names
    of the variables that hold them)."""
    summary = agg.summary()
    s = agg.settings
    samples = []
    for nodeid, result in sorted(agg.results.items(), key=lambda kv: kv[1]["index"]):
        record = {"nodeid": nodeid, **result}
        samples.append({name: record.get(name) for name in SAMPLE_FIELDS})
    passed = _passed(agg, summary)
    judge = judge_settings(s, agg.protocol)
    return {
        "schema_version": SCHEMA_VERSION,
        "plugin_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "complete": not agg.interrupted and not summary["missing"],
        "total_score": summary["total_score"],
        "n_samples": summary["n_samples"],
        "n_scored": summary["n_scored"],
        "n_zero": summary["n_zero"],
        "n_dropped": summary["n_dropped"],
        "n_excluded": summary["n_excluded"],
        "n_failed": summary["n_failed"],
        "n_missing": summary["n_missing"],
        "missing": summary["missing"],
        "threshold": s.threshold,
        "passed": passed,
        "by_type": summary["by_type"],
        "by_component_type": summary["by_component_type"],
        "protocol_metrics": summary["protocol_metrics"],
        "usage": summary["usage"],
        "model": {
            "name": s.model,
            "base_url": _endpoint_url(s.base_url),
            "api_key_env": s.api_key_env,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
        },
        "judge": {
            "name": s.judge_model,
            "base_url": _endpoint_url(s.judge_base_url),
            "api_key_env": s.judge_api_key_env,
            "sees_image": agg.judge_image,
            "temperature": judge["temperature"] if "temperature" in judge else None,
            "max_tokens": judge.get("max_tokens"),
            "retries": s.judge_retries,
            "repeats": s.judge_repeats,
        },
        "protocol": {"name": agg.protocol.name, "prompt_version": agg.protocol.prompt_version},
        "dataset": {"source": s.dataset, "split": s.split, "limit": s.limit},
        "image_max_side": s.image_max_side,
        "wall_seconds": round(_now() - agg.started, 3),
        "samples": samples,
    }


def _now() -> float:
    import time

    return time.time()


def _endpoint_url(url: str | None) -> str:
    from .client import DEFAULT_BASE_URL

    from urllib.parse import urlsplit, urlunsplit

    value = url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    parts = urlsplit(value)
    # Drop any user:password@ a URL may carry; keep host, port, path.
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _passed(agg: Aggregator, summary: dict[str, Any]) -> bool:
    if agg.gate_failed or summary["n_failed"] or summary["missing"] or agg.interrupted:
        return False
    total = summary["total_score"]
    threshold = agg.settings.threshold
    return not (threshold is not None and (total is None or total < threshold))


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a report."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mia-report-", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def terminal_lines(agg: Aggregator) -> list[tuple[str, dict[str, bool]]]:
    """The summary block: headline, counts, breakdowns, gate verdict."""
    summary = agg.summary()
    plain: dict[str, bool] = {}
    lines: list[tuple[str, dict[str, bool]]] = []
    lines.append((f"total_score: {_fmt(summary['total_score'])}  (protocol {agg.protocol.name}, {summary['n_counted']} samples in the mean)", {"bold": True}))
    counts = (
        f"samples: {summary['n_samples']}  scored: {summary['n_scored']}  failed: {summary['n_failed']}"
    )
    if summary["n_zero"]:
        counts += f"  zero by policy: {summary['n_zero']}"
    if summary["n_dropped"]:
        counts += f"  dropped by policy: {summary['n_dropped']}"
    if summary["n_excluded"]:
        counts += f"  excluded by policy: {summary['n_excluded']}"
    if summary["n_missing"]:
        counts += f"  not run: {summary['n_missing']}"
    lines.append((counts, plain))
    if summary["n_zero"] or summary["n_dropped"] or summary["n_excluded"]:
        lines.append(
            (
                "note: the protocol's failure policy moved the number: unparseable judge replies were "
                + ("counted as 0" if summary["n_zero"] else "left out of the mean"),
                {"yellow": True},
            )
        )
    usage = summary["usage"]
    lines.append(
        (
            f"api calls: model {usage['model']['api_calls']}, judge {usage['judge']['api_calls']}"
            f"  cache hits: model {usage['model']['cache_hits']}, judge {usage['judge']['cache_hits']}"
            f"  retries: {usage['retries']}",
            plain,
        )
    )
    if summary["by_component_type"]:
        parts = "  ".join(f"{k} {_fmt(v)}" for k, v in summary["by_component_type"].items())
        lines.append((f"by component type: {parts}", plain))
    if summary["by_type"]:
        parts = "  ".join(f"{k} {_fmt(v)}" for k, v in summary["by_type"].items())
        lines.append((f"by instruction type: {parts}", plain))
    if summary["missing"]:
        shown = ", ".join(summary["missing"][:10])
        more = f" (+{len(summary['missing']) - 10} more)" if len(summary["missing"]) > 10 else ""
        lines.append((f"not run: {shown}{more}", {"yellow": True}))
    threshold = agg.settings.threshold
    if threshold is not None:
        total = summary["total_score"]
        if agg.gate_failed or total is None or total < threshold:
            lines.append((f"FAIL: total_score {_fmt(total)} is below the threshold {threshold:g}", {"red": True, "bold": True}))
        else:
            lines.append((f"PASS: total_score {_fmt(total)} meets the threshold {threshold:g}", {"green": True, "bold": True}))
    if agg.settings.report:
        lines.append((f"JSON report: {agg.settings.report}", plain))
    return lines
