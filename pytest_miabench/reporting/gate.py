"""The gates: their verdict on a run's summary, reported as one test.

``--mia-threshold``, ``--mia-baseline`` with ``--mia-max-drop`` and the
budget gate a run; their outcome is the test ``mia-bench::gate``, reported
through pytest's own hooks so the terminal, JUnit XML, pytest-html and the
exit code all take it from there, and the session's numbers become JUnit
suite properties.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, cast

import pytest

from ..config.settings import Settings
from ..result import SampleRecord
from ..summary import Summary
from .report import RunOutcome
from .terminal import gate_results, scores_out_of_range


def gate_reasons(
    summary: Summary, settings: Settings, has_baseline: bool, budget_stop: str | None, results: Mapping[str, SampleRecord]
) -> list[str]:
    """Why the aggregate gates fail (empty: they hold or none is set)."""
    reasons = []
    threshold = settings.threshold
    total = summary["total_score"]
    if total is None and summary["n_results"] and (threshold is not None or has_baseline):
        # No number is not a pass: a gate that was asked for cannot hold.
        reasons.append("no_score")
    value = threshold_value(summary, settings)
    if threshold is not None and (value is None or value < threshold):
        reasons.append("threshold")
    baseline = summary["baseline"]
    if baseline is not None and baseline["gate_failed"]:
        reasons.append("baseline")
    if budget_stop is not None:
        # A run cut short by its budget is not a pass.
        reasons.append("budget")
    gated = threshold is not None or has_baseline
    if gated and total is not None and (not 0.0 <= total <= 1.0 or scores_out_of_range(results)):
        # A total of 1e300 (a judge's number kept as the reference keeps it) passes any rule.
        reasons.append("out_of_range")
    return reasons


def threshold_value(summary: Summary, settings: Settings) -> float | None:
    """What --mia-threshold compares: total_score, or with
    ``--mia-threshold-on lower`` the lower bound of its 95 % CI."""
    if settings.threshold_on == "lower":
        ci = summary["ci"]["total_score"]
        return None if ci is None else ci[0]
    return summary["total_score"]


#: The node id of the gates' outcome, reported after the samples.
GATE_NODEID = "mia-bench::gate"
_GATE_LOCATION = ("mia-bench", None, "mia-bench gate")


@dataclasses.dataclass(frozen=True)
class _Crash:
    message: str
    path: str = "mia-bench"
    lineno: int | None = None


class GateFailure:
    """The gate's failure text, shaped like pytest's own failure reprs: the
    terminal prints it (``toterminal``), and the short summary line and JUnit's
    ``message`` read ``reprcrash.message`` (pytest before 8.1 reads no message
    from a plain string)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.reprcrash = _Crash(reason)

    def toterminal(self, tw: Any) -> None:
        tw.line(self.reason)

    def __str__(self) -> str:
        return self.reason


def report_gate(config: pytest.Config, session: pytest.Session, failures: list[str]) -> None:
    """Report the gates as one test through pytest's own hooks, as a runner
    reports an item (logstart, setup/call/teardown reports, logfinish): the
    terminal, JUnit XML, pytest-html and the exit code all take it from
    there.  Passed when ``failures`` is empty, else failed with them as its
    one-line message.  Called once, by the process that holds the results."""
    # One more test than was collected: the terminal's progress ends at 100%.
    session.testscollected += 1
    config.hook.pytest_runtest_logstart(nodeid=GATE_NODEID, location=_GATE_LOCATION)
    for when in ("setup", "call", "teardown"):
        failed = when == "call" and bool(failures)
        report = pytest.TestReport(
            GATE_NODEID, _GATE_LOCATION, {}, "failed" if failed else "passed", cast(Any, GateFailure("; ".join(failures))) if failed else None, when
        )
        config.hook.pytest_runtest_logreport(report=report)
    config.hook.pytest_runtest_logfinish(nodeid=GATE_NODEID, location=_GATE_LOCATION)


def run_gate(config: pytest.Config, session: pytest.Session, outcome: RunOutcome, cancelled: bool) -> bool:
    """The gates' verdict as a test outcome (``mia-bench::gate``), so the
    terminal's counts, JUnit and pytest-html show a failed gate as a failed
    test; and the session's numbers as JUnit suite properties.  A cancelled
    run (Ctrl-C, SIGTERM) reports no gate test; a failed gate still counts
    into the exit code.  Returns whether a gate failed."""
    results = gate_results(outcome)
    failures = [text.removeprefix("FAIL: ") for holds, text in results if not holds]
    junit_properties(config, outcome, failures if results else None)
    if results:
        if cancelled:
            session.testsfailed += bool(failures)
        else:
            report_gate(config, session, failures)
    return bool(failures)


def junit_properties(config: pytest.Config, outcome: RunOutcome, failures: list[str] | None) -> None:
    """The session's numbers as properties of JUnit's testsuite, each value
    JSON text like the per-sample ones: ``mia_total_score``,
    ``mia_total_score_ci`` ([low, high]), ``mia_verdict`` ("pass", "fail",
    or "none" without a gate), ``mia_verdict_reason``, and with a baseline
    ``mia_baseline_verdict``."""
    try:  # the junitxml plugin's own object: what ``record_testsuite_property`` writes to
        from _pytest.junitxml import xml_key
    except ImportError:
        return
    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    summary = outcome.summary
    values: list[tuple[str, object]] = [
        ("mia_total_score", summary["total_score"]),
        ("mia_total_score_ci", summary["ci"]["total_score"]),
        ("mia_verdict", "none" if failures is None else "fail" if failures else "pass"),
        ("mia_verdict_reason", "; ".join(failures or [])),
    ]
    if summary["baseline"] is not None:
        values.append(("mia_baseline_verdict", summary["baseline"]["gate_verdict"]))
    for name, value in values:
        xml.add_global_property(name, json.dumps(value, ensure_ascii=False))

