"""What other tools read from a run: JUnit XML properties (as JSON) and
pytest-html's report (the run's summary, each sample's score and status)."""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from support.server import Reply, Request

from conftest import SMALL_ROWS, Bench

pytest_html = pytest.importorskip("pytest_html", reason="pytest-html is in the [test] extra")

PROPERTIES = ("mia_score", "mia_type", "mia_status", "mia_components", "mia_cached", "mia_protocol_scores")


def mixed(rows: list[dict[str, Any]]) -> Any:
    """Sample 0 scored, sample 1 unparseable (zero by policy), sample 2's
    model call refused (failed: score and component scores null); the rest
    full marks."""
    instructions = [rows[i]["instruction"] for i in SMALL_ROWS]

    def script(request: Request) -> Reply:
        if request.role == "model":
            if instructions[2] in request.text:
                return Reply("no", status=400)
            return Reply(f"Answer: {request.text}")
        if instructions[0] in request.text:
            return Reply("score of component 1: 4/4, score of component 2: 3/3, score of component 3: 2/3, total score: 9/10.")
        if instructions[1] in request.text:
            return Reply("I cannot grade this.")
        return Reply("score of component 1: 4/4, score of component 2: 3/3, score of component 3: 3/3, component 4: 1/1, total score: 10/10")

    return script


def junit_properties(path: Path) -> dict[str, dict[str, str]]:
    """Raw property text per test case name."""
    cases = ET.parse(path).getroot().findall(".//testcase")
    return {str(case.get("name")): {str(p.get("name")): str(p.get("value")) for p in case.findall("./properties/property")} for case in cases}


def test_junit_properties_are_json_text(bench: Bench, rows: list[dict[str, Any]]) -> None:
    bench.server.script = mixed(rows)
    result = bench.run("--junitxml=junit.xml", "-p", "no:xdist", "--mia-model-revision=r1")
    result.assert_outcomes(passed=5, failed=1)
    report = bench.report()
    raw = junit_properties(bench.pytester.path / "junit.xml")
    assert set(raw) == {s["nodeid"].rsplit("::", 1)[-1] for s in report["samples"]}
    for sample in report["samples"]:
        props = raw[sample["nodeid"].rsplit("::", 1)[-1]]
        assert sorted(props) == sorted(PROPERTIES)
        parsed = {name: json.loads(text) for name, text in props.items()}
        assert parsed == {
            "mia_score": sample["score"],
            "mia_type": sample["type"],
            "mia_status": sample["status"],
            "mia_components": [c["score"] for c in sample["components"]],
            "mia_cached": False,
            "mia_protocol_scores": {"evalscope": sample["score"]},
        }
    # The spellings a consumer sees: JSON's, not Python's.
    failed = raw[report["samples"][2]["nodeid"].rsplit("::", 1)[-1]]
    assert failed["mia_score"] == "null" and failed["mia_status"] == '"failed"' and failed["mia_cached"] == "false"
    assert failed["mia_components"] == "[null, null, null]"
    # A rerun answers from the cache (the failed sample's call is never cached).
    bench.run("--junitxml=junit.xml", "-p", "no:xdist", "--mia-model-revision=r1")
    assert {props["mia_cached"] for props in junit_properties(bench.pytester.path / "junit.xml").values()} == {"true", "false"}


class _PytestHtmlPage(HTMLParser):
    """The parts of a pytest-html 4 page this plugin adds to."""

    def __init__(self) -> None:
        super().__init__()
        self.blob: dict[str, Any] = {}
        self.header: list[str] = []
        self._in_th = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = dict(attrs)
        if d.get("id") == "data-container":
            self.blob = json.loads(d["data-jsonblob"] or "{}")
        self._in_th = tag == "th"

    def handle_endtag(self, tag: str) -> None:
        self._in_th = False

    def handle_data(self, data: str) -> None:
        if self._in_th and data.strip():
            self.header.append(data.strip())


