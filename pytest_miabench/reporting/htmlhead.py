"""The top of the HTML page as plain view data: the headline number with
its interval, the verdict and why, the run's facts, the counts, the banners
and the samples not run.

Values are read defensively (any field may be missing or of a wrong type)
and numbers formatted here; text is left as it is: the templates escape it
(``html.render_html``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..result import DEMO_WARNING, mock_warning
from .values import count, fixed, integer, mapping, number, pair, sequence, signed, text

View = dict[str, Any]
MAX_MISSING_SHOWN = 200


def header(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> View:
    """Title, headline number with its interval and verdict, run facts, counts."""
    ci_block = mapping(report.get("ci"))
    ci = pair(ci_block.get("total_score"))
    level = number(ci_block.get("level"))
    level_txt = f"{level * 100:g}%" if level is not None and 0 < level < 1 else "95%"
    return {
        "heading": "DEMO" if report.get("demo") is True else text(mapping(report.get("model")).get("name")) or "model",
        "demo_banner": _demo_banner(report),
        "total": fixed(report.get("total_score")),
        "ci": f"{level_txt} CI " + ("n/a" if ci is None else f"[{ci[0]:.4f}, {ci[1]:.4f}]"),
        "verdict": _verdict(report),
        "meta": _meta(report),
        "counts": _counts(report, samples),
        "banners": _banners(report),
        "missing": _missing(report),
    }


def _verdict(report: Mapping[str, Any]) -> View | None:
    """PASS / FAIL and why; None when no gate was set and nothing failed."""
    threshold = number(report.get("threshold"))
    baseline = mapping(report.get("baseline"))
    gate = threshold is not None or bool(baseline) and (
        baseline.get("max_drop") is not None or baseline.get("gate_failed") is not None
    )
    why: list[str] = []
    if threshold is not None:
        total = number(report.get("total_score"))
        ok = total is not None and total >= threshold
        why.append(f"total_score {fixed(total)} {'meets' if ok else 'is below'} the threshold {threshold:g}")
    if baseline:
        why += _baseline_why(baseline)
    if integer(report.get("n_failed")):
        why.append(f"{count(report.get('n_failed'))} sample(s) failed")
    if integer(report.get("n_missing")):
        why.append(f"{count(report.get('n_missing'))} sample(s) not run")
    stopped = mapping(report.get("budget")).get("stopped")
    if stopped:
        why.append(f"stopped by the budget: {stopped}")
    if report.get("passed") is True and gate:
        return {"badge": "PASS", "cls": "pass", "why": why}
    if report.get("passed") is False:
        return {"badge": "FAIL", "cls": "fail", "why": why}
    return None


def _baseline_why(baseline: Mapping[str, Any]) -> list[str]:
    """Why the baseline gate holds or fails (reports of older versions have no gate_verdict)."""
    verdict = baseline.get("gate_verdict")
    drop = f"95% CI of the paired change (this run \u2212 baseline) {_change_ci(baseline)}, max drop {fixed(baseline.get('max_drop'))}"
    if verdict == "refused":
        return [f"the baseline is not comparable: {baseline.get('refused')}"]
    if verdict == "regression":
        return [f"the score dropped more than allowed against the baseline ({drop})"]
    if verdict == "inconclusive":
        return [f"a drop larger than allowed against the baseline cannot be ruled out ({drop})"]
    if verdict == "pass":
        return [f"no drop larger than allowed against the baseline ({drop})"]
    if baseline.get("gate_failed") is True:  # a report of an older version
        return [
            f"the score dropped more than allowed against the baseline "
            f"(delta {signed(baseline.get('delta'))}, max drop {fixed(baseline.get('max_drop'))})"
        ]
    if baseline.get("max_drop") is not None:
        return [f"delta against the baseline {signed(baseline.get('delta'))} is within the allowed drop {fixed(baseline.get('max_drop'))}"]
    return []


def _change_ci(base: Mapping[str, Any]) -> str:
    """The paired interval of the change (this run - baseline): the gate
    passes when its lower bound is at least -max_drop."""
    ci = pair(base.get("diff_ci"))
    return "n/a" if ci is None else f"[{signed(ci[0])}, {signed(ci[1])}]"


def _entry(term: str, parts: list[tuple[str, Any]], lines: bool = False, id_: str | None = None) -> View:
    """A row of the run facts: ``parts`` are (style, text) pairs, shown with
    the style ("b", "mono", "none", "stopped" or "") and separated by dots,
    or one per line."""
    return {"term": term, "parts": parts, "lines": lines, "id": id_}


def _meta(report: Mapping[str, Any]) -> list[View]:
    """What ran, on what, when, and what it used."""
    protocol = mapping(report.get("protocol"))
    version = protocol.get("prompt_version")
    created = text(report.get("created"))
    meta = [
        _entry("model", _endpoint(mapping(report.get("model")), (("temperature", "temperature"), ("max_tokens", "max_tokens")))),
        _entry(
            "judge",
            _endpoint(mapping(report.get("judge")), (("sees_image", "sees image:"), ("temperature", "temperature"), ("max_tokens", "max_tokens"))),
        ),
        _entry("protocol", [("b", protocol.get("name"))] + ([("", f"prompt version {version}")] if version is not None else [])),
        _entry("dataset", _dataset_meta(mapping(report.get("dataset")))),
        _entry("date", [("", created)] if created else [("none", "unknown")]),
    ]
    threshold = number(report.get("threshold"))
    if threshold is not None:
        meta.append(_entry("threshold", [("", f"{threshold:g}")]))
    usage = _usage_meta(mapping(report.get("usage")))
    if usage:
        meta.append(_entry("usage", usage, lines=True))
    budget = mapping(report.get("budget"))
    if budget:
        meta.append(_entry("budget", _budget_meta(budget), lines=True, id_="budget"))
    run = _run_meta(report)
    if run:
        meta.append(_entry("run", run))
    return meta


def _endpoint(info: Mapping[str, Any], extra: Sequence[tuple[str, str]]) -> list[tuple[str, Any]]:
    """The model's or the judge's name, URL and sampling (``extra``: key, label)."""
    name = info.get("name")
    parts: list[tuple[str, Any]] = [("b", name) if name is not None else ("none", "unknown")]
    if info.get("base_url"):
        parts.append(("mono", info.get("base_url")))
    parts += [("", f"{label} {text(info.get(key))}") for key, label in extra if info.get(key) is not None]
    return parts


def _dataset_meta(dataset: Mapping[str, Any]) -> list[tuple[str, Any]]:
    texts = [f"{label} {dataset.get(key)}" for key, label in (("source", ""), ("split", "split"), ("limit", "limit")) if dataset.get(key) is not None]
    if texts:  # the line is stripped as a whole: the source has no label
        texts[0] = texts[0].lstrip()
        texts[-1] = texts[-1].rstrip()
    return [("", t) for t in texts] if texts not in ([], [""]) else [("none", "unknown")]


def _usage_meta(usage: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Calls, cache hits and tokens per role, and retries; empty when unknown."""
    parts = []
    for role in ("model", "judge"):
        u = mapping(usage.get(role))
        if u:
            parts.append(
                f"{role}: {count(u.get('api_calls'))} calls, {count(u.get('cache_hits'))} cache hits, "
                f"{count(u.get('prompt_tokens'))} prompt + {count(u.get('completion_tokens'))} completion tokens"
            )
    if integer(usage.get("retries")) is not None:
        parts.append(f"retries: {usage.get('retries')}")
    return [("", p) for p in parts]


