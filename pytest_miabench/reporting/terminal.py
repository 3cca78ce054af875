"""The terminal summary of a run, from its outcome: the MIA-Bench block
pytest prints, the gates' PASS/FAIL lines, and the baseline block that
``pytest-miabench compare`` prints too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..config.settings import Settings, mock_roles
from ..result import DEMO_WARNING, ROLES, SampleRecord, mock_warning
from ..summary import BaselineComparison, BudgetSpend, Cost, JudgeSpread, Selection, Summary, UsageTotals, verdict
from . import stats
from .report import RunOutcome, is_partial

__all__ = [
    "Line",
    "baseline_gate_lines",
    "comparison_lines",
    "gate_lines",
    "gate_results",
    "scores_out_of_range",
    "terminal_lines",
]

#: Terminal markup of a line, as ``TerminalReporter.write_line`` takes it.
Markup = dict[str, bool]
Line = tuple[str, Markup]


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    # A number far out of [0, 1] (a judge's 1e300) stays readable.
    return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _ci(pair: list[float] | None) -> str:
    return "" if not pair else f"  95% CI [{pair[0]:.4f}, {pair[1]:.4f}]"


def _bold(colour: str) -> Markup:
    return {colour: True, "bold": True}


def terminal_lines(outcome: RunOutcome) -> list[Line]:
    """The summary block: headline, counts, breakdowns, comparisons, gate verdict."""
    summary = outcome.summary
    if outcome.estimate is not None:
        return _mock_lines(outcome.settings) + estimate_lines(outcome.estimate) + _path_lines(outcome.settings)
    lines = _mock_lines(outcome.settings) + [_headline(outcome)]
    lines += _protocol_lines(outcome)
    if summary["stopped"]:
        lines.append((f"STOPPED: {summary['stopped']}", _bold("red")))
    lines += _count_lines(summary)
    lines += _usage_lines(summary["usage"])
    lines += _deviation_lines(summary)
    lines += _cost_lines(summary["cost"])
    lines += budget_lines(summary["budget"])
    lines += _spread_lines(summary["judge_spread"], outcome.settings.judge_repeats)
    lines += _breakdown_lines(summary)
    lines += _missing_lines(summary["missing"])
    lines += _selection_lines(outcome.selection)
    baseline = summary["baseline"]
    if baseline is not None:
        lines += _baseline_lines(baseline)
    lines += _gate_lines(outcome)
    lines += _path_lines(outcome.settings)
    return lines


def _mock_lines(settings: Settings) -> list[Line]:
    if settings.demo:
        return [(DEMO_WARNING, _bold("yellow"))]
    roles = mock_roles(settings)
    return [(mock_warning(roles), _bold("yellow"))] if roles else []


def _headline(outcome: RunOutcome) -> Line:
    summary = outcome.summary
    protocol = outcome.protocol
    alias = f"; its {protocol.headline}" if protocol.headline != "total_score" else ""
    return (
        f"total_score: {_fmt(summary['total_score'])}{_ci(summary['ci']['total_score'])}"
        f"  (protocol {protocol.name}{alias}, {summary['n_counted']} samples in the mean)",
        {"bold": True},
    )


def _protocol_lines(outcome: RunOutcome) -> list[Line]:
    """With several protocols: one line each, the headline first, on the same answers."""
    blocks = outcome.summary["protocols"]
    if len(blocks) < 2:
        return []
    width = max(len(name) for name in blocks)
    lines: list[Line] = []
    for name, block in blocks.items():
        counts = block["counts"]
        policy = "  ".join(
            f"{label}: {n}"
            for n, label in ((counts["zero"], "zero"), (counts["dropped"], "dropped"), (counts["excluded"], "excluded"), (counts["failed"], "failed"))
            if n
        )
        text = (
            f"  protocol {name:<{width}}  total_score {_fmt(block['total_score'])}{_ci(block['ci']['total_score'])}"
            f"  ({block['n_counted']} in the mean{'; ' + policy if policy else ''})"
        )
        if block["baseline"] is not None:
            text += f"  baseline {_fmt(block['baseline']['total_score'])} -> delta {_signed(block['baseline']['delta'])}"
        lines.append((text, _bold("red") if counts["failed"] else {}))
    return lines


def _count_lines(summary: Summary) -> list[Line]:
    """How many samples ended how, and warnings when the mean is not what it seems."""
    counts = f"samples: {summary['n_samples']}  scored: {summary['n_scored']}  failed: {summary['n_failed']}"
    for value, label in (
        (summary["n_zero"], "zero by policy"),
        (summary["n_dropped"], "dropped by policy"),
        (summary["n_excluded"], "excluded by policy"),
        (summary["n_missing"], "not run"),
    ):
        if value:
            counts += f"  {label}: {value}"
    lines: list[Line] = [(counts, {})]
    if ahead := summary["finished_ahead"]:
        # pytest counts only the items it ran: say why these counts are higher.
        shown = ", ".join(ahead[:EXAMPLES_SHOWN]) + (f" and {len(ahead) - EXAMPLES_SHOWN} more" if len(ahead) > EXAMPLES_SHOWN else "")
        lines.append(
            (
                f"note: {len(ahead)} of these finished ahead of their turn before the run stopped ({shown}): "
                "counted here, while pytest never ran their items",
                {"yellow": True},
            )
        )
    if summary["n_results"] and summary["total_score"] is None:
        lines.append((_no_score(summary), _bold("red")))
    if summary["n_zero"] or summary["n_dropped"] or summary["n_excluded"]:
        how = "counted as 0" if summary["n_zero"] else "left out of the mean"
        lines.append((f"note: the protocol's failure policy moved the number: unparseable judge replies were {how}", {"yellow": True}))
    return lines


def _no_score(summary: Summary) -> str:
    """Said plainly: the run has no number, and why."""
    why = [
        f"{n} {label}"
        for n, label in (
            (summary["n_excluded"], "excluded by the protocol"),
            (summary["n_dropped"], "dropped by the protocol"),
            (summary["n_failed"], "failed"),
        )
        if n
    ]
    n = summary["n_results"]
    return f"NO SCORE: none of the {n} sample{'s' if n != 1 else ''} counts in the mean ({', '.join(why)}); total_score is null"


def _usage_lines(usage: UsageTotals) -> list[Line]:
    calls = (
        f"api calls: model {usage['model']['api_calls']}, judge {usage['judge']['api_calls']}"
        f"  cache hits: model {usage['model']['cache_hits']}, judge {usage['judge']['cache_hits']}"
        f"  retries: {usage['retries']}"
    )
    if usage.get("judge_reasks"):
        calls += f"  judge re-asks: {usage['judge_reasks']}"
    if usage["unclaimed_samples"]:
        calls += f"  (incl. {usage['unclaimed_samples']} samples called ahead but not run)"
    tokens = "  ".join(
        f"{role} {usage[role]['prompt_tokens']} in / {usage[role]['completion_tokens']} out"
        + (f" ({usage[role]['reasoning_tokens']} reasoning)" if usage[role]["reasoning_tokens"] else "")
        + (f" (+{usage[role]['cached_prompt_tokens']} / {usage[role]['cached_completion_tokens']} from cache)" if usage[role]["cache_hits"] else "")
        for role in ROLES
    )
    lines: list[Line] = [(calls, {}), (f"tokens: {tokens}", {})]
    if usage["rate_limited"]:
        lines.append(
            (f"rate limits: {usage['rate_limited']} HTTP 429 replies; concurrency went down to {usage['concurrency_reached']}", {"yellow": True})
        )
    return lines


def _deviation_lines(summary: Summary) -> list[Line]:
    """Said once: the number was produced with other sampling than the protocol's."""
    return [
        (f"sampling deviations: {role}: " + "; ".join(summary["sampling_deviations"][role]), {"yellow": True})
        for role in ROLES
        if summary["sampling_deviations"][role]
    ]


