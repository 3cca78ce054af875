"""GitHub Actions sees the verdict: a job summary and an annotation.

On a GitHub runner two environment variables say where things go:

- ``GITHUB_STEP_SUMMARY`` names a file; Markdown appended to it becomes the
  job's summary page.  The plugin appends (never overwrites: other steps and
  tools write there too) the total with its CI, the verdict and why, the
  per-type table, the baseline comparison and the samples that regressed
  most.
- ``GITHUB_ACTIONS=true``: a line ``::error title=...::message`` on stdout
  becomes an annotation on the run and the pull request; a failed gate gets
  ``::error``, a passing one ``::notice``.

Only the controller writes (the plugin registers ``GithubActions`` there,
never on an xdist worker), once, at the end of the session.  Nothing else
is written anywhere.  Dataset and server text (type names, node ids, the
baseline's path, refusal messages) is untrusted: Markdown is escaped so it
cannot add links, images, HTML or table cells, and annotation text is
escaped as GitHub's workflow commands require.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from .values import fixed, mapping, number, signed

if TYPE_CHECKING:
    from .aggregate import Aggregator

#: Samples listed under "regressed most".
REGRESSIONS_LISTED = 10
SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
ACTIONS_ENV = "GITHUB_ACTIONS"

# Characters GitHub's Markdown gives a meaning to anywhere in a line (":" and
# "@": autolinks and mentions); "-", "." and digits matter only at its start.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~:@])")
_MD_LINE_START = re.compile(r"^(\d*)([-.)=])")


def md(value: Any) -> str:
    """Text safe in a Markdown table cell or paragraph: one line, HTML
    entities for ``& < >`` (no tags, no autolinks), every Markdown
    character backslash-escaped (no links, images, emphasis or cell breaks)."""
    text = "" if value is None else str(value)
    text = " ".join(text.splitlines())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_LINE_START.sub(r"\1\\\2", _MD_SPECIAL.sub(r"\\\1", text))


def command_data(text: str) -> str:
    """The message of a workflow command, escaped as the runner unescapes it."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def command_property(text: str) -> str:
    """A property value (``title=``) of a workflow command."""
    return command_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(level: str, title: str, message: str) -> str:
    return f"::{level} title={command_property(title)}::{command_data(message)}"


def _interval(pair: Any, sign: bool = False) -> str:
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or number(pair[0]) is None or number(pair[1]) is None:
        return "n/a"
    show = signed if sign else fixed
    return f"[{show(pair[0])}, {show(pair[1])}]"


def verdict_word(report: Mapping[str, Any], gated: bool) -> str:
    """PASS / FAIL of the run as the exit code has it, or NO GATE."""
    if report.get("passed") is False:
        return "FAIL"
    return "PASS" if gated else "NO GATE"


def summary_markdown(report: Mapping[str, Any], gated: bool, verdict_lines: Sequence[str]) -> str:
    """The job summary: headline, verdict and why, breakdowns, baseline, regressions."""
    word = verdict_word(report, gated)
    model = mapping(report.get("model"))
    protocol = mapping(report.get("protocol"))
    ci = mapping(report.get("ci"))
    out = [f"## MIA-Bench: {word} — {md(model.get('name'))}", ""]
    if report.get("demo") is True or report.get("mock_roles"):
        out += ["> **Mock or demo run: the number means nothing about any model.**", ""]
    out.append(
        f"**total_score {fixed(report.get('total_score'))}** (95% CI {_interval(ci.get('total_score'))}; "
        f"protocol {md(protocol.get('name'))}, {report.get('n_scored', 0)} scored, {report.get('n_failed', 0)} failed "
        f"of {report.get('n_samples', 0)} samples)"
    )
    out += ["", f"**Verdict: {word}**", ""]
    why = [md(line) for line in verdict_lines]
    n_failed, n_missing = report.get("n_failed") or 0, report.get("n_missing") or 0
    if n_failed or n_missing:
        why.append(f"{n_failed} sample(s) failed, {n_missing} not run: the run fails")
    if not why:
        why.append("no gate set (--mia-threshold, --mia-max-drop)")
    out += [f"- {line}" for line in why] + [""]
    out += _budget_section(mapping(report.get("budget")), mapping(report.get("cost")))
    baseline = mapping(report.get("baseline"))
    for key, label in (("by_type", "instruction type"), ("by_component_type", "component type")):
        out += _breakdown_table(report, baseline, key, label)
    if baseline:
        out += _baseline_section(report, baseline)
    return "\n".join(out) + "\n"


def _budget_section(budget: Mapping[str, Any], cost: Mapping[str, Any]) -> list[str]:
    """Spend against --mia-budget-tokens / --mia-budget-usd, and the stop it caused."""
    if not budget:
        return []
    rows = ["| budget | limit | spent |", "|---|---:|---:|"]
    if number(budget.get("tokens")) is not None:
        rows.append(f"| tokens | {int(budget['tokens'])} | {md(budget.get('spent_tokens'))} |")
    if number(budget.get("usd")) is not None:
        spent = number(budget.get("spent_usd"))
        rows.append(f"| dollars | ${number(budget['usd']):g} | {'n/a' if spent is None else f'${spent:.4f}'} |")
    out = ["### Spend against the budget", "", *rows, ""]
    if budget.get("stopped"):
        out += [f"**Stopped by the budget**: {md(budget.get('stopped'))}; {md(budget.get('n_not_run'))} sample(s) not run.", ""]
    return out