def _budget_meta(budget: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Spend against --mia-budget-tokens / --mia-budget-usd."""
    parts: list[tuple[str, Any]] = []
    if integer(budget.get("tokens")) is not None:
        parts.append(("", f"{count(budget.get('spent_tokens'))} of {count(budget.get('tokens'))} tokens spent"))
    usd = number(budget.get("usd"))
    if usd is not None:
        spent = number(budget.get("spent_usd"))
        parts.append(("", f"{'n/a' if spent is None else f'${spent:.4f}'} of ${usd:g} spent"))
    if budget.get("stopped"):
        parts.append(("stopped", f"stopped: {budget.get('stopped')}; {count(budget.get('n_not_run'))} sample(s) not run"))
    return parts


def _run_meta(report: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Wall time, plugin version and schema; empty when none is known."""
    wall = number(report.get("wall_seconds"))
    bits = []
    if wall is not None:
        bits.append(f"{wall:.1f} s wall")
    if report.get("plugin_version") is not None:
        bits.append(f"pytest-miabench {report.get('plugin_version')}")
    if integer(report.get("schema_version")) is not None:
        bits.append(f"schema {report.get('schema_version')}")
    return [("", b) for b in bits]


_COUNTS = (
    ("n_samples", "samples"),
    ("n_scored", "scored"),
    ("n_failed", "failed"),
    ("n_zero", "zero"),
    ("n_dropped", "dropped"),
    ("n_excluded", "excluded"),
    ("n_missing", "missing"),
)


def _counts(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> list[View]:
    """One item per count; those that flag a problem (warn) are highlighted."""
    items = []
    for key, label in _COUNTS:
        value = report.get(key)
        if value is None and key == "n_samples":
            value = len(samples)
        warn = key not in ("n_samples", "n_scored") and (integer(value) or 0) > 0
        items.append({"label": label, "value": count(value), "warn": warn})
    return items


def _demo_banner(report: Mapping[str, Any]) -> tuple[str, str] | None:
    """Above everything: a demo or mock run's number means nothing."""
    roles = [str(r) for r in sequence(report.get("mock_roles"))]
    if report.get("demo") is True:
        warning = DEMO_WARNING
    elif roles:
        warning = mock_warning(roles)
    else:
        return None
    head, tail = warning.split(":", 1)
    return head, tail


def _banners(report: Mapping[str, Any]) -> list[str]:
    banners = []
    if report.get("partial") is True:
        selection = mapping(report.get("selection"))
        how = ", ".join(str(f) for f in sequence(selection.get("filters")) if isinstance(f, str))
        banners.append(
            f"Partial run: {count(selection.get('selected'))} of {count(selection.get('rows'))} rows selected"
            + (f" ({how})" if how else "")
            + "; the numbers cover only those samples."
        )
    elif report.get("complete") is False:
        banners.append("This run is incomplete: the numbers cover only the samples that ran.")
    if (integer(report.get("n_zero")) or 0) + (integer(report.get("n_dropped")) or 0) + (integer(report.get("n_excluded")) or 0):
        banners.append(
            "The protocol's failure policy moved the number: unparseable judge replies were counted as 0 "
            "(zero) or left out of the mean (dropped / excluded)."
        )
    return banners


def _missing(report: Mapping[str, Any]) -> View | None:
    missing = list(sequence(report.get("missing")))
    if not missing:
        return None
    return {"n": len(missing), "shown": missing[:MAX_MISSING_SHOWN], "more": max(0, len(missing) - MAX_MISSING_SHOWN)}