def _cost_lines(cost: Cost | None) -> list[Line]:
    if not cost:
        return []
    parts = [f"{role} ${role_cost['spent']:.4f}" for role in ROLES if (role_cost := cost[role])]
    unknown = [role for role in ROLES if not cost[role]]
    text = f"estimated cost: {'  '.join(parts)}"
    if cost["total_spent"] is not None:
        text += f"  total ${cost['total_spent']:.4f}"
    if unknown:
        text += f"  (no price for the {' and '.join(unknown)})"
    return [(text, {})]


def budget_lines(budget: BudgetSpend | None) -> list[Line]:
    """Spend against the budget, and the stop it caused."""
    if not budget:
        return []
    parts = []
    if budget["tokens"] is not None:
        parts.append(f"{budget['spent_tokens']} of {budget['tokens']} tokens")
    if budget["usd"] is not None:
        spent = "n/a" if budget["spent_usd"] is None else f"${budget['spent_usd']:.4f}"
        parts.append(f"{spent} of ${budget['usd']:g}")
    lines: list[Line] = [(f"budget: {', '.join(parts)} spent (as the endpoints reported it)", {})]
    if budget["stopped"]:
        not_run = budget["n_not_run"]
        lines.append(
            (f"STOPPED: {budget['stopped']}; the run took no new sample ({not_run} not run); rerun with a larger budget to pay only for those", _bold("red"))
        )
    return lines