def read_page(path: Path) -> tuple[_PytestHtmlPage, list[str], str]:
    """The page's table data and header, the text of each line of the
    MIA-Bench summary block, and the raw page."""
    text = path.read_text(encoding="utf-8")
    page = _PytestHtmlPage()
    page.feed(text)
    block = text.split('<div class="mia-bench-summary">', 1)[1].split("</div>", 1)[0]
    lines = [html.unescape(re.sub(r"<[^>]+>", "", line)).strip() for line in block.splitlines()]
    return page, [line for line in lines if line], text


def _unescape(td: str) -> str:
    """The text of one ``<td ...>text</td>`` cell."""
    return html.unescape(td.split(">", 1)[1].rsplit("</td>", 1)[0])


@pytest.mark.parametrize("xdist", [False, True], ids=["single", "xdist"])
def test_pytest_html_report_holds_the_summary_and_each_samples_score(bench: Bench, rows: list[dict[str, Any]], xdist: bool) -> None:
    bench.server.script = mixed(rows)
    result = bench.run("--html=pytest-html.html", "--mia-threshold=0.99", "-p", "no:cacheprovider", *(["-n", "2"] if xdist else ["-p", "no:xdist"]))
    assert result.ret == 1
    report = bench.report()
    page, lines, _ = read_page(bench.pytester.path / "pytest-html.html")
    summary = "\n".join(lines)
    assert f"total_score: {report['total_score']:.4f}  95% CI [{report['ci']['total_score'][0]:.4f}, {report['ci']['total_score'][1]:.4f}]" in summary
    assert "gate: FAIL (threshold)" in summary
    assert f"FAIL: total_score {report['total_score']:.4f} is below the threshold 0.99" in summary
    assert page.header[:4] == ["Result", "Test", "MIA score", "MIA status"]
    by_nodeid = {s["nodeid"]: s for s in report["samples"]}
    # The samples' rows, and the failed gate's (tests/test_verdict.py checks it).
    assert set(page.blob["tests"]) == set(by_nodeid) | {"mia-bench::gate"}
    for nodeid, entries in page.blob["tests"].items():
        if nodeid == "mia-bench::gate":
            continue
        sample = by_nodeid[nodeid]
        (row,) = [e["resultsTableRow"] for e in entries]
        score = "n/a" if sample["score"] is None else f"{sample['score']:.4f}"
        assert (_unescape(next(c for c in row if "col-miaScore" in c)), _unescape(next(c for c in row if "col-miaStatus" in c))) == (score, sample["status"])
        assert len(row) == len(page.header)


def test_pytest_html_summary_is_escaped(bench: Bench) -> None:
    """The fail-fast message names the model; markup in it stays text."""
    hostile = "<img src=x onerror=alert(1)>"
    bench.server.script = lambda request: Reply("denied", status=401)
    result = bench.run("--html=pytest-html.html", f"--mia-model={hostile}", "-p", "no:xdist", "-p", "no:cacheprovider")
    assert result.ret == 2
    _, lines, text = read_page(bench.pytester.path / "pytest-html.html")
    assert hostile not in text
    assert any(line.startswith("STOPPED: ") and hostile in line for line in lines)
    assert "gate: no gate set (--mia-threshold, --mia-max-drop)" in lines


def test_without_pytest_html_nothing_is_registered(bench: Bench) -> None:
    """With pytest-html disabled (as if not installed) the run is as before:
    no pytest_html_* hook is offered to a pytest that would reject it."""
    result = bench.run("-p", "no:html", "-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    assert result.ret == 0
    # Installed but not writing a report (no --html): not registered either.
    bench.pytester.makeconftest(
        "def pytest_sessionfinish(session):\n"
        "    print('\\nmia-pytest-html-registered:', session.config.pluginmanager.has_plugin('miabench-pytest-html'))\n"
    )
    plain = bench.run("-p", "no:xdist", "-p", "no:cacheprovider", "-s")
    plain.stdout.fnmatch_lines(["*mia-pytest-html-registered: False*"])
