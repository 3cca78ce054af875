"""Every leaderboard's number from one run (issue 15): ``--mia-protocol`` with
a list or ``all``.  The model answers each sample once; every listed protocol
judges that answer its own way; reports, JUnit and the terminal carry every
protocol's number.

The loopback judge answers each protocol with the replies whose numbers
tests/test_protocols_e2e.py computed by hand, so every protocol's total here
is checked against a hand-computed one, and against a separate
single-protocol run on the same answers."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest
from support.server import Reply, Request
from test_protocols_e2e import EXPECTED, JSON_REPLIES, TEXT_REPLIES

from conftest import SMALL_ROWS, Bench

# --mia-protocol all: the registry's order, the default (evalscope) first.
ALL = ("evalscope", "evalscope-json", "lmms-eval", "vlmevalkit", "apple")
# Each protocol asks the judge with its own max_tokens (README protocol table);
# the two evalscope variants differ in the prompt (JSON contract).
MAX_TOKENS = {2000: "apple", 2048: "vlmevalkit", 1024: "lmms-eval", 4096: "evalscope"}
JSON_CONTRACT = "Reply with a single JSON object"


def protocol_of(request: Request) -> str:
    """Which protocol a judge request was made under, from the request alone."""
    if JSON_CONTRACT in request.text:
        return "evalscope-json"
    return MAX_TOKENS[request.json["max_tokens"]]


class Judge:
    """Model: one answer per sample.  Judge: each protocol's scripted reply
    for the sample (HTTP 400 for the (protocol, position) pairs in ``broken``)."""

    def __init__(self, rows: list[dict[str, Any]], broken: set[tuple[str, int]] | None = None, text_replies: list[str] | None = None) -> None:
        self.instructions = [rows[i]["instruction"] for i in SMALL_ROWS]
        self.broken = broken or set()
        self.text_replies = text_replies or TEXT_REPLIES

    def position(self, request: Request) -> int:
        return next(p for p, text in enumerate(self.instructions) if text in request.text)

    def __call__(self, request: Request) -> Reply:
        position = self.position(request)
        if request.role == "model":
            return Reply(f"A response to sample {position}.")
        protocol = protocol_of(request)
        if (protocol, position) in self.broken:
            return Reply("the judge broke", status=400)
        return Reply((JSON_REPLIES if protocol == "evalscope-json" else self.text_replies)[position])


def judge_calls(bench: Bench, judge: Judge) -> list[tuple[str, int]]:
    return sorted((protocol_of(r), judge.position(r)) for r in bench.server.by_role("judge"))


def model_calls(bench: Bench) -> int:
    return len(bench.server.by_role("model"))


def expected_scores(protocol: str) -> list[Any]:
    return [pytest.approx(x, abs=1e-12) if x is not None else None for x in EXPECTED[protocol][2]]


def junit_scores(path: Any) -> dict[str, dict[str, float | None]]:
    cases = ET.parse(path).getroot().findall(".//testcase")
    out = {}
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.findall("./properties/property")}
        out[str(case.get("name"))] = json.loads(str(props["mia_protocol_scores"]))
    return out


class Page(HTMLParser):
    """Attributes of every element, and the text of the page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text = ""
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text += data

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.elements if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]


