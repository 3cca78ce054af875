"""Controller side: per-sample results in from test reports, numbers out.

Results arrive through ``pytest_runtest_logreport`` both in one process and
under xdist (where the controller receives every worker's reports), so the
aggregate is computed by the same code either way, from results sorted by
sample index: floating-point sums do not depend on which worker ran what.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sqlite3
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from ..calls import budget as budget_mod
from ..calls.cache import HANDOFF, CacheError, ResponseCache
from ..config.settings import Settings
from ..protocols.base import DROPPED, EXCLUDED, SCORED, ZERO, Protocol, SampleSpec, Verdict
from ..protocols.sampling import judge_sees_image, judge_settings
from ..result import (
    BaselineComparison,
    BudgetSpend,
    Cost,
    ProtocolBaseline,
    ProtocolSummary,
    Report,
    Role,
    RoleCost,
    RoleDeviations,
    RoleTotals,
    SampleRecord,
    Selection,
    Summary,
    Tally,
    UsageTotals,
    blank_result,
    is_finished,
)
from ..run.keys import SOURCE_KEY, UNCLAIMED_KEY, WORKERINPUT_HANDOFF
from . import stats
from .baseline import Baseline, BaselineError, RunSamples, compare, differences, load_protocols, refusal
from .report import RunOutcome, build_report, write_html, write_json
from .terminal import gate_results, scores_out_of_range, terminal_lines

AGGREGATOR_KEY = pytest.StashKey["Aggregator"]()


@dataclass(frozen=True)
class Handoff:
    """Where xdist workers leave finished records (cache.HANDOFF) under
    ``key``: the response cache's directory, or without a cache a temporary
    one of this session (the plugin removes it when pytest cleans up)."""

    key: str
    directory: Path


STATUSES = (SCORED, ZERO, DROPPED, EXCLUDED, "failed")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: pytest ends the run as on Ctrl-C."""


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _index_of(nodeid: str) -> int | None:
    tail = nodeid.rsplit("::", 1)[-1]
    return int(tail) if tail.isdigit() else None


def summarize(
    results: list[SampleRecord], expected: int, protocol: Protocol, unclaimed: list[SampleRecord] | None = None
) -> Tally:
    """The numbers of a run, from per-sample results (any order); ``unclaimed``
    are records of samples called ahead whose items never ran (only their
    cost counts)."""
    results = sorted(results, key=lambda r: r["index"])
    # (record, score) of the samples in the mean
    counted = [(r, float(r["score"])) for r in results if r["status"] != "failed" and r["score"] is not None]
    counts = {status: sum(1 for r in results if r["status"] == status) for status in STATUSES}
    by_type: dict[str, list[float]] = {}
    by_component: dict[str, list[float]] = {}
    for r, score in counted:
        by_type.setdefault(r["type"], []).append(score)
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
    return {
        "total_score": _mean([score for _, score in counted]),
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
        "stopped": next((r["reason"] for r in results if r["failed_stage"] == "endpoint"), None),
    }


def protocol_view(record: SampleRecord, name: str, headline: bool) -> SampleRecord:
    """The record as protocol ``name`` judged it: its status, score,
    component scores and metrics in the record's own fields.  A record
    without that protocol's verdict (a crashed worker's) is failed under it;
    the headline's verdict is the record's own fields."""
    verdict = (record.get("protocols") or {}).get(name)
    view = record.copy()
    if verdict is None:
        if headline:
            return record
        view["status"], view["score"], view["metrics"] = "failed", None, {}
        view["components"] = [{**c, "score": None} for c in record["components"]]
        return view
    scores = verdict["components"]
    view["status"], view["score"], view["metrics"] = verdict["status"], verdict["score"], verdict["metrics"]
    view["components"] = [{**c, "score": scores[i] if i < len(scores) else None} for i, c in enumerate(record["components"])]
    return view


def protocol_summary(
    results: list[SampleRecord], protocol: Protocol, headline: bool, settings: Settings
) -> tuple[ProtocolSummary, list[SampleRecord]]:
    """One protocol's numbers over the run's records (and the records as it
    judged them), computed exactly as the headline's are."""
    views = [protocol_view(r, protocol.name, headline) for r in sorted(results, key=lambda r: r["index"])]
    tally = summarize(views, len(views), protocol)
    sampling = judge_settings(settings, protocol)
    return {
        "prompt_version": protocol.prompt_version,
        "headline": protocol.headline,
        "total_score": tally["total_score"],
        "ci": stats.report_cis(views, seed=settings.seed),
        "n_counted": tally["n_counted"],
        "counts": {
            "scored": tally["n_scored"],
            "zero": tally["n_zero"],
            "dropped": tally["n_dropped"],
            "excluded": tally["n_excluded"],
            "failed": tally["n_failed"],
        },
        "by_type": tally["by_type"],
        "by_component_type": tally["by_component_type"],
        "protocol_metrics": tally["protocol_metrics"],
        "judge": {
            "sees_image": judge_sees_image(settings, protocol),
            "temperature": sampling.get("temperature"),
            "max_tokens": sampling.get("max_tokens"),
        },
        "baseline": None,
    }, views


