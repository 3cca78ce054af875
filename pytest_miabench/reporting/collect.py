"""Controller side: the per-sample records a run received, and what it selected.

Records arrive through ``pytest_runtest_logreport`` both in one process and
under xdist (where the controller receives every worker's reports), so the
same code collects them either way.  The collector only keeps: the summary
(summary.py), the gates (gate.py) and the reports read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from ..calls import budget as budget_mod
from ..result import SampleRecord, blank_result, is_finished
from ..run import handoff
from ..summary import Selection
from .baseline import RunSamples


def index_of(nodeid: str) -> int | None:
    """The sample index a node id ends with (None for any other test)."""
    tail = nodeid.rsplit("::", 1)[-1]
    return int(tail) if tail.isdigit() else None


class Collector:
    """The records received by node id, the node ids the run must account
    for, and the records of samples called ahead whose items never ran.

    ``revision`` changes with every change, so a summary made of an older
    one is known to be stale."""

    def __init__(self, instructions: Sequence[str | None] | None = None) -> None:
        """``instructions``: every row's instruction text (None for an
        unusable row), by index: what a run selected is measured against
        the rows."""
        self.instructions = list(instructions) if instructions is not None else None
        self.results: dict[str, SampleRecord] = {}
        self.expected: list[str] = []
        self.unclaimed: list[SampleRecord] = []
        # Node ids of samples that finished ahead of their turn in an
        # interrupted run: reported, though pytest never ran their items.
        self.finished_ahead: list[str] = []
        # Why the budget stopped the run (None: it did not).
        self.budget_stop: str | None = None
        self.revision = 0

    def _changed(self) -> None:
        self.revision += 1

    # -- what arrives ----------------------------------------------------------

    def add_report(self, report: pytest.TestReport) -> None:
        """One test report: a sample's record, a budget stop, or a failure
        that left no record (a setup error, a crashed xdist worker)."""
        spent = getattr(report, "mia_budget", None)
        if isinstance(spent, str) and self.budget_stop is None:
            self.budget_stop = spent
            self._changed()
        result = handoff.report_record(report)
        if result is not None and report.when == "call":
            # An item's record, as ``blank_result`` built it (on a worker, perhaps).
            self.results[report.nodeid] = result
            self._changed()
        elif report.failed and report.nodeid not in self.results:
            # setup error, or an xdist worker that crashed mid-item ("???")
            index = index_of(report.nodeid)
            if index is not None:
                # xdist reports a crashed worker's item with when="???"
                when = str(report.when)
                reason = "the xdist worker running it crashed" if when == "???" else f"error in {when}"
                self.results[report.nodeid] = _crashed(index, reason)
                self._changed()

    def add_unclaimed(self, records: Sequence[SampleRecord]) -> None:
        """Records of samples called ahead whose items never ran (their calls were paid)."""
        if records:
            self.unclaimed.extend(records)
            self._changed()

    def indices_missing(self) -> list[int]:
        """Indices of expected samples of which nothing arrived."""
        have = {record["index"] for record in self.unclaimed}
        have.update(index for nodeid in self.results if (index := index_of(nodeid)) is not None)
        return [index for nodeid in self.expected if (index := index_of(nodeid)) is not None and index not in have]

    def adopt_finished(self) -> None:
        """An interrupted run reports every sample whose answers arrived,
        also those called ahead whose items never ran."""
        nodeids = {index: nodeid for nodeid in self.expected if (index := index_of(nodeid)) is not None}
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
        self._changed()

    def keep_paid(self) -> None:
        """Only paid calls count for samples whose items never ran.  Leaves
        ``revision`` as it is, as the aggregator always has: a summary made
        before (the gate's) stays the one reported."""
        self.unclaimed = [r for r in self.unclaimed if r["calls"]["model"] or r["calls"]["judge"]]

    # -- what the run selected ---------------------------------------------------

    def expected_indices(self) -> list[int]:
        return [index for nodeid in self.expected if (index := index_of(nodeid)) is not None]

    def run_samples(self) -> RunSamples:
        """The samples this run selected, with the instruction text known
        before any call (images are hashed only when read)."""
        out: dict[int, tuple[str | None, str | None]] = {}
        for index in self.expected_indices():
            text = self.instructions[index] if self.instructions is not None and index < len(self.instructions) else None
            out[index] = (text, None)
        return out

    def selection(self, limit: int | None, option: Any) -> Selection:
        """Which rows this run selected; fewer than the dataset's makes the
        report partial.  ``option``: pytest's ``config.option``."""
        rows = len(self.instructions) if self.instructions is not None else len(self.expected)
        selected = len(self.expected) or len(self.results)
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

    def stopped_by_budget(self, interruption: BaseException) -> bool:
        """Under xdist a worker's budget stop reaches the controller as an
        interruption carrying its reason: a stop, not a cancel."""
        return self.budget_stop is not None and budget_mod.REASON_PREFIX in str(interruption)


def _obtained(record: SampleRecord) -> bool:
    """Whether a sample obtained anything (an answer, a cached one, a paid call)."""
    return record["response"] is not None or bool(record["calls"]["model"] or record["calls"]["judge"]) or any(record["cached"].values())


def _crashed(index: int, reason: str) -> SampleRecord:
    result = blank_result(index, "unknown")
    result["reason"] = reason
    result["failed_stage"] = "worker"
    return result