def estimate_lines(estimate: dict[str, Any]) -> list[Line]:
    """The --mia-estimate block: calls, tokens and cost per role and protocol."""
    method = estimate["method"]
    lines: list[Line] = [
        (
            f"ESTIMATE (--mia-estimate): no API call was made; {estimate['samples']} samples"
            + (f" ({estimate['unusable']} unusable: no call)" if estimate["unusable"] else "")
            + f", judge repeats {estimate['judge_repeats']}",
            {"bold": True},
        )
    ]
    for row in [*estimate["calls"], {**estimate["totals"], "role": "total", "protocol": None, "cost": None}]:
        who = row["role"] + (f" [{row['protocol']}]" if row["protocol"] else "")
        most = "no max" if row["output_tokens_max"] is None else str(row["output_tokens_max"])
        lines.append(
            (
                f"  {who}: {row['calls']} calls, {row['cache_hits']} cached (not paid), {row['paid_calls']} paid; "
                f"~{row['input_tokens']} input tokens, output ~{row['output_tokens_typical']} typical / {most} at most",
                {},
            )
        )
    cost = estimate["cost"]
    if cost is not None:
        high = "unbounded (no max tokens: set --mia-max-tokens)" if cost["high"] is None else f"${cost['high']:.4f}"
        text = f"estimated cost: ${cost['low']:.4f} (typical output) to {high} (max output)"
        if cost["unpriced"]:
            text += f"; no price for the {' and '.join(cost['unpriced'])}"
        lines.append((text, {"bold": True}))
    lines.append(
        (f"  tokens: {method['text']}, +{method['message_overhead']} per request; {method['images']}; typical output " + ", ".join(f"{tokens} tokens ({role})" for role, tokens in method["typical_output"].items()), {})
    )
    return lines


def _spread_lines(spread: JudgeSpread | None, repeats: int) -> list[Line]:
    if not spread or not spread["n_compared"]:
        return []
    return [
        (
            f"judge disagreement over {repeats} repeats: mean per-sample std {_fmt(spread['mean_std'])}, "
            f"max {_fmt(spread['max_std'])}, {spread['n_disagree']} of {spread['n_compared']} samples disagree",
            {},
        )
    ]