def _usage(results: list[SampleRecord], unclaimed: list[SampleRecord]) -> UsageTotals:
    """What the run cost: every attempt sent, the unclaimed samples' included."""
    paid = results + unclaimed
    limits = [r["concurrency_limit"] for r in paid if "concurrency_limit" in r]
    return {
        "model": _role_totals(results, paid, "model"),
        "judge": _role_totals(results, paid, "judge"),
        "retries": sum(r["retries"] for r in paid),
        "judge_reasks": sum(r.get("judge_reasks", 0) for r in paid),
        "unclaimed_samples": len(unclaimed),
        "rate_limited": sum(r.get("rate_limited", 0) for r in paid),
        "concurrency_reached": min(limits) if limits else None,
    }


def _role_totals(results: list[SampleRecord], paid: list[SampleRecord], role: Role) -> RoleTotals:
    usage = [r["usage"][role] for r in paid]
    return {
        "api_calls": sum(r["calls"][role] for r in paid),
        "cache_hits": sum(1 for r in results if r["cached"][role]),
        "prompt_tokens": sum(u.get("prompt_tokens", 0) for u in usage),
        "completion_tokens": sum(u.get("completion_tokens", 0) for u in usage),
        "reasoning_tokens": sum(u.get("reasoning_tokens", 0) for u in usage),
        "cached_prompt_tokens": sum(u.get("cached_prompt_tokens", 0) for u in usage),
        "cached_completion_tokens": sum(u.get("cached_completion_tokens", 0) for u in usage),
    }


def _deviations(records: list[SampleRecord]) -> RoleDeviations:
    """Each role's departures from the requested sampling, once each."""
    out: RoleDeviations = {"model": [], "judge": []}
    for record in records:
        for entry in record["sampling_deviations"]:
            role, _, text = entry.partition(": ")
            seen = out["model"] if role == "model" else out["judge"] if role == "judge" else None
            if seen is not None and text not in seen:
                seen.append(text)
    return out


