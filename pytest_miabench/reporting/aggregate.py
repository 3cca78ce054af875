"""Controller side: the session object that wires the reporting parts to pytest.

Registered in the process that reports (the single process, or the xdist
controller).  Each hook hands its work to the part that owns it: the
``Collector`` takes in results (collect.py), ``build_summary`` makes the
numbers (summary.py), the gates run in gate.py, the SIGTERM guard is
run/sigterm.py, the xdist handoff run/handoff.py, and report.py writes
the reports and the terminal lines.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ..config.settings import Settings
from ..protocols.base import Protocol
from ..protocols.sampling import judge_sees_image
from ..run import handoff
from ..run.keys import SOURCE_KEY
from ..run.sigterm import SigtermGuard
from ..summary import Report, Selection, Summary
from .baseline import Baseline, BaselineError, differences, load_protocols, refusal
from .collect import Collector
from .gate import gate_reasons, run_gate
from .report import RunOutcome, build_report, write_html, write_json
from .summary import build_summary
from .terminal import terminal_lines

AGGREGATOR_KEY = pytest.StashKey["Aggregator"]()


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
        row), by index: a baseline of other samples is refused before any call."""
        self.config = config
        self.settings = settings
        self.protocols = tuple(protocols)  # the headline first
        self.protocol = self.protocols[0]
        self.judge_image = judge_sees_image(settings, self.protocol)
        self.collected = Collector(instructions)
        self.started = time.time()
        self._summary: tuple[int, Summary] | None = None  # (the collector's revision, its summary)
        self.gate_failed = False
        self.interrupted = False
        self.write_errors: list[str] = []
        self.sigterm = SigtermGuard()
        self.fingerprint = fingerprint
        self.refused: str | None = None  # the baseline refused at collection: no report is written
        # Under xdist: where workers leave their finished records, set by the controller's wiring.
        self.handoff: handoff.Handoff | None = None
        # The response cache's directory (read by --mia-estimate); the estimate itself.
        self.cache_directory: Path | None = None
        self.estimate: dict[str, Any] | None = None
        # The baseline under each protocol it shares with this run; the headline's gates.
        self.protocol_baselines: dict[str, Baseline] = {}
        self.baseline: Baseline | None = None
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
            self.collected.expected = [item.nodeid for item in session.items]
        self._check_baseline()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under xdist the controller collects nothing; every worker sends the
        same ids, which are the samples the run must account for."""
        if not self.collected.expected:
            self.collected.expected = list(ids)
            self._check_baseline()

    def _check_baseline(self) -> None:
        """Refuse a baseline of other samples once the selection is known,
        before anything is paid for (under xdist, before any item is scheduled)."""
        if self.baseline is None or self.settings.baseline_common or self.refused is not None:
            return
        diff = differences(self.baseline, self.collected.run_samples())
        if diff is not None:
            self.refused = refusal(diff)
            raise pytest.UsageError(f"--mia-baseline: {self.settings.baseline}: {self.refused}")

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist: where a worker leaves its finished records."""
        if self.handoff is not None:
            self.handoff.tell(node)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """Under xdist: a worker's unclaimed samples (their calls were paid)."""
        self.collected.add_unclaimed(handoff.received_unclaimed(node))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.collected.add_report(report)

    # -- the session ---------------------------------------------------------

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """SIGTERM ends the run like Ctrl-C until the session ends (run/sigterm.py)."""
        self.sigterm.install()

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
            if not (self.config.option.collectonly or self.refused is not None or self.settings.estimate):
                self.gate_failed = run_gate(self.config, session, self.outcome(), cancelled)

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        if not self.collected.stopped_by_budget(excinfo.value):
            self.interrupted = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.sigterm.finishing = True
        budget_stop = self.collected.budget_stop
        if exitstatus == pytest.ExitCode.INTERRUPTED and budget_stop is None:
            self.interrupted = True
        if self.config.option.collectonly or self.refused is not None:
            return  # nothing ran: an earlier run's report must not be overwritten
        if self.settings.estimate:
            self._estimate()
        self._gather(stopped=self.interrupted or budget_stop is not None)
        if self.settings.report or self.settings.html:
            self.write_errors += write_reports(self.settings, self.report())
            if self.write_errors and session.exitstatus == pytest.ExitCode.OK:
                # A report that was asked for and not written fails the run.
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if budget_stop is not None and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.INTERRUPTED):
            # xdist ends a run a worker stopped as an interruption (exit code 2):
            # stopped by its budget, the run failed.
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _gather(self, stopped: bool) -> None:
        """Every record still out: the runtime's unclaimed ones (in one
        process it closed its engine just before, tryfirst) and, under
        xdist, what the workers left behind.  A run stopped (interrupted, or
        by its budget) keeps every answer received."""
        collected = self.collected
        collected.add_unclaimed(handoff.take_unclaimed(self.config))
        if self.handoff is not None:
            collected.add_unclaimed(self.handoff.recover(collected.indices_missing() if stopped else None))
        if stopped:
            collected.adopt_finished()
        else:
            collected.keep_paid()

    def pytest_unconfigure(self) -> None:
        self.sigterm.restore()

    def _estimate(self) -> None:
        """--mia-estimate: the numbers of the selected samples, computed here
        alone (on the xdist controller too), so every mode gives the same."""
        from ..run.estimate import estimate

        source = self.config.stash[SOURCE_KEY]
        self.estimate = estimate(self.settings, self.protocols, source, self.collected.expected_indices(), self.cache_directory)

    # -- outputs -----------------------------------------------------------

    def summary(self) -> Summary:
        revision = self.collected.revision
        if self._summary is None or self._summary[0] != revision:
            self._summary = (revision, build_summary(self.collected, self.settings, self.protocols, self.protocol_baselines))
        return self._summary[1]

    def selection(self) -> Selection:
        return self.collected.selection(self.settings.limit, self.config.option)

    def outcome(self) -> RunOutcome:
        """What the reports are made from, as of now."""
        summary = self.summary()
        reasons = gate_reasons(summary, self.settings, self.baseline is not None, self.collected.budget_stop, self.collected.results)
        return RunOutcome(
            summary=summary,
            results=self.collected.results,
            settings=self.settings,
            protocol=self.protocol,
            protocols=self.protocols,
            judge_image=self.judge_image,
            fingerprint=self.fingerprint,
            interrupted=self.interrupted,
            started=self.started,
            gate_reasons=tuple(reasons),
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


def write_reports(settings: Settings, report: Report) -> list[str]:
    """Write the JSON and HTML reports asked for; why each one that was not
    written failed.  One failing must not cost the other, nor end in a traceback."""
    errors = []
    for path, write in ((settings.report, write_json), (settings.html, write_html)):
        if not path:
            continue
        try:
            write(path, report)
        except OSError as exc:
            errors.append(f"cannot write {path}: {exc.strerror or exc}")
    return errors
