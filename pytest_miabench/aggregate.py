"""Controller side: per-sample results in from test reports, numbers out.

Results arrive through ``pytest_runtest_logreport`` both in one process and
under xdist (where the controller receives every worker's reports), so the
aggregate is computed by the same code either way, from results sorted by
sample index: floating-point sums do not depend on which worker ran what.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from typing import Any

import pytest

from .protocols.base import DROPPED, EXCLUDED, SCORED, ZERO, Protocol, SampleSpec, Verdict
from .result import TOKEN_FIELDS, blank_result
from .settings import Settings

AGGREGATOR_KEY = pytest.StashKey["Aggregator"]()
STATUSES = (SCORED, ZERO, DROPPED, EXCLUDED, "failed")


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _index_of(nodeid: str) -> int | None:
    tail = nodeid.rsplit("::", 1)[-1]
    return int(tail) if tail.isdigit() else None


def summarize(
    results: list[dict[str, Any]], expected: int, protocol: Protocol, unclaimed: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The numbers of a run, from per-sample results (any order); ``unclaimed``
    are records of samples called ahead whose items never ran (only their
    cost counts)."""
    results = sorted(results, key=lambda r: r["index"])
    counted = [r for r in results if r["status"] != "failed" and r["score"] is not None]
    counts = {status: sum(1 for r in results if r["status"] == status) for status in STATUSES}
    by_type: dict[str, list[float]] = {}
    by_component: dict[str, list[float]] = {}
    for r in counted:
        by_type.setdefault(r["type"], []).append(float(r["score"]))
        for component in r["components"]:
            if component["score"] is not None:
                by_component.setdefault(component["type"], []).append(float(component["score"]))
    verdict_pairs: list[tuple[SampleSpec, Verdict]] = []
    for r in results:
        if r["status"] == "failed":
            continue
        spec = SampleSpec(
            index=r["index"],
            instruction="",
            type=r["type"],
            components=tuple(c["text"] for c in r["components"]),
            weights=tuple(c["weight"] for c in r["components"]),
            component_types=tuple(c["type"] for c in r["components"]),
        )
        verdict = Verdict(r["status"], r["score"], tuple(c["score"] for c in r["components"]), r.get("metrics") or {})
        verdict_pairs.append((spec, verdict))
    total = _mean([float(r["score"]) for r in counted])
    return {
        "total_score": total,
        "n_samples": expected,
        "n_results": len(results),
        "n_scored": counts[SCORED],
        "n_zero": counts[ZERO],
        "n_dropped": counts[DROPPED],
        "n_excluded": counts[EXCLUDED],
        "n_failed": counts["failed"],
        "n_missing": max(0, expected - len(results)),
        "n_counted": len(counted),
        "by_type": {k: _mean(v) for k, v in sorted(by_type.items())},
        "by_component_type": {k: _mean(v) for k, v in sorted(by_component.items())},
        "protocol_metrics": protocol.aggregate(verdict_pairs),
        "usage": _usage(results, unclaimed or []),
        "sampling_deviations": _deviations(results + (unclaimed or [])),
        "stopped": next((r["reason"] for r in results if r.get("failed_stage") == "endpoint"), None),
    }


def _usage(results: list[dict[str, Any]], unclaimed: list[dict[str, Any]]) -> dict[str, Any]:
    """What the run cost: every attempt sent, the unclaimed samples' too."""
    paid = results + unclaimed
    usage: dict[str, Any] = {}
    for role in ("model", "judge"):
        usage[role] = {
            "api_calls": sum(r["calls"][role] for r in paid),
            "cache_hits": sum(1 for r in results if r["cached"][role]),
            **{name: sum(r["usage"][role].get(name, 0) for r in paid) for name in TOKEN_FIELDS},
        }
    usage["retries"] = sum(r["retries"] for r in paid)
    usage["judge_reasks"] = sum(r.get("judge_reasks", 0) for r in paid)
    usage["unclaimed_samples"] = len(unclaimed)
    usage["rate_limited"] = sum(r.get("rate_limited", 0) for r in paid)
    limits = [r["concurrency_limit"] for r in paid if isinstance(r.get("concurrency_limit"), int)]
    usage["concurrency_reached"] = min(limits) if limits else None
    return usage