def _breakdown_lines(summary: Summary) -> list[Line]:
    lines: list[Line] = []
    for means, label in ((summary["by_component_type"], "component type"), (summary["by_type"], "instruction type")):
        if means:
            text = "  ".join(f"{k} {_fmt(v)}" for k, v in means.items())
            lines.append((f"by {label}: {text}", {}))
    return lines


def _missing_lines(missing: list[str]) -> list[Line]:
    if not missing:
        return []
    shown = ", ".join(missing[:10])
    more = f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""
    return [(f"not run: {shown}{more}", {"yellow": True})]


def _selection_lines(selection: Selection) -> list[Line]:
    if not is_partial(selection):
        return []
    how = [f"--mia-limit {selection['limit']}"] if selection["limit"] is not None and selection["limit"] < selection["rows"] else []
    how += selection["filters"]
    text = f"partial run: {selection['selected']} of {selection['rows']} rows selected"
    if how:
        text += f" ({', '.join(how)})"
    return [(text + "; the report says complete: false, partial: true", {"yellow": True})]


def _interval(pair: list[float] | None) -> str:
    return "n/a" if not pair else f"[{pair[0]:+.4f}, {pair[1]:+.4f}]"


def comparison_lines(baseline: BaselineComparison) -> list[Line]:
    """The baseline block of the summary and its gate's verdict, as one run
    prints them (also printed by ``pytest-miabench compare``)."""
    return _baseline_lines(baseline) + baseline_gate_lines(baseline)


def gate_lines(outcome: RunOutcome) -> list[Line]:
    """The PASS/FAIL lines of every aggregate gate that is set."""
    return _gate_lines(outcome)


def _baseline_lines(baseline: BaselineComparison) -> list[Line]:
    lines: list[Line] = [
        (f"baseline {baseline['path']}: total_score {_fmt(baseline['total_score'])} -> delta {_signed(baseline['delta'])}", {}),
    ]
    for deltas, label in ((baseline["by_component_type"], "component type"), (baseline["by_type"], "instruction type")):
        parts = "  ".join(f"{k} {_signed(v)}" for k, v in deltas.items())
        if parts:
            lines.append((f"  delta by {label}: {parts}", {}))
    if baseline["refused"]:
        lines.append((f"  REFUSED for gating: {baseline['refused']}", _bold("red")))
    elif baseline["partial"] and baseline["differences"] is not None:
        lines.append(
            (
                f"  partial comparison (--mia-baseline-common): on the {baseline['n_common']} common samples only; "
                f"{baseline['differences']['text']}",
                {"yellow": True},
            )
        )
    if baseline["differences"] is not None and not baseline["differences"]["images_compared"]:
        lines.append(("  note: the baseline's report has no image hashes (an older report): images were not compared", {"yellow": True}))
    level = f"{baseline['ci_level']:.0%}"
    p_value = "n/a" if baseline["p_value"] is None else f"{baseline['p_value']:.4g}"
    lines.append(
        (
            f"  paired over n_paired={baseline['n_paired']} samples: mean change {_signed(baseline['mean_diff'])}  "
            f"{level} CI {_interval(baseline['diff_ci'])}  p={p_value} (sign-flip permutation)  "
            f"smallest detectable drop (80% power) {_fmt(baseline['mde'])}",
            {},
        )
    )
    if baseline["changed"]:
        movers = ", ".join(
            f"{c['nodeid']} {_fmt(c['before'])}->{_fmt(c['after'])}" for c in baseline["changed"][:5]
        )
        lines.append((f"  most changed ({baseline['n_changed']} samples changed): {movers}", {}))
    return lines


def scores_out_of_range(results: Mapping[str, SampleRecord]) -> list[tuple[int, float]]:
    """(index, score) of the samples whose score is not a number in [0, 1]:
    the apple and VLMEvalKit parsers keep a judge's number as their
    references do, so a judge answering 1e300 gives that score."""
    kept = stats.counted(list(results.values()))
    return [(r["index"], score) for r, score in zip(kept.records, kept.total) if not (math.isfinite(score) and 0.0 <= score <= 1.0)]