def per_protocol_view(report: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on how the samples were spread over processes."""
    return {
        "protocols": report["protocols"],
        "samples": [(s["index"], s["protocols"]) for s in report["samples"]],
    }


def test_all_protocols_one_model_call_and_one_judge_call_per_protocol_single_and_xdist(
    bench: Bench, rows: list[dict[str, Any]]
) -> None:
    judge = Judge(rows)
    bench.server.script = judge
    views = []
    for xdist in (["-p", "no:xdist"], ["-n", "2"]):
        bench.server.requests.clear()
        html = bench.pytester.path / "report.html"
        result = bench.run("--mia-protocol=all", "-p", "no:cacheprovider", "--junitxml=junit.xml", f"--mia-html={html}", *xdist)
        result.assert_outcomes(passed=6)
        # One model call per sample; one judge call per sample and protocol.
        assert model_calls(bench) == 6
        assert judge_calls(bench, judge) == sorted((protocol, position) for protocol in ALL for position in range(6))

        report = bench.report()
        assert list(report["protocols"]) == list(ALL)
        assert report["protocol"]["name"] == "evalscope"
        for protocol in ALL:
            block = report["protocols"][protocol]
            assert block["total_score"] == pytest.approx(EXPECTED[protocol][3], abs=1e-12), protocol
            counts = EXPECTED[protocol][4]
            assert [block["counts"][k] for k in ("scored", "zero", "dropped", "excluded", "failed")] == [
                counts["n_scored"], counts["n_zero"], counts["n_dropped"], counts["n_excluded"], 0
            ]
            for key, value in EXPECTED[protocol][5].items():
                assert block["protocol_metrics"][key] == pytest.approx(value), (protocol, key)
            assert [s["protocols"][protocol]["status"] for s in report["samples"]] == EXPECTED[protocol][1]
            assert [s["protocols"][protocol]["score"] for s in report["samples"]] == expected_scores(protocol)
        # Each protocol asked the judge its own way.
        assert report["protocols"]["apple"]["judge"] == {"sees_image": True, "temperature": None, "max_tokens": 2000}
        assert report["protocols"]["lmms-eval"]["judge"] == {"sees_image": False, "temperature": 0.0, "max_tokens": 1024}
        # The headline protocol's block is the top-level numbers.
        headline = report["protocols"]["evalscope"]
        assert (headline["total_score"], headline["ci"], headline["by_type"]) == (report["total_score"], report["ci"], report["by_type"])
        assert [s["score"] for s in report["samples"]] == [s["protocols"]["evalscope"]["score"] for s in report["samples"]]
        assert report["samples"][1]["protocols"]["apple"]["judge_reply"] == TEXT_REPLIES[1]

        # JUnit: one JSON property with every protocol's score.
        junit = junit_scores(bench.pytester.path / "junit.xml")
        for sample in report["samples"]:
            assert junit[sample["nodeid"].rsplit("::", 1)[-1]] == {p: sample["protocols"][p]["score"] for p in ALL}

        # Terminal: one line per protocol after the headline.
        result.stdout.fnmatch_lines(
            [f"total_score: {EXPECTED['evalscope'][3]:.4f}*(protocol evalscope,*"]
            + [f"  protocol {protocol} * total_score {EXPECTED[protocol][3]:.4f}*" for protocol in ALL]
        )

        # HTML: a comparison table and a protocol switch for the sample table.
        page = Page(html.read_text(encoding="utf-8"))
        assert [a["data-protocol"] for a in page.find("tr") if "data-protocol" in a] == list(ALL)
        assert [a["value"] for a in page.find("option") if a.get("value") in ALL] == list(ALL)
        assert page.find("select", id="f-protocol")
        # Without JavaScript the headline's verdicts show; the others wait for the switch.
        for protocol in ALL:
            shown = [a for a in page.find("div", data_protocol=protocol)]
            assert len(shown) == 6 * 3  # score, status and judge reply of each sample
            assert all(("hidden" in a) is (protocol != "evalscope") for a in shown)
        views.append(per_protocol_view(report))
    assert views[0] == views[1]


def test_each_protocol_total_equals_a_single_protocol_run_on_the_same_answers(bench: Bench, rows: list[dict[str, Any]]) -> None:
    judge = Judge(rows)
    bench.server.script = judge
    bench.run("--mia-protocol=all", "--mia-model-revision=r1").assert_outcomes(passed=6)
    together = bench.report()
    for protocol in ALL:
        bench.server.requests.clear()
        # The same cached answers, judged again under this protocol alone.
        bench.run("--mia-rejudge", f"--mia-protocol={protocol}", "--mia-model-revision=r1").assert_outcomes(passed=6)
        assert model_calls(bench) == 0
        assert judge_calls(bench, judge) == [(protocol, position) for position in range(6)]
        alone = bench.report()
        assert list(alone["protocols"]) == [protocol]
        block = together["protocols"][protocol]
        assert block["total_score"] == alone["total_score"], protocol
        assert (block["by_type"], block["by_component_type"], block["protocol_metrics"], block["ci"]) == (
            alone["by_type"], alone["by_component_type"], alone["protocol_metrics"], alone["ci"]
        )
        assert [s["protocols"][protocol] for s in together["samples"]] == [s["protocols"][protocol] for s in alone["samples"]]
        assert [s["response"] for s in together["samples"]] == [s["response"] for s in alone["samples"]]


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]], ids=["single", "xdist"])
def test_rejudge_with_all_protocols_after_a_single_protocol_run_makes_no_model_call(
    bench: Bench, rows: list[dict[str, Any]], xdist: list[str]
) -> None:
    judge = Judge(rows)
    bench.server.script = judge
    bench.run(*xdist).assert_outcomes(passed=6)  # an ordinary run: evalscope, no revision
    assert model_calls(bench) == 6
    bench.server.requests.clear()
    result = bench.run("--mia-rejudge", "--mia-protocol=all", *xdist)
    result.assert_outcomes(passed=6)
    assert model_calls(bench) == 0
    # Every protocol asks again, evalscope too: a rejudge never reads a verdict from the cache.
    assert judge_calls(bench, judge) == sorted((protocol, position) for protocol in ALL for position in range(6))
    report = bench.report()
    assert report["usage"]["model"]["api_calls"] == 0 and report["usage"]["model"]["cache_hits"] == 6
    assert {p: b["total_score"] for p, b in report["protocols"].items()} == {p: pytest.approx(EXPECTED[p][3], abs=1e-12) for p in ALL}


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]], ids=["single", "xdist"])
def test_a_judge_failure_in_one_protocol_fails_the_item_naming_it_and_keeps_the_others(
    bench: Bench, rows: list[dict[str, Any]], xdist: list[str]
) -> None:
    # lmms-eval's call fails for sample 1, the headline's (evalscope) for sample 4.
    judge = Judge(rows, broken={("lmms-eval", 1), ("evalscope", 4)})
    bench.server.script = judge
    result = bench.run("--mia-protocol=evalscope,lmms-eval,apple", "-p", "no:cacheprovider", "--junitxml=junit.xml", *xdist)
    result.assert_outcomes(passed=4, failed=2)
    assert result.ret == 1
    # One line each (in the order the items ran: pytest-randomly may shuffle them).
    result.stdout.fnmatch_lines(["*sample 0001 *: row 1: judge failed under protocol lmms-eval (2 other protocols judged it): lmms-eval: judge call*HTTP 400*"])
    result.stdout.fnmatch_lines(["*sample 0004 *: row 4: judge failed under protocol evalscope (2 other protocols judged it): evalscope: judge call*HTTP 400*"])
    assert model_calls(bench) == 6
    report = bench.report()
    assert report["passed"] is False
    one, four = report["samples"][1], report["samples"][4]
    # The failed protocol's verdict is missing; the others' are kept.
    assert one["protocols"]["lmms-eval"]["status"] == "failed" and "HTTP 400" in one["protocols"]["lmms-eval"]["reason"]
    assert (one["protocols"]["evalscope"]["status"], one["protocols"]["apple"]["status"]) == (EXPECTED["evalscope"][1][1], EXPECTED["apple"][1][1])
    assert one["protocols"]["evalscope"]["score"] == pytest.approx(EXPECTED["evalscope"][2][1])
    assert (one["status"], one["score"]) == ("scored", pytest.approx(EXPECTED["evalscope"][2][1]))  # the headline's verdict
    assert four["status"] == "failed" and four["score"] is None
    assert four["protocols"]["lmms-eval"]["score"] == pytest.approx(EXPECTED["lmms-eval"][2][4])
    assert four["protocols"]["apple"]["score"] == pytest.approx(EXPECTED["apple"][2][4])
    counts = {p: b["counts"]["failed"] for p, b in report["protocols"].items()}
    assert counts == {"evalscope": 1, "lmms-eval": 1, "apple": 0}
    # Each protocol's number is over its own verdicts.
    lmms = [s for i, s in enumerate(EXPECTED["lmms-eval"][2]) if i != 1]
    assert report["protocols"]["lmms-eval"]["total_score"] == pytest.approx(sum(lmms) / len(lmms), abs=1e-12)
    assert report["protocols"]["apple"]["total_score"] == pytest.approx(EXPECTED["apple"][3], abs=1e-12)
    junit = junit_scores(bench.pytester.path / "junit.xml")
    assert junit["0001"]["lmms-eval"] is None and junit["0004"]["evalscope"] is None
    assert junit["0004"]["apple"] == pytest.approx(EXPECTED["apple"][2][4])


def test_protocol_lists_all_and_their_errors(bench: Bench) -> None:
    result = bench.run("--mia-protocol=apple,all,apple", "--collect-only")
    result.stdout.fnmatch_lines(["mia-bench: *protocol=apple,evalscope,evalscope-json,lmms-eval,vlmevalkit"])
    bench.pytester.makeini("[pytest]\nmia_protocol = lmms-eval, vlmevalkit\n")
    bench.run("--collect-only").stdout.fnmatch_lines(["mia-bench: *protocol=lmms-eval,vlmevalkit"])
    result = bench.run("--mia-protocol=apple,nope,evalscope,bogus")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--mia-protocol on the command line: unknown protocols 'nope', 'bogus'; choose one of apple, evalscope, evalscope-json, lmms-eval, vlmevalkit*"]
    )
    result = bench.run("--mia-protocol=,")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mia-protocol on the command line: expected a protocol name*"])


def test_a_baseline_is_compared_per_protocol_and_gated_on_the_headline(bench: Bench, rows: list[dict[str, Any]]) -> None:
    # Scores in [0, 1] only: apple keeps "11/10" as 1.1, and such a report is no baseline.
    judge = Judge(rows, text_replies=[reply.replace("11/10", "10/10") for reply in TEXT_REPLIES])
    bench.server.script = judge
    bench.run("--mia-protocol=evalscope,apple", "--mia-model-revision=r1").assert_outcomes(passed=6)
    baseline = bench.pytester.path / "baseline.json"
    bench.report_path.rename(baseline)
    before = json.loads(baseline.read_text(encoding="utf-8"))["protocols"]
    # The same answers, judged under apple, lmms-eval and evalscope; lmms-eval is not in the baseline.
    result = bench.run(
        "--mia-rejudge", "--mia-protocol=apple,lmms-eval,evalscope", "--mia-model-revision=r1", f"--mia-baseline={baseline}", "--mia-max-drop=0.05"
    )
    result.assert_outcomes(passed=7)  # the samples and the gate that holds
    assert result.ret == 0
    report = bench.report()
    # The gate reads the headline (apple), taken from the baseline's protocols block.
    assert report["protocol"]["name"] == "apple"
    assert before["apple"]["total_score"] != before["evalscope"]["total_score"]
    assert report["baseline"]["total_score"] == pytest.approx(before["apple"]["total_score"], abs=1e-12)
    assert report["baseline"]["gate_verdict"] == "pass" and report["baseline"]["n_paired"] == 3
    blocks = report["protocols"]
    assert blocks["apple"]["baseline"]["delta"] == pytest.approx(0.0, abs=1e-12)
    assert blocks["evalscope"]["baseline"]["total_score"] == pytest.approx(before["evalscope"]["total_score"], abs=1e-12)
    assert blocks["evalscope"]["baseline"]["n_paired"] == 6
    assert blocks["lmms-eval"]["baseline"] is None
    result.stdout.fnmatch_lines(["  protocol evalscope * baseline *-> delta +0.0000"])
    # A baseline that never judged under this run's headline is refused.
    refused = bench.run("--mia-rejudge", "--mia-protocol=lmms-eval,apple", "--mia-model-revision=r1", f"--mia-baseline={baseline}")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*made with protocol 'evalscope' (and 'apple'), this run uses 'lmms-eval'*"])


def test_the_html_report_escapes_protocol_names_and_every_protocols_judge_reply() -> None:
    from pytest_miabench.reporting.html import render_html

    evil = '"><script>alert(1)</script>'
    names = ["evalscope", evil]
    block = {"total_score": 0.5, "ci": {"total_score": [0.4, 0.6]}, "n_counted": 1, "counts": {"scored": 1}, "judge": {}, "baseline": None}
    report = {
        "total_score": 0.5,
        "protocol": {"name": "evalscope"},
        "protocols": {name: block for name in names},
        "samples": [
            {
                "index": 0,
                "nodeid": "mia-bench::0000",
                "type": "basic",
                "status": "scored",
                "score": 0.5,
                "components": [],
                "protocols": {
                    "evalscope": {"score": 0.5, "status": "scored", "components": [], "judge_reply": "fine", "reason": ""},
                    evil: {"score": None, "status": "dropped", "components": [], "judge_reply": f"<img src=x onerror=alert(2)>{evil}", "reason": evil},
                },
            }
        ],
    }
    text = render_html(report)
    assert "<script>alert" not in text and "<img src=x" not in text
    page = Page(text)
    assert [a["data-protocol"] for a in page.find("tr") if "data-protocol" in a] == names
    assert [a["value"] for a in page.find("option") if a.get("value") in names] == names
    # The hostile protocol's reply is there, as text, hidden until the switch shows it.
    assert f"<img src=x onerror=alert(2)>{evil}" in page.text
    assert all("hidden" in a for a in page.find("div", data_protocol=evil))