def _deviations(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each role's departures from the requested sampling, once each."""
    out: dict[str, list[str]] = {"model": [], "judge": []}
    for record in records:
        for entry in record.get("sampling_deviations") or []:
            role, _, text = entry.partition(": ")
            if role in out and text not in out[role]:
                out[role].append(text)
    return out


class Aggregator:
    """Collects results on the controller, gates the session, prints the summary."""

    def __init__(self, config: pytest.Config, settings: Settings, protocol: Protocol, judge_image: bool) -> None:
        self.config = config
        self.settings = settings
        self.protocol = protocol
        self.judge_image = judge_image
        self.results: dict[str, dict[str, Any]] = {}
        self.expected: list[str] = []
        self.started = time.time()
        self._summary: dict[str, Any] | None = None
        self.gate_failed = False
        self.interrupted = False
        self.write_errors: list[str] = []
        self.unclaimed: list[dict[str, Any]] = []
        self.baseline: dict[str, Any] | None = None
        from .keys import SOURCE_KEY

        source = config.stash.get(SOURCE_KEY, None)
        self.fingerprint = source.fingerprint if source is not None else None
        if settings.baseline:
            from .baseline import BaselineError, load

            try:
                self.baseline = load(settings.baseline, protocol.name, settings.dataset, settings.split, self.fingerprint)
            except BaselineError as exc:
                raise pytest.UsageError(f"--mia-baseline: {exc}") from None

    # -- inputs ------------------------------------------------------------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """In one process: the items left after -k, --deselect, --lf."""
        if session.items:
            self.expected = [item.nodeid for item in session.items]

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under xdist the controller collects nothing; every worker sends the
        same ids, which are the samples the run must account for."""
        if not self.expected:
            self.expected = list(ids)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """Under xdist: a worker's unclaimed samples (their calls were paid)."""
        output = getattr(node, "workeroutput", None) or {}
        self.unclaimed.extend(output.get("mia_unclaimed") or [])
        self._summary = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = getattr(report, "mia_result", None)
        if isinstance(result, dict) and report.when == "call":
            self.results[report.nodeid] = result
            self._summary = None
        elif report.failed and report.nodeid not in self.results:
            # setup error, or an xdist worker that crashed mid-item ("???")
            index = _index_of(report.nodeid)
            if index is not None:
                # xdist reports a crashed worker's item with when="???"
                when = str(report.when)
                reason = "the xdist worker running it crashed" if when == "???" else f"error in {when}"
                self.results[report.nodeid] = _crashed(index, reason)
                self._summary = None

    # -- outputs -----------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        if self._summary is None:
            from . import stats

            results = list(self.results.values())
            expected = len(self.expected) or len(self.results)
            summary = summarize(results, expected, self.protocol, self.unclaimed)
            done = set(self.results)
            summary["missing"] = [nodeid for nodeid in self.expected if nodeid not in done]
            summary["ci"] = stats.report_cis(results, seed=self.settings.seed)
            if self.settings.judge_repeats > 1:
                judged = [r for r in sorted(results, key=lambda r: r["index"]) if r["status"] != "failed"]
                spread = stats.judge_spread([r.get("judge_scores") or [] for r in judged])
                if spread["max_std_sample"] is not None:  # a position in ``judged``: name the sample
                    spread["max_std_sample"] = judged[spread["max_std_sample"]]["index"]
                summary["judge_spread"] = spread
            summary["cost"] = cost(summary["usage"], self.settings)
            if self.baseline is not None:
                from .baseline import compare

                samples = [{"nodeid": nodeid, **r} for nodeid, r in self.results.items()]
                summary["baseline"] = compare(
                    summary, samples, self.baseline, str(self.settings.baseline), self.settings.max_drop
                )
            self._summary = summary
        return self._summary

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        """Gate on the aggregate here: by sessionfinish it is too late to
        count a failure into the exit code (same as pytest-cov)."""
        try:
            return (yield)
        finally:
            summary = self.summary()
            if self.gate_reasons(summary):
                self.gate_failed = True
                session.testsfailed += 1

    def gate_reasons(self, summary: dict[str, Any]) -> list[str]:
        """Why the aggregate gates fail (empty: they hold or none is set)."""
        reasons = []
        threshold = self.settings.threshold
        total = summary["total_score"]
        if threshold is not None and (total is None or total < threshold):
            reasons.append("threshold")
        baseline = summary.get("baseline")
        if baseline is not None and baseline["gate_failed"]:
            reasons.append("baseline")
        return reasons

    def pytest_keyboard_interrupt(self) -> None:
        self.interrupted = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            self.interrupted = True
        if self.config.option.collectonly:
            return  # nothing ran: an earlier run's report must not be overwritten
        from .keys import UNCLAIMED_KEY

        # In one process the runtime closed its engine just before (tryfirst).
        unclaimed = self.config.stash.get(UNCLAIMED_KEY, None)
        if unclaimed:
            self.unclaimed.extend(unclaimed)
            self.config.stash[UNCLAIMED_KEY] = []
            self._summary = None
        if self.settings.report or self.settings.html:
            from .report import write_html, write_json

            report = self.report()
            for path, write in ((self.settings.report, write_json), (self.settings.html, write_html)):
                if not path:
                    continue
                try:
                    write(path, report)
                except OSError as exc:
                    # One report failing must not cost the other, nor end in a traceback.
                    self.write_errors.append(f"cannot write {path}: {exc.strerror or exc}")

    def report(self) -> dict[str, Any]:
        from .report import build_report

        return build_report(self)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from .report import terminal_lines

        if self.config.option.collectonly:
            return
        terminalreporter.section("MIA-Bench")
        for line, markup in terminal_lines(self):
            terminalreporter.write_line(line, **markup)
        for error in self.write_errors:
            terminalreporter.write_line(f"ERROR: {error}", red=True, bold=True)


def cost(usage: dict[str, Any], settings: Settings) -> dict[str, Any] | None:
    """Estimated dollars from --mia-price; None without prices.  Only this
    run's API calls cost money; cached answers are shown separately."""
    if not settings.price:
        return None
    prices = {name: (inp, out) for name, inp, out in settings.price}
    out: dict[str, Any] = {}
    for role, name in (("model", settings.model), ("judge", settings.judge_model)):
        if name not in prices:
            out[role] = None
            continue
        inp, outp = prices[name]
        tokens = usage[role]
        out[role] = {
            "model": name,
            "spent": (tokens["prompt_tokens"] * inp + tokens["completion_tokens"] * outp) / 1e6,
            "saved_by_cache": (tokens["cached_prompt_tokens"] * inp + tokens["cached_completion_tokens"] * outp) / 1e6,
        }
    known = [v["spent"] for v in out.values() if v is not None]
    out["total_spent"] = math.fsum(known) if known else None
    return out


def _crashed(index: int, reason: str) -> dict[str, Any]:
    result = blank_result(index, "unknown")
    result["reason"] = reason
    result["failed_stage"] = "worker"
    return result