def _out_of_range_text(outcome: RunOutcome) -> str:
    total = outcome.summary["total_score"]
    bad = scores_out_of_range(outcome.results)
    shown = ", ".join(f"{index} scored {score:.4g}" for index, score in bad[:EXAMPLES_SHOWN])
    more = f" and {len(bad) - EXAMPLES_SHOWN} more" if len(bad) > EXAMPLES_SHOWN else ""
    what = f"total_score {_fmt(total)}" + (" is outside [0, 1]" if total is not None and not _in_unit(total) else " is in [0, 1]")
    samples = f", {len(bad)} sample score{'s' if len(bad) != 1 else ''} outside [0, 1] (sample {shown}{more})" if bad else ""
    return f"{what}{samples}: the judge's scores are out of range, so no gate can hold"


EXAMPLES_SHOWN = 5


def _in_unit(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 1.0


def gate_results(outcome: RunOutcome) -> list[tuple[bool, str]]:
    """Each aggregate gate that is set: whether it holds, and one line
    saying so ("PASS: ..." or "FAIL: ...").  Empty: no gate was set."""
    reasons = outcome.gate_reasons
    threshold = outcome.settings.threshold
    summary = outcome.summary
    baseline = summary["baseline"]
    out: list[tuple[bool, str]] = _budget_gate(summary["budget"])
    if "no_score" in reasons:
        gates = " and ".join(g for g, on in (("threshold", threshold is not None), ("baseline", baseline is not None)) if on)
        return [*out, (False, f"FAIL: no total_score to check against the {gates} (no sample was counted)")]
    if "out_of_range" in reasons:
        return [*out, (False, f"FAIL: {_out_of_range_text(outcome)}")]
    if threshold is not None:
        if outcome.settings.threshold_on == "lower":
            ci = summary["ci"]["total_score"]
            what = f"the lower bound of total_score's 95% CI {_fmt(None if ci is None else ci[0])}"
        else:
            what = f"total_score {_fmt(summary['total_score'])}"
        if "threshold" in reasons:
            out.append((False, f"FAIL: {what} is below the threshold {threshold:g}"))
        else:
            out.append((True, f"PASS: {what} meets the threshold {threshold:g}"))
    if baseline is not None:
        out += _baseline_gate(baseline)
    return out


def _budget_gate(budget: BudgetSpend | None) -> list[tuple[bool, str]]:
    """The budget as a gate: a run it cut short fails."""
    if budget is None:
        return []
    if budget["stopped"]:
        return [(False, f"FAIL: budget: {budget['stopped']}; {budget['n_not_run']} sample(s) not run")]
    return [(True, f"PASS: budget: {budget['spent_tokens']} tokens reported, within the budget")]


def _baseline_gate(baseline: BaselineComparison) -> list[tuple[bool, str]]:
    said = verdict(baseline)
    return [] if said.failed is None else [(not said.failed, f"{'FAIL' if said.failed else 'PASS'}: {said.text}")]


def baseline_gate_lines(baseline: BaselineComparison) -> list[Line]:
    """PASS or FAIL of the --mia-max-drop gate (nothing without it): what the
    plugin prints and what ``pytest-miabench compare`` prints for the same pair."""
    return [(text, _bold("green" if holds else "red")) for holds, text in _baseline_gate(baseline)]


def _gate_lines(outcome: RunOutcome) -> list[Line]:
    """PASS or FAIL for each aggregate gate that is set."""
    return [(text, _bold("green" if holds else "red")) for holds, text in gate_results(outcome)]


def _path_lines(settings: Settings) -> list[Line]:
    return [(f"{label}: {path}", {}) for path, label in ((settings.report, "JSON report"), (settings.html, "HTML report")) if path]
