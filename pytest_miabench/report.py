"""The JSON report and the terminal summary, both from the aggregator."""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .sampling import judge_settings

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
    "reasoning",
    "instruction",
    "cached",
    "calls",
    "retries",
    "rate_limited",
    "usage",
    "image",
    "thumbnail",
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
        "ci": summary["ci"],
        "protocol_metrics": summary["protocol_metrics"],
        "judge_spread": summary.get("judge_spread"),
        "baseline": summary.get("baseline"),
        "usage": summary["usage"],
        "cost": summary["cost"],
        "model": {
            "name": s.model,
            "base_url": _endpoint_url(s.base_url),
            "api_key_env": s.api_key_env,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "reasoning_effort": s.reasoning_effort,
            "sampling_deviations": summary["sampling_deviations"]["model"],
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
            "reasoning_effort": s.judge_reasoning_effort,
            "sampling_deviations": summary["sampling_deviations"]["judge"],
        },
        "protocol": {
            "name": agg.protocol.name,
            "prompt_version": agg.protocol.prompt_version,
            "headline": agg.protocol.headline,
        },
        "dataset": {"source": s.dataset, "split": s.split, "limit": s.limit, "fingerprint": agg.fingerprint},
        "image_max_side": s.image_max_side,
        "wall_seconds": round(_now() - agg.started, 3),
        "samples": samples,
    }


def _now() -> float:
    import time

    return time.time()


def _endpoint_url(url: str | None) -> str:
    from urllib.parse import urlsplit, urlunsplit

    from .client import DEFAULT_BASE_URL

    value = url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    parts = urlsplit(value)
    # Drop any user:password@ a URL may carry; keep host, port, path.
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _passed(agg: Aggregator, summary: dict[str, Any]) -> bool:
    if summary["n_failed"] or summary["missing"] or agg.interrupted:
        return False
    return not agg.gate_reasons(summary)


def write_html(path: str, report: dict[str, Any]) -> None:
    from .html import render_html

    _write_atomic(path, render_html(report))


def write_json(path: str, data: dict[str, Any]) -> None:
    _write_atomic(path, dumps_report(data))