def _breakdown_table(report: Mapping[str, Any], baseline: Mapping[str, Any], key: str, label: str) -> list[str]:
    means = mapping(report.get(key))
    if not means:
        return []
    cis = mapping(mapping(report.get("ci")).get(key))
    before = mapping(baseline.get(f"baseline_{key}"))
    change = mapping(baseline.get(key))
    head = f"| {label} | score | 95% CI |"
    rule = "|---|---:|---|"
    if baseline:
        head += " baseline | change |"
        rule += "---:|---:|"
    rows = [head, rule]
    for name in sorted(set(means) | set(before)):
        row = f"| {md(name)} | {fixed(means.get(name))} | {_interval(cis.get(name))} |"
        if baseline:
            row += f" {fixed(before.get(name))} | {signed(change.get(name))} |"
        rows.append(row)
    return [*rows, ""]


def _baseline_section(report: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    p_value = number(baseline.get("p_value"))
    out = [
        "### Against the baseline",
        "",
        f"Baseline {md(baseline.get('path'))}: total_score {fixed(baseline.get('total_score'))}, "
        f"change (this run − baseline) {signed(baseline.get('delta'))}.",
        "",
        f"Paired over {baseline.get('n_paired')} samples: mean change {signed(baseline.get('mean_diff'))}, "
        f"95% CI {_interval(baseline.get('diff_ci'), sign=True)}, p = {'n/a' if p_value is None else f'{p_value:.4g}'}; "
        f"smallest detectable drop {fixed(baseline.get('mde'))}; verdict **{md(baseline.get('gate_verdict') or 'no gate')}**.",
        "",
    ]
    if baseline.get("refused"):
        out += [f"Not comparable: {md(baseline.get('refused'))}", ""]
    types = {s.get("index"): s.get("type") for s in report.get("samples") or () if isinstance(s, Mapping)}
    worse = [c for c in baseline.get("changed") or () if isinstance(c, Mapping) and (number(c.get("delta")) or 0.0) < 0]
    if not worse:
        return [*out, "No sample regressed.", ""]
    out += [
        f"#### Samples that regressed most ({min(len(worse), REGRESSIONS_LISTED)} shown)",
        "",
        "| sample | type | baseline | this run | change |",
        "|---|---|---:|---:|---:|",
    ]
    for c in worse[:REGRESSIONS_LISTED]:
        out.append(
            f"| {md(c.get('nodeid'))} | {md(types.get(c.get('index')))} | {fixed(c.get('before'))} | "
            f"{fixed(c.get('after'))} | {signed(c.get('delta'))} |"
        )
    return [*out, ""]


def annotation_lines(report: Mapping[str, Any], gated: bool, gate_failed: bool, verdict_lines: Sequence[str]) -> list[str]:
    """``::error`` for a failed gate, ``::notice`` for one that holds (and
    for a run without a gate: its number)."""
    message = "\n".join(verdict_lines)
    if gate_failed:
        return [annotation("error", "MIA-Bench gate failed", message)]
    if gated:
        return [annotation("notice", "MIA-Bench gate passed", message)]
    ci = _interval(mapping(report.get("ci")).get("total_score"))
    return [annotation("notice", "MIA-Bench", f"total_score {fixed(report.get('total_score'))} (95% CI {ci}); no gate set")]


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get(SUMMARY_ENV)) or env.get(ACTIONS_ENV) == "true"


class GithubActions:
    """Registered on the controller when ``wanted()``: at the end of the
    session, appends the job summary and prints the annotation."""

    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        # After the aggregator's sessionfinish (the reports are written, the
        # exit status final) and, trylast, after its MIA-Bench section.
        aggregator = self.aggregator
        if config.option.collectonly or aggregator.refused is not None:
            return
        from .report import build_report
        from .terminal import gate_lines

        outcome = aggregator.outcome()
        report = build_report(outcome)
        baseline = outcome.summary["baseline"]
        gated = outcome.settings.threshold is not None or (baseline is not None and baseline["gate_verdict"] is not None)
        lines = [text for text, _ in gate_lines(outcome)]
        path = os.environ.get(SUMMARY_ENV)
        if path:
            try:
                with open(path, "a", encoding="utf-8") as handle:
                    handle.write(summary_markdown(report, gated, lines))
            except OSError as exc:
                terminalreporter.write_line(f"mia-bench: cannot append the job summary to ${SUMMARY_ENV}: {exc.strerror or exc}", yellow=True)
        if os.environ.get(ACTIONS_ENV) == "true":
            for line in annotation_lines(report, gated, bool(outcome.gate_reasons), lines):
                terminalreporter.write_line(line)
