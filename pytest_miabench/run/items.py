"""The pytest side of a sample: one collector for the benchmark, one item per row."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from typing import Any

import pytest

from ..config.text import printable
from ..data.samples import Sample
from ..result import SampleRecord
from .engine import BudgetSpent, SampleFailure
from .keys import BUDGET_KEY, ENGINE_KEY, RESULT_KEY, SETTINGS_KEY, TIMEOUT_KEY

COLLECTOR_NAME = "mia-bench"
#: Why the items of a --mia-estimate run are skipped.
ESTIMATE_SKIP = "estimate only (--mia-estimate): no API call was made"


def compact_properties(result: SampleRecord) -> list[tuple[str, str]]:
    """The per-sample properties that go into JUnit XML, each value as JSON
    text: pytest writes ``str(value)``, and a Python repr (``None``,
    ``False``, ``[0.5, None]``) is not something a JUnit consumer can read
    back; ``json.loads`` of every value gives the number, string, bool, list
    or null it stands for."""
    values: list[tuple[str, object]] = [
        ("mia_score", result["score"]),
        ("mia_type", result["type"]),
        ("mia_status", result["status"]),
        ("mia_components", [c["score"] for c in result["components"]]),
        ("mia_cached", bool(result["cached"]["model"] and result["cached"]["judge"])),
        # Every listed protocol's score, the headline first: {protocol: score or null}.
        ("mia_protocol_scores", {name: verdict["score"] for name, verdict in (result.get("protocols") or {}).items()}),
    ]
    return [(name, json.dumps(value, ensure_ascii=False)) for name, value in values]


class BenchCollector(pytest.Collector):
    """Yields one item per sample; holds no state beyond the sample list."""

    def __init__(self, *, samples: list[Sample], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.samples = samples

    def collect(self) -> Iterator[MiaItem]:
        for sample in self.samples:
            yield MiaItem.from_parent(self, name=sample.name, sample=sample)


class SampleTimeout(Exception):
    """pytest-timeout's limit passed while the item waited for its sample."""


class MiaItem(pytest.Item):
    """One MIA-Bench sample.  Passes when the judge gave a verdict; fails with
    a one-paragraph message when the sample could not be run."""

    def __init__(self, *, sample: Sample, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sample = sample
        # ``-k advanced`` selects by instruction type.
        self.extra_keyword_matches.add(sample.type)

    def runtest(self) -> None:
        if self.config.stash[SETTINGS_KEY].estimate:
            # An estimate calls nothing: the sample is reported as not run (exit code 0).
            pytest.skip(ESTIMATE_SKIP)
        engine = self.config.stash[ENGINE_KEY]
        timeout = self.stash.get(TIMEOUT_KEY, None)
        try:
            record = engine.result(self.sample, timeout)
        except SampleFailure as failure:
            if isinstance(failure, BudgetSpent):
                self._budget_spent(failure)
            self._record(failure.record)
            if failure.fatal:
                # One message for the whole run (xdist carries it to the controller).
                self.session.shouldstop = failure.message
            raise
        except concurrent.futures.TimeoutError:
            abandoned = engine.abandon(self.sample)
            waiting = "the model's answer" if abandoned is None or abandoned["response"] is None else "the judge's verdict"
            message = f"timed out after {timeout:g} s (pytest-timeout) waiting for {waiting}; the sample was cancelled"
            if abandoned is not None:
                abandoned["reason"], abandoned["failed_stage"] = message, "timeout"
                self._record(abandoned)
            raise SampleTimeout(message) from None
        self._record(record)

    def _budget_spent(self, failure: BudgetSpent) -> None:
        """The budget is spent: the run takes no new sample (a failed run:
        pytest's own stop, exit code 1).  A sample that obtained nothing was
        not run: skipped, and reported as not run; one that obtained an
        answer fails below, its answer kept in the reports."""
        self.stash[BUDGET_KEY] = failure.spent
        self.session.shouldfail = failure.spent
        record = failure.record
        if not (record["response"] is not None or record["calls"]["model"] or record["calls"]["judge"] or any(record["cached"].values())):
            pytest.skip(f"not run: {failure.spent}")

    def _record(self, result: SampleRecord) -> None:
        self.stash[RESULT_KEY] = result
        # A rerun (pytest-rerunfailures) replaces the earlier run's properties.
        self.user_properties[:] = [p for p in self.user_properties if not p[0].startswith("mia_")]
        self.user_properties.extend(compact_properties(result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, (SampleFailure, SampleTimeout)):
            # Server text may hold a lone surrogate: no terminal or XML takes one.
            return printable(f"mia-bench sample {self.name} [{self.sample.type}]: {excinfo.value}")
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[str, int | None, str]:
        return COLLECTOR_NAME, None, f"mia-bench sample {self.name} [{self.sample.type}]"