class Aggregator:
    """Collects results on the controller, gates the session, prints the summary."""

    def __init__(
        self,
        config: pytest.Config,
        settings: Settings,
        protocols: Sequence[Protocol],
        fingerprint: str | None = None,
        instructions: Sequence[str | None] | None = None,
    ) -> None:
        """``fingerprint``: of the dataset's rows (``dataset.Source.fingerprint``);
        a baseline made on the same rows under another path is accepted.
        ``instructions``: every row's instruction text (None for an unusable
        row), by index: what a run selected is measured against the rows, and
        a baseline of other samples is refused before any call."""
        self.config = config
        self.settings = settings
        self.protocols = tuple(protocols)  # the headline first
        self.protocol = self.protocols[0]
        self.judge_image = judge_sees_image(settings, self.protocol)
        self.results: dict[str, SampleRecord] = {}
        self.expected: list[str] = []
        self.started = time.time()
        self._summary: Summary | None = None
        self.gate_failed = False
        self.interrupted = False
        self.write_errors: list[str] = []
        self._sigterm_installed = False
        self._terminated = False
        self._finishing = False
        self.unclaimed: list[SampleRecord] = []
        # Node ids of samples that finished ahead of their turn in an
        # interrupted run: reported, though pytest never ran their items.
        self.finished_ahead: list[str] = []
        self.baseline: Baseline | None = None
        self.fingerprint = fingerprint
        self.instructions = list(instructions) if instructions is not None else None
        self.refused: str | None = None  # the baseline refused at collection: no report is written
        # Under xdist: where workers leave their finished records, set by the plugin.
        self.handoff: Handoff | None = None
        # The baseline under each protocol it shares with this run; the headline's gates.
        self.protocol_baselines: dict[str, Baseline] = {}
        # Why the budget stopped the run (None: it did not); the response
        # cache's directory (read by --mia-estimate); the estimate itself.
        self.budget_stop: str | None = None
        self.cache_directory: Path | None = None
        self.estimate: dict[str, Any] | None = None
        if settings.baseline:
            names = [p.name for p in self.protocols]
            try:
                self.protocol_baselines = load_protocols(settings.baseline, names, settings.dataset, settings.split, self.fingerprint)
            except BaselineError as exc:
                raise pytest.UsageError(f"--mia-baseline: {exc}") from None
            self.baseline = self.protocol_baselines[self.protocol.name]

    # -- inputs ------------------------------------------------------------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """In one process: the items left after -k, --deselect, --lf."""
        if session.items:
            self.expected = [item.nodeid for item in session.items]
        self._check_baseline()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under xdist the controller collects nothing; every worker sends the
        same ids, which are the samples the run must account for."""
        if not self.expected:
            self.expected = list(ids)
            self._check_baseline()

    def _run_samples(self) -> RunSamples:
        """The samples this run selected, with the instruction text known
        before any call (images are hashed only when read)."""
        out: dict[int, tuple[str | None, str | None]] = {}
        for nodeid in self.expected:
            index = _index_of(nodeid)
            if index is not None:
                text = self.instructions[index] if self.instructions is not None and index < len(self.instructions) else None
                out[index] = (text, None)
        return out

    def _check_baseline(self) -> None:
        """Refuse a baseline of other samples once the selection is known,
        before anything is paid for (under xdist, before any item is scheduled)."""
        if self.baseline is None or self.settings.baseline_common or self.refused is not None:
            return
        diff = differences(self.baseline, self._run_samples())
        if diff is not None:
            self.refused = refusal(diff)
            raise pytest.UsageError(f"--mia-baseline: {self.settings.baseline}: {self.refused}")

    def selection(self) -> Selection:
        """Which rows this run selected; fewer than the dataset's makes the report partial."""
        rows = len(self.instructions) if self.instructions is not None else len(self.expected)
        limit = self.settings.limit
        selected = len(self.expected) or len(self.results)
        option = self.config.option
        filters = [
            text
            for text, given in (
                (f"-k {getattr(option, 'keyword', '')}", getattr(option, "keyword", "")),
                (f"-m {getattr(option, 'markexpr', '')}", getattr(option, "markexpr", "")),
                (f"--deselect {' '.join(getattr(option, 'deselect', None) or [])}", getattr(option, "deselect", None)),
                ("--lf", getattr(option, "lf", False)),
                ("--sw", getattr(option, "stepwise", False)),
            )
            if given
        ]
        return {
            "rows": rows,
            "limit": limit,
            "selected": selected,
            "deselected": max(0, (rows if limit is None else min(rows, limit)) - selected),
            "filters": filters,
        }

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist: where a worker leaves its finished records."""
        if self.handoff is not None:
            node.workerinput[WORKERINPUT_HANDOFF] = {"key": self.handoff.key, "directory": str(self.handoff.directory)}

    def _take_handoff(self, adopt: bool) -> None:
        """Under xdist, a Ctrl-C or SIGTERM ends the workers before they send
        what they hold (items answered but not yet reported, and look-ahead
        samples): it is read back from where each worker left its finished
        records.  Then the session's records are dropped."""
        if self.handoff is None:
            return
        key = self.handoff.key
        try:
            cache = ResponseCache(self.handoff.directory)
        except CacheError:
            return  # the workers could not have written there either
        try:
            if adopt:
                have = {record["index"] for record in self.unclaimed}
                have.update(index for nodeid in self.results if (index := _index_of(nodeid)) is not None)
                for nodeid in self.expected:
                    index = _index_of(nodeid)
                    if index is None or index in have:
                        continue
                    value = cache.get(HANDOFF, f"{key}:{index}")
                    if value is not None and value.get("index") == index:
                        self.unclaimed.append(cast(SampleRecord, value))
                self._summary = None
            cache.drop(HANDOFF, f"{key}:")
            cache.drop(budget_mod.LAYER, f"{key}:")
        except sqlite3.Error:
            pass  # the report goes out with what the controller received
        finally:
            cache.close()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """Under xdist: a worker's unclaimed samples (their calls were paid)."""
        output = getattr(node, "workeroutput", None) or {}
        unclaimed = output.get("mia_unclaimed") or []
        self.unclaimed.extend(json.loads(unclaimed) if isinstance(unclaimed, str) else unclaimed)
        self._summary = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        spent = getattr(report, "mia_budget", None)
        if isinstance(spent, str) and self.budget_stop is None:
            self.budget_stop = spent
            self._summary = None
        result = getattr(report, "mia_result", None)
        if isinstance(result, str):  # from an xdist worker, as ASCII JSON
            # Decoded once, in place: later readers (pytest-html's rows) get the record.
            result = json.loads(result)
            setattr(report, "mia_result", result)  # noqa: B010 - a report attribute of this plugin
        if isinstance(result, dict) and report.when == "call":
            # An item's record, as ``blank_result`` built it (on a worker, perhaps).
            self.results[report.nodeid] = cast(SampleRecord, result)
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

    def summary(self) -> Summary:
        if self._summary is None:
            results = list(self.results.values())
            expected = len(self.expected) or len(self.results)
            tally = summarize(results, expected, self.protocol, self.unclaimed)
            done = set(self.results)
            summary: Summary = {
                **tally,
                "missing": [nodeid for nodeid in self.expected if nodeid not in done],
                "finished_ahead": sorted(self.finished_ahead),
                "ci": stats.report_cis(results, seed=self.settings.seed),
                "cost": cost(tally["usage"], self.settings),
                "budget": None,
                "judge_spread": None,
                "baseline": None,
                "protocols": {},
            }
            nodeids = {record["index"]: nodeid for nodeid, record in self.results.items()}
            for position, protocol in enumerate(self.protocols):
                block, views = protocol_summary(results, protocol, position == 0, self.settings)
                summary["protocols"][protocol.name] = block
                before = self.protocol_baselines.get(protocol.name)
                if before is not None:
                    # Compared on the samples both hold (the headline's block below refuses or gates).
                    by_nodeid = {nodeids[view["index"]]: view for view in views}
                    comparison = compare(
                        block_tally(block),
                        by_nodeid,
                        before,
                        str(self.settings.baseline),
                        None,
                        run_samples=self._run_samples(),
                        common=True,
                        seed=self.settings.seed,
                    )
                    block["baseline"] = protocol_baseline(comparison)
            if self.settings.judge_repeats > 1:
                judged = [r for r in sorted(results, key=lambda r: r["index"]) if r["status"] != "failed"]
                spread = stats.judge_spread([r.get("judge_scores") or [] for r in judged])
                if spread["max_std_sample"] is not None:  # a position in ``judged``: name the sample
                    spread["max_std_sample"] = judged[spread["max_std_sample"]]["index"]
                summary["judge_spread"] = spread
            if self.baseline is not None:
                summary["baseline"] = compare(
                    summary,
                    self.results,
                    self.baseline,
                    str(self.settings.baseline),
                    self.settings.max_drop,
                    run_samples=self._run_samples(),
                    common=self.settings.baseline_common,
                    seed=self.settings.seed,
                )
            summary["budget"] = budget_spend(summary, self.settings, self.budget_stop)
            self._summary = summary
        return self._summary

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        """Gate on the aggregate here: by sessionfinish it is too late to
        count a failure into the exit code (same as pytest-cov).  The
        innermost wrapper: the gate's outcome follows the samples before
        the terminal writes its final progress."""
        cancelled = False
        try:
            return (yield)
        except KeyboardInterrupt as exc:
            # Ctrl-C or SIGTERM cancelled the run: its verdict is no test
            # outcome.  pytest's own stop (session.Interrupted: the endpoint
            # breaker, -x under xdist) ends a run whose gate still counts.
            cancelled = not isinstance(exc, session.Interrupted)
            raise
        finally:
            self._gate(session, cancelled)

    def _gate(self, session: pytest.Session, cancelled: bool) -> None:
        """The gates' verdict as a test outcome (``mia-bench::gate``), so
        the terminal's counts, JUnit and pytest-html show a failed gate as a
        failed test; and the session's numbers as JUnit suite properties."""
        if self.config.option.collectonly or self.refused is not None or self.settings.estimate:
            return
        outcome = self.outcome()
        results = gate_results(outcome)
        failures = [text.removeprefix("FAIL: ") for holds, text in results if not holds]
        self.gate_failed = bool(failures)
        _junit_properties(self.config, outcome, failures if results else None)
        if not results:
            return
        if cancelled:
            session.testsfailed += bool(failures)
        else:
            report_gate(self.config, session, failures)

    def gate_reasons(self, summary: Summary) -> list[str]:
        """Why the aggregate gates fail (empty: they hold or none is set)."""
        reasons = []
        threshold = self.settings.threshold
        total = summary["total_score"]
        if total is None and summary["n_results"] and (threshold is not None or self.baseline is not None):
            # No number is not a pass: a gate that was asked for cannot hold.
            reasons.append("no_score")
        value = threshold_value(summary, self.settings)
        if threshold is not None and (value is None or value < threshold):
            reasons.append("threshold")
        baseline = summary["baseline"]
        if baseline is not None and baseline["gate_failed"]:
            reasons.append("baseline")
        if self.budget_stop is not None:
            # A run cut short by its budget is not a pass.
            reasons.append("budget")
        gated = threshold is not None or self.baseline is not None
        if gated and total is not None and (not 0.0 <= total <= 1.0 or scores_out_of_range(self.results)):
            # A total of 1e300 (a judge's number kept as the reference keeps it) passes any rule.
            reasons.append("out_of_range")
        return reasons

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        # Under xdist a worker's budget stop reaches the controller as an
        # interruption carrying its reason: a stop, not a cancel.
        if self.budget_stop is not None and budget_mod.REASON_PREFIX in str(excinfo.value):
            return
        self.interrupted = True

    # -- SIGTERM -------------------------------------------------------------

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """SIGTERM (what CI runners send on cancel) ends the run like Ctrl-C:
        the partial report is written.  Only from the main thread, only when
        SIGTERM has its default action (never over another handler), and
        only until the session ends (``pytest_unconfigure`` restores it)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._sigterm_installed = True

    def _on_sigterm(self, signum: int, frame: object) -> None:
        # Once is enough, and never while the reports are written: the run
        # is ending then anyway, and an exception would cut the report short.
        if self._terminated or self._finishing:
            return
        self._terminated = True
        raise Terminated("SIGTERM received: the run was cancelled; the report holds what was obtained")

    def pytest_unconfigure(self) -> None:
        if self._sigterm_installed:
            self._sigterm_installed = False
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def _adopt_finished(self) -> None:
        """An interrupted run reports every sample whose answers arrived,
        also those called ahead whose items never ran."""
        nodeids = {index: nodeid for nodeid in self.expected if (index := _index_of(nodeid)) is not None}
        kept: list[SampleRecord] = []
        for record in self.unclaimed:
            nodeid = nodeids.get(record["index"])
            # A sample the budget refused before it obtained anything was not run.
            refused = record["failed_stage"] == "budget" and not _obtained(record)
            if is_finished(record) and not refused and nodeid is not None and nodeid not in self.results:
                self.results[nodeid] = record
                self.finished_ahead.append(nodeid)
            elif record["calls"]["model"] or record["calls"]["judge"]:
                kept.append(record)
        self.unclaimed = kept
        self._summary = None

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self._finishing = True
        if exitstatus == pytest.ExitCode.INTERRUPTED and self.budget_stop is None:
            self.interrupted = True
        if self.config.option.collectonly or self.refused is not None:
            return  # nothing ran: an earlier run's report must not be overwritten
        if self.settings.estimate:
            self._estimate()
        # In one process the runtime closed its engine just before (tryfirst).
        unclaimed = self.config.stash.get(UNCLAIMED_KEY, None)
        if unclaimed:
            self.unclaimed.extend(unclaimed)
            self.config.stash[UNCLAIMED_KEY] = []
            self._summary = None
        # A run stopped by its budget keeps every answer received, like an interrupted one.
        stopped = self.interrupted or self.budget_stop is not None
        self._take_handoff(adopt=stopped)
        if stopped:
            self._adopt_finished()
        else:
            # Only paid calls count for samples whose items never ran.
            self.unclaimed = [r for r in self.unclaimed if r["calls"]["model"] or r["calls"]["judge"]]
        if self.settings.report or self.settings.html:
            report = self.report()
            for path, write in ((self.settings.report, write_json), (self.settings.html, write_html)):
                if not path:
                    continue
                try:
                    write(path, report)
                except OSError as exc:
                    # One report failing must not cost the other, nor end in a traceback.
                    self.write_errors.append(f"cannot write {path}: {exc.strerror or exc}")
            if self.write_errors and session.exitstatus == pytest.ExitCode.OK:
                # A report that was asked for and not written fails the run.
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.budget_stop is not None and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.INTERRUPTED):
            # xdist ends a run a worker stopped as an interruption (exit code 2):
            # stopped by its budget, the run failed.
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _estimate(self) -> None:
        """--mia-estimate: the numbers of the selected samples, computed here
        alone (on the xdist controller too), so every mode gives the same."""
        from ..run.estimate import estimate

        indices = [index for nodeid in self.expected if (index := _index_of(nodeid)) is not None]
        source = self.config.stash[SOURCE_KEY]
        self.estimate = estimate(self.settings, self.protocols, source, indices, self.cache_directory)

    def outcome(self) -> RunOutcome:
        """What the reports are made from, as of now."""
        summary = self.summary()
        return RunOutcome(
            summary=summary,
            results=self.results,
            settings=self.settings,
            protocol=self.protocol,
            protocols=self.protocols,
            judge_image=self.judge_image,
            fingerprint=self.fingerprint,
            interrupted=self.interrupted,
            started=self.started,
            gate_reasons=tuple(self.gate_reasons(summary)),
            selection=self.selection(),
            estimate=self.estimate,
        )

    def report(self) -> Report:
        return build_report(self.outcome())

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.config.option.collectonly or self.refused is not None:
            return
        terminalreporter.section("MIA-Bench")
        for line, markup in terminal_lines(self.outcome()):
            terminalreporter.write_line(line, **markup)
        for error in self.write_errors:
            terminalreporter.write_line(f"ERROR: {error}", red=True, bold=True)


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


def _junit_properties(config: pytest.Config, outcome: RunOutcome, failures: list[str] | None) -> None:
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


def block_tally(block: ProtocolSummary) -> Tally:
    """What ``baseline.compare`` reads of a tally, from a protocol's block."""
    return cast(Tally, {"total_score": block["total_score"], "by_type": block["by_type"], "by_component_type": block["by_component_type"]})


