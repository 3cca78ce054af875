"""pytest-html's report, given the run's summary and each sample's score and status.

``plugin.py`` imports and registers this module only when pytest-html is
loaded and writing a report (``--html``), and only in the process that
writes it (never an xdist worker: there pytest-html writes nothing, and the
controller holds the aggregate).  Without pytest-html nothing here is
imported and no ``pytest_html_*`` hook is known to pytest.

Everything goes through pytest-html's documented hooks, which take HTML
text: every value is escaped here, since sample statuses come from worker
reports and the summary lines can quote model and endpoint output.
"""

from __future__ import annotations

from html import escape
from typing import Any

import pytest

from .aggregate import Aggregator
from .terminal import terminal_lines

# Inserted after pytest-html's "Test" column, in header and rows alike.
_COLUMN = 2


class PytestHtmlHooks:
    """Adds to pytest-html's report; reads the aggregator, changes nothing."""

    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session) -> None:
        """The gate verdict, then the lines of the terminal's MIA-Bench
        section (total_score with its CI, counts, usage, baseline, gates)."""
        outcome = self.aggregator.outcome()
        baseline = outcome.summary["baseline"]
        gated = outcome.settings.threshold is not None or (baseline is not None and baseline["max_drop"] is not None)
        if outcome.gate_reasons:
            verdict, css = f"FAIL ({', '.join(outcome.gate_reasons)})", "failed"
        elif gated:
            verdict, css = "PASS", "passed"
        else:
            verdict, css = "no gate set (--mia-threshold, --mia-max-drop)", ""
        block = [
            '<div class="mia-bench-summary">',
            "<h3>MIA-Bench</h3>",
            f'<p class="mia-bench-verdict">gate: <span class="{css}">{escape(verdict)}</span></p>',
        ]
        for text, markup in terminal_lines(outcome):
            colour = "failed" if markup.get("red") else "passed" if markup.get("green") else ""
            line = f'<span class="{colour}">{escape(text)}</span>' if colour else escape(text)
            block.append(f"<p>{line}</p>")
        block.append("</div>")
        prefix.append("\n".join(block))

    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells.insert(_COLUMN, '<th class="sortable" data-column-type="miaStatus">MIA status</th>')
        cells.insert(_COLUMN, '<th class="sortable" data-column-type="miaScore">MIA score</th>')

    def pytest_html_results_table_row(self, report: Any, cells: list[str]) -> None:
        """Every row gets both cells (empty for a setup, teardown or collection
        row) so the columns stay aligned with the header."""
        record = getattr(report, "mia_result", None)
        score = status = ""
        if isinstance(record, dict):
            value = record.get("score")
            score = "n/a" if value is None else f"{float(value):.4f}"
            status = str(record.get("status", ""))
        cells.insert(_COLUMN, f'<td class="col-miaStatus">{escape(status)}</td>')
        cells.insert(_COLUMN, f'<td class="col-miaScore">{escape(score)}</td>')
