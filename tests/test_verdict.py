"""CI sees the verdict: ``pytest --help`` works, a gate is a test outcome
(terminal, JUnit, pytest-html, with and without xdist), one sign convention
for the baseline verdict, and stray ``--mia-*`` options are pointed out."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from support.server import Reply

from conftest import Bench
from pytest_miabench.config.options import OPTIONS

# -- pytest --help -------------------------------------------------------------------


def test_help_renders_every_option_and_ini_key(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == 0, result.stderr.str()
    text = result.stdout.str()
    for option in OPTIONS:
        assert option.flag in text
        assert re.search(rf"^\s*{option.dest} \(string\)", text, re.MULTILINE), option.dest
        if option.negative:
            assert option.negative in text
    # A literal percent sign reads as one, in the option's help and the ini key's.
    flat = " ".join(text.split())
    assert "lower bound of its 95% CI)" in flat and "95%% CI" not in flat


# -- the gate as a test outcome ----------------------------------------------------------

XDIST = pytest.mark.parametrize("xdist", [False, True], ids=["single", "xdist"])


def _scores(bench: Bench, judge: str = "total score: 8/10") -> None:
    bench.server.script = lambda r: Reply(judge if r.role == "judge" else "an answer")


def _junit(bench: Bench, *extra: str, xdist: bool) -> tuple[pytest.RunResult, ET.Element]:
    path = bench.pytester.path / "junit.xml"
    result = bench.run("-p", "no:cacheprovider", f"--junitxml={path}", *extra, *(["-n", "2"] if xdist else []))
    return result, ET.parse(path).getroot().find("testsuite")  # type: ignore[return-value]


def _properties(suite: ET.Element) -> dict[str, Any]:
    return {p.get("name"): json.loads(p.get("value") or "") for p in suite.findall("properties/property")}


def _gate_cases(suite: ET.Element) -> list[ET.Element]:
    return [case for case in suite.iter("testcase") if (case.get("classname"), case.get("name")) == ("mia-bench", "gate")]


@XDIST
def test_a_failed_gate_is_a_failed_test_in_the_terminal_and_junit(bench: Bench, xdist: bool) -> None:
    _scores(bench)
    result, suite = _junit(bench, "--mia-threshold=0.99", xdist=xdist)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=6, failed=1)
    assert re.search(r"=+ 1 failed, 6 passed in ", result.stdout.lines[-1])
    result.stdout.fnmatch_lines(["FAILED mia-bench::gate - total_score 0.8000 is below the threshold 0.99"])
    assert (suite.get("failures"), suite.get("tests")) == ("1", "7")
    (gate,) = _gate_cases(suite)  # reported once, by the controller under xdist
    failure = gate.find("failure")
    assert failure is not None and failure.get("message") == "total_score 0.8000 is below the threshold 0.99"
    properties = _properties(suite)
    assert properties["mia_total_score"] == pytest.approx(0.8) == bench.report()["total_score"]
    assert properties["mia_total_score_ci"] == bench.report()["ci"]["total_score"]
    assert (properties["mia_verdict"], properties["mia_verdict_reason"]) == ("fail", "total_score 0.8000 is below the threshold 0.99")


@XDIST
def test_a_gate_that_holds_is_a_passed_test_and_no_gate_is_none(bench: Bench, xdist: bool) -> None:
    _scores(bench)
    result, suite = _junit(bench, "--mia-threshold=0.5", xdist=xdist)
    assert result.ret == 0
    result.assert_outcomes(passed=7)
    (gate,) = _gate_cases(suite)
    assert gate.find("failure") is None and suite.get("failures") == "0"
    assert _properties(suite)["mia_verdict"] == "pass"
    result, suite = _junit(bench, xdist=xdist)
    result.assert_outcomes(passed=6)
    assert _gate_cases(suite) == [] and _properties(suite)["mia_verdict"] == "none"


def test_pytest_html_shows_the_failed_gate(bench: Bench) -> None:
    _scores(bench)
    result = bench.run("-p", "no:cacheprovider", "--mia-threshold=0.99", "--html=page.html")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    page = (bench.pytester.path / "page.html").read_text(encoding="utf-8")
    # pytest-html keeps its rows as JSON in an attribute: one failed row, the gate's, with its reason.
    blob = json.loads(re.search(r'data-jsonblob="([^"]*)"', page).group(1).replace("&#34;", '"').replace("&quot;", '"').replace("&amp;", "&"))  # type: ignore[union-attr]
    rows = [row for rows in blob["tests"].values() for row in rows]
    failed = [row for row in rows if row["result"].lower() == "failed"]
    assert [row["testId"] for row in failed] == ["mia-bench::gate"]
    assert "total_score 0.8000 is below the threshold 0.99" in failed[0]["log"]


@XDIST
def test_a_baseline_regression_is_a_failed_test_with_the_verdict_and_the_rule(bench: Bench, xdist: bool) -> None:
    _scores(bench)
    assert bench.run("-p", "no:cacheprovider").ret == 0
    baseline = bench.pytester.path / "baseline.json"
    bench.report_path.replace(baseline)
    _scores(bench, "total score: 4/10")
    result, suite = _junit(bench, f"--mia-baseline={baseline}", "--mia-max-drop=0.05", xdist=xdist)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=6, failed=1)
    # One sign convention: change = candidate - baseline, negative for a drop, everywhere.
    line = (
        "baseline verdict regression: change (candidate - baseline) -0.4000, 95% CI [[]-0.4000, -0.4000[]], n_paired=6; "
        "the whole CI is below -0.05; rule: pass when the lower bound of the 95% CI of the change is >= -0.05; "
        "regression when its upper bound is < -0.05; otherwise inconclusive (fails)"
    )
    result.stdout.fnmatch_lines(["*paired over n_paired=6 samples: mean change -0.4000  95% CI [[]-0.4000, -0.4000[]]*", f"FAIL: {line}"])
    result.stdout.fnmatch_lines(["FAILED mia-bench::gate - baseline verdict regression: change (candidate - ba*"])
    (gate,) = _gate_cases(suite)
    assert gate.find("failure").get("message", "").startswith("baseline verdict regression: change (candidate - baseline) -0.4000")  # type: ignore[union-attr]
    assert _properties(suite)["mia_baseline_verdict"] == "regression"


# -- a total or a sample score outside [0, 1] (issue 22, item 16) ---------------------------------


@XDIST
def test_a_gate_on_scores_outside_0_1_fails_and_keeps_the_number(bench: Bench, xdist: bool) -> None:
    # The apple parser does not clamp, as its reference: 10^12/10 is a score of 10^11.
    _scores(bench, f"score of component 1: 1/1, total score: {10**12}/10.")
    for gate in (["--mia-threshold=0.5"], ["--mia-threshold=0.5", "--mia-threshold-on=lower"]):
        result = bench.run("-p", "no:cacheprovider", "--mia-protocol=apple", *gate, *(["-n", "2"] if xdist else []))
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.assert_outcomes(passed=6, failed=1)
        result.stdout.fnmatch_lines(
            [
                "total_score: 1e+11*",
                "FAIL: total_score 1e+11 is outside [[]0, 1[]], 6 sample scores outside [[]0, 1[]] (sample 0 scored 1e+11, 1 scored 1e+11, "
                "2 scored 1e+11, 3 scored 1e+11, 4 scored 1e+11 and 1 more): the judge's scores are out of range, so no gate can hold",
            ]
        )
        report = bench.report()
        assert report["total_score"] == pytest.approx(1e11) and report["passed"] is False
    # One sample out of range fails the gate though the mean is in [0, 1].
    seen: list[int] = []

    def one_high(request: Any) -> Reply:
        if request.role != "judge":
            return Reply("an answer")
        seen.append(1)
        return Reply(f"score of component 1: 1/1, total score: {11 if len(seen) == 1 else 1}/10.")

    bench.server.script = one_high
    result = bench.run("-p", "no:cacheprovider", "--mia-protocol=apple", "--mia-threshold=0.1")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["FAIL: total_score 0.2667 is in [[]0, 1[]], 1 sample score outside [[]0, 1[]] (sample * scored 1.1): *"])
    # Without a gate the number is reported as it is, and nothing fails.
    assert bench.run("-p", "no:cacheprovider", "--mia-protocol=apple").ret == 0


# -- --mia-* without --mia-bench; counts after an early stop -------------------------------


@XDIST
def test_mia_options_without_mia_bench_are_pointed_out(pytester: pytest.Pytester, xdist: bool) -> None:
    pytester.makepyfile(test_own="def test_own():\n    pass\n")
    extra = ["-n", "2"] if xdist else []
    result = pytester.runpytest_subprocess("--mia-model=gpt-4o", "--mia-limit", "20", "-W", "always", *extra)
    assert result.ret == 0
    result.assert_outcomes(passed=1)  # the project's own test, and no sample
    text = result.stdout.str()
    assert text.count("--mia-limit, --mia-model given without --mia-bench") == 1  # once, not once per worker
    assert "add --mia-bench" in text
    # ini values stay silent: a project keeps its settings there.
    pytester.makeini("[pytest]\nmia_model = gpt-4o\n")
    assert "without --mia-bench" not in pytester.runpytest_subprocess("-W", "always", *extra).stdout.str()


@XDIST
def test_after_an_early_stop_the_summary_says_why_its_counts_differ_from_pytests(bench: Bench, xdist: bool) -> None:
    # A judge refusing every key trips the breaker: the run stops, and the
    # samples already called ahead have finished too (failed the same way).
    bench.server.script = lambda r: Reply("no", status=401) if r.role == "judge" else Reply("An answer.", delay=0.05)
    result = bench.run("-p", "no:cacheprovider", "--mia-max-retries=0", "--mia-concurrency=4", *(["-n", "2"] if xdist else []))
    assert result.ret != 0
    text = result.stdout.str()
    pytest_failed = int(re.search(r"(\d+) failed", text.splitlines()[-1]).group(1))  # type: ignore[union-attr]
    summary_failed = int(re.search(r"^samples: \d+ .* failed: (\d+)", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    report = bench.report()
    ahead = report["finished_ahead"]
    assert summary_failed == report["n_failed"]
    assert summary_failed - len(ahead) == pytest_failed
    if ahead:
        assert re.search(rf"^note: {len(ahead)} of these finished ahead of their turn before the run stopped", text, re.MULTILINE)
    # Every sample is accounted for: run by pytest, finished ahead, or not run.
    assert report["n_failed"] + report["n_scored"] + report["n_missing"] == 6