def dumps_report(data: dict[str, Any]) -> str:
    """The report as JSON: indented, except that each sample is one line.

    ``json`` indents only with its pure-Python encoder, ~0.1 s for 400
    samples at the end of every run; one compact line per sample uses the C
    encoder and still diffs and greps sample by sample.
    """
    parts = []
    for key, value in data.items():
        if key == "samples" and isinstance(value, list) and value:
            lines = ",\n".join("    " + json.dumps(sample, ensure_ascii=False) for sample in value)
            text = "[\n" + lines + "\n  ]"
        else:
            text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        parts.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _write_atomic(path: str, text: str) -> None:
    """Write atomically: a reader never sees half a report."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mia-report-", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        # mkstemp makes the file private; a report gets the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _ci(pair: list[float] | None) -> str:
    return "" if not pair else f"  95% CI [{pair[0]:.4f}, {pair[1]:.4f}]"


def terminal_lines(agg: Aggregator) -> list[tuple[str, dict[str, bool]]]:
    """The summary block: headline, counts, breakdowns, comparisons, gate verdict."""
    summary = agg.summary()
    plain: dict[str, bool] = {}
    lines: list[tuple[str, dict[str, bool]]] = []
    protocol = agg.protocol
    alias = f"; its {protocol.headline}" if protocol.headline != "total_score" else ""
    lines.append(
        (
            f"total_score: {_fmt(summary['total_score'])}{_ci(summary['ci']['total_score'])}"
            f"  (protocol {protocol.name}{alias}, {summary['n_counted']} samples in the mean)",
            {"bold": True},
        )
    )
    if summary.get("stopped"):
        lines.append((f"STOPPED: {summary['stopped']}", {"red": True, "bold": True}))
    counts = f"samples: {summary['n_samples']}  scored: {summary['n_scored']}  failed: {summary['n_failed']}"
    for key, label in (("n_zero", "zero by policy"), ("n_dropped", "dropped by policy"), ("n_excluded", "excluded by policy"), ("n_missing", "not run")):
        if summary[key]:
            counts += f"  {label}: {summary[key]}"
    lines.append((counts, plain))
    if summary["n_results"] and summary["total_score"] is None:
        lines.append(("warning: no sample counted in the mean (every one failed or was left out by the protocol)", {"yellow": True}))
    if summary["n_zero"] or summary["n_dropped"] or summary["n_excluded"]:
        how = "counted as 0" if summary["n_zero"] else "left out of the mean"
        lines.append((f"note: the protocol's failure policy moved the number: unparseable judge replies were {how}", {"yellow": True}))
    usage = summary["usage"]
    calls = (
        f"api calls: model {usage['model']['api_calls']}, judge {usage['judge']['api_calls']}"
        f"  cache hits: model {usage['model']['cache_hits']}, judge {usage['judge']['cache_hits']}"
        f"  retries: {usage['retries']}"
    )
    if usage.get("judge_reasks"):
        calls += f"  judge re-asks: {usage['judge_reasks']}"
    if usage.get("unclaimed_samples"):
        calls += f"  (incl. {usage['unclaimed_samples']} samples called ahead but not run)"
    lines.append((calls, plain))
    if usage.get("rate_limited"):
        lines.append((f"rate limits: {usage['rate_limited']} HTTP 429 replies; concurrency went down to {usage['concurrency_reached']}", {"yellow": True}))
    for role in ("model", "judge"):
        if summary["sampling_deviations"][role]:
            lines.append((f"sampling deviations: {role}: " + "; ".join(summary["sampling_deviations"][role]), {"yellow": True}))
    tokens = "  ".join(
        f"{role} {usage[role]['prompt_tokens']} in / {usage[role]['completion_tokens']} out"
        + (f" ({usage[role]['reasoning_tokens']} reasoning)" if usage[role].get("reasoning_tokens") else "")
        + (f" (+{usage[role]['cached_prompt_tokens']} / {usage[role]['cached_completion_tokens']} from cache)" if usage[role]["cache_hits"] else "")
        for role in ("model", "judge")
    )
    lines.append((f"tokens: {tokens}", plain))
    cost = summary.get("cost")
    if cost:
        parts = [f"{role} ${cost[role]['spent']:.4f}" for role in ("model", "judge") if cost[role]]
        unknown = [role for role in ("model", "judge") if not cost[role]]
        text = f"estimated cost: {'  '.join(parts)}"
        if cost["total_spent"] is not None:
            text += f"  total ${cost['total_spent']:.4f}"
        if unknown:
            text += f"  (no price for the {' and '.join(unknown)})"
        lines.append((text, plain))
    spread = summary.get("judge_spread")
    if spread and spread["n_compared"]:
        lines.append(
            (
                f"judge disagreement over {agg.settings.judge_repeats} repeats: mean per-sample std {_fmt(spread['mean_std'])}, "
                f"max {_fmt(spread['max_std'])}, {spread['n_disagree']} of {spread['n_compared']} samples disagree",
                plain,
            )
        )
    for key, label in (("by_component_type", "component type"), ("by_type", "instruction type")):
        if summary[key]:
            means = "  ".join(f"{k} {_fmt(v)}" for k, v in summary[key].items())
            lines.append((f"by {label}: {means}", plain))
    if summary["missing"]:
        shown = ", ".join(summary["missing"][:10])
        more = f" (+{len(summary['missing']) - 10} more)" if len(summary["missing"]) > 10 else ""
        lines.append((f"not run: {shown}{more}", {"yellow": True}))
    baseline = summary.get("baseline")
    if baseline is not None:
        lines.extend(_baseline_lines(baseline))
    reasons = agg.gate_reasons(summary)
    threshold = agg.settings.threshold
    total = summary["total_score"]
    if threshold is not None:
        if "threshold" in reasons:
            lines.append((f"FAIL: total_score {_fmt(total)} is below the threshold {threshold:g}", {"red": True, "bold": True}))
        else:
            lines.append((f"PASS: total_score {_fmt(total)} meets the threshold {threshold:g}", {"green": True, "bold": True}))
    if baseline is not None and baseline["max_drop"] is not None:
        drop = None if baseline["delta"] is None else -baseline["delta"]
        if "baseline" in reasons:
            lines.append((f"FAIL: total_score dropped by {_fmt(drop)} against the baseline (max allowed {baseline['max_drop']:g})", {"red": True, "bold": True}))
        else:
            lines.append((f"PASS: total_score changed by {_fmt(baseline['delta'])} against the baseline (max allowed drop {baseline['max_drop']:g})", {"green": True, "bold": True}))
    for path, label in ((agg.settings.report, "JSON report"), (agg.settings.html, "HTML report")):
        if path:
            lines.append((f"{label}: {path}", plain))
    return lines


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _baseline_lines(baseline: dict[str, Any]) -> list[tuple[str, dict[str, bool]]]:
    lines: list[tuple[str, dict[str, bool]]] = [
        (f"baseline {baseline['path']}: total_score {_fmt(baseline['total_score'])} -> delta {_signed(baseline['delta'])}", {}),
    ]
    for key, label in (("by_component_type", "component type"), ("by_type", "instruction type")):
        parts = "  ".join(f"{k} {_signed(v)}" for k, v in baseline[key].items())
        if parts:
            lines.append((f"  delta by {label}: {parts}", {}))
    if baseline["n_only_baseline"] or baseline["n_only_run"]:
        lines.append(
            (
                f"  warning: the sample sets differ ({baseline['n_only_baseline']} only in the baseline, "
                f"{baseline['n_only_run']} only in this run): the delta compares different means",
                {"yellow": True},
            )
        )
    if baseline["changed"]:
        movers = ", ".join(
            f"{c['nodeid']} {_fmt(c['before'])}->{_fmt(c['after'])}" for c in baseline["changed"][:5]
        )
        lines.append((f"  most changed ({baseline['n_changed']} samples changed): {movers}", {}))
    return lines