def protocol_baseline(comparison: BaselineComparison) -> ProtocolBaseline:
    """The few numbers of a comparison that a protocol's block keeps."""
    return {
        "total_score": comparison["total_score"],
        "delta": comparison["delta"],
        "n_paired": comparison["n_paired"],
        "mean_diff": comparison["mean_diff"],
        "diff_ci": comparison["diff_ci"],
        "p_value": comparison["p_value"],
    }


def threshold_value(summary: Summary, settings: Settings) -> float | None:
    """What --mia-threshold compares: total_score, or with
    ``--mia-threshold-on lower`` the lower bound of its 95 % CI."""
    if settings.threshold_on == "lower":
        ci = summary["ci"]["total_score"]
        return None if ci is None else ci[0]
    return summary["total_score"]


def cost(usage: UsageTotals, settings: Settings) -> Cost | None:
    """Estimated dollars from --mia-price; None without prices.  Only this
    run's API calls cost money; cached answers are shown separately."""
    if not settings.price:
        return None
    prices = budget_mod.role_prices(settings)

    def role_cost(role: Role, name: str | None) -> RoleCost | None:
        if name is None or role not in prices:
            return None
        tokens = usage[role]
        return {
            "model": name,
            "spent": budget_mod.dollars(prices, role, tokens["prompt_tokens"], tokens["completion_tokens"]),
            "saved_by_cache": budget_mod.dollars(prices, role, tokens["cached_prompt_tokens"], tokens["cached_completion_tokens"]),
        }

    model, judge = role_cost("model", settings.model), role_cost("judge", settings.judge_model)
    known = [c["spent"] for c in (model, judge) if c is not None]
    return {"model": model, "judge": judge, "total_spent": math.fsum(known) if known else None}


def budget_spend(summary: Summary, settings: Settings, stopped: str | None) -> BudgetSpend | None:
    """Spend against --mia-budget-tokens / --mia-budget-usd: every token the
    endpoints reported (calls of samples called ahead but not run included)."""
    if settings.budget_tokens is None and settings.budget_usd is None:
        return None
    usage = summary["usage"]
    tokens = sum(usage[role]["prompt_tokens"] + usage[role]["completion_tokens"] for role in ("model", "judge"))
    spent_usd = summary["cost"]["total_spent"] if summary["cost"] is not None else None
    return {
        "tokens": settings.budget_tokens,
        "usd": settings.budget_usd,
        "spent_tokens": tokens,
        "spent_usd": spent_usd,
        "stopped": stopped,
        "n_not_run": summary["n_missing"],
    }


def _obtained(record: SampleRecord) -> bool:
    """Whether a sample obtained anything (an answer, a cached one, a paid call)."""
    return record["response"] is not None or bool(record["calls"]["model"] or record["calls"]["judge"]) or any(record["cached"].values())


def _crashed(index: int, reason: str) -> SampleRecord:
    result = blank_result(index, "unknown")
    result["reason"] = reason
    result["failed_stage"] = "worker"
    return result
