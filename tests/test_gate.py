"""The release gate: only comparable baselines, partial runs marked as such,
paired statistics per sample, and the non-inferiority --mia-max-drop rule."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from support import scripted
from support.server import Reply

from conftest import SMALL_ROWS, Bench

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def per_sample(bench: Bench, rows: list[dict[str, Any]], scores: Sequence[int], answer: str = "answer") -> None:
    """Judge sample ``i`` of the small dataset ``scores[i]``/10 (support.scripted)."""
    scripted.per_sample(bench, rows, SMALL_ROWS, scores, answer)


def make_baseline(bench: Bench, rows: list[dict[str, Any]], scores: Sequence[int], *extra: str, answer: str = "answer") -> Path:
    return scripted.make_baseline(bench, rows, SMALL_ROWS, scores, *extra, answer=answer)


# -- comparable baselines only ---------------------------------------------------


@pytest.mark.parametrize("xdist", [False, True], ids=["single", "xdist"])
def test_a_baseline_of_other_samples_is_refused_before_any_call(bench: Bench, rows: list[dict[str, Any]], xdist: bool) -> None:
    baseline = make_baseline(bench, rows, [8] * 6, "--mia-limit=3")
    bench.server.requests.clear()
    result = bench.run("-p", "no:cacheprovider", f"--mia-baseline={baseline}", "--mia-max-drop=0.1", *(["-n", "2"] if xdist else []))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--mia-baseline: *baseline.json: the sample sets differ: 3 samples only in this run (index 3, 4, 5); *--mia-baseline-common*"]
    )
    assert bench.server.requests == []
    assert not bench.report_path.exists()  # a refused run writes no report to mistake for a result


def test_the_explicit_option_compares_on_the_common_samples_and_says_partial(bench: Bench, rows: list[dict[str, Any]]) -> None:
    baseline = make_baseline(bench, rows, [8] * 6, "--mia-limit=3")
    per_sample(bench, rows, [8] * 6)
    result = bench.run("-p", "no:cacheprovider", f"--mia-baseline={baseline}", "--mia-baseline-common", "--mia-max-drop=0.1")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "*partial comparison (--mia-baseline-common): on the 3 common samples only; the sample sets differ: 3 samples only in this run (index 3, 4, 5)",
            "*paired over n_paired=3 samples: mean change +0.0000*",
            "PASS: baseline verdict pass: change (candidate - baseline) +0.0000, 95% CI [[]+0.0000, +0.0000[]], n_paired=3; a drop above 0.1 is ruled out; rule: *",
        ]
    )
    block = bench.report()["baseline"]
    assert block["partial"] is True and block["refused"] is None and block["n_paired"] == 3 and block["n_common"] == 3
    assert block["differences"]["n_only_run"] == 3 and block["differences"]["examples"]["only_run"] == [3, 4, 5]


def test_another_instruction_text_or_image_is_a_different_sample(bench: Bench, rows: list[dict[str, Any]]) -> None:
    baseline = make_baseline(bench, rows, [8] * 6)
    data = json.loads(baseline.read_text())
    assert all(len(s["image"]["sha256"]) == 64 for s in data["samples"])
    # Another instruction is known before any call: refused up front.
    edited = json.loads(baseline.read_text())
    edited["samples"][2]["instruction"] += " (edited)"
    baseline.write_text(json.dumps(edited))
    bench.server.requests.clear()
    result = bench.run("-p", "no:cacheprovider", f"--mia-baseline={baseline}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR and bench.server.requests == []
    result.stderr.fnmatch_lines(["*the sample sets differ: 1 sample with another instruction text (index 2); *"])
    # Another image is known once the image is read: the gate refuses after the run.
    edited = json.loads(json.dumps(data))
    edited["samples"][4]["image"]["sha256"] = "0" * 64
    baseline.write_text(json.dumps(edited))
    result = bench.run("-p", "no:cacheprovider", f"--mia-baseline={baseline}", "--mia-max-drop=0.5")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*REFUSED for gating: the sample sets differ: 1 sample with another image (index 4); *", "FAIL: baseline verdict refused: not comparable with this run: the sample sets differ: 1 sample with another image (index 4); *"])
    block = bench.report()["baseline"]
    assert block["gate_verdict"] == "refused" and block["gate_failed"] is True and bench.report()["passed"] is False
    # ... and with the explicit option that sample is left out of the pairs.
    result = bench.run("-p", "no:cacheprovider", f"--mia-baseline={baseline}", "--mia-max-drop=0.5", "--mia-baseline-common")
    assert result.ret == 0
    block = bench.report()["baseline"]
    assert (block["partial"], block["n_common"], block["n_paired"], block["gate_verdict"]) == (True, 5, 5, "pass")
    # A report of an older version has no image hashes: images are not compared, the rest is.
    for sample in data["samples"]:
        del sample["image"]["sha256"]
    baseline.write_text(json.dumps(data))
    assert bench.run("-p", "no:cacheprovider", f"--mia-baseline={baseline}", "--mia-max-drop=0.5").ret == 0
    assert bench.report()["baseline"]["n_paired"] == 6


# -- partial runs ------------------------------------------------------------------


def _selection(report: dict[str, Any]) -> tuple[Any, ...]:
    return report["complete"], report["partial"], report["selection"]


def test_selected_runs_are_partial_in_one_process_and_under_xdist(bench: Bench) -> None:
    assert bench.run().ret == 0
    assert _selection(bench.report()) == (True, False, {"rows": 6, "limit": None, "selected": 6, "deselected": 0, "filters": []})
    seen = []
    for extra in ([], ["-n", "2"]):
        result = bench.run("-k", "intermediate", *extra)
        result.assert_outcomes(passed=3)
        result.stdout.fnmatch_lines(["partial run: 3 of 6 rows selected (-k intermediate); the report says complete: false, partial: true"])
        seen.append(_selection(bench.report()))
    assert seen[0] == seen[1] == (False, True, {"rows": 6, "limit": None, "selected": 3, "deselected": 3, "filters": ["-k intermediate"]})
    bench.run("--mia-limit=4", "--deselect", "mia-bench::0001").assert_outcomes(passed=3)
    assert _selection(bench.report()) == (
        False,
        True,
        {"rows": 6, "limit": 4, "selected": 3, "deselected": 1, "filters": ["--deselect mia-bench::0001"]},
    )


def test_a_last_failed_run_is_partial(bench: Bench, rows: list[dict[str, Any]]) -> None:
    broken = rows[SMALL_ROWS[1]]["instruction"]
    bench.server.script = lambda r: Reply(status=400) if broken in r.text else Reply("total score: 8/10" if r.role == "judge" else "an answer")
    bench.run().assert_outcomes(passed=5, failed=1)
    bench.server.script = lambda r: Reply("total score: 8/10" if r.role == "judge" else "an answer")
    result = bench.run("--lf")
    result.assert_outcomes(passed=1)
    report = bench.report()
    assert (report["complete"], report["partial"], report["selection"]["selected"], report["selection"]["filters"]) == (False, True, 1, ["--lf"])


# -- paired statistics and the gate --------------------------------------------------


def test_paired_statistics_match_a_hand_computed_case(bench: Bench, rows: list[dict[str, Any]]) -> None:
    baseline = make_baseline(bench, rows, [8, 8, 8, 8, 8, 8])
    per_sample(bench, rows, [7, 8, 6, 8, 9, 5])
    result = bench.run("-p", "no:cacheprovider", f"--mia-baseline={baseline}")
    assert result.ret == 0
    block = bench.report()["baseline"]
    # Differences (run - baseline): -0.1, 0, -0.2, 0, +0.1, -0.3.
    diffs = [-0.1, 0.0, -0.2, 0.0, 0.1, -0.3]
    mean = -0.5 / 6
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 5)
    assert block["n_paired"] == 6
    assert block["mean_diff"] == pytest.approx(mean)
    assert block["sd_diff"] == pytest.approx(sd)
    # Sign flips of the nonzero magnitudes 0.1, 0.2, 0.1, 0.3 (16 patterns):
    # |sum| >= 0.5 for all-equal signs (0.7) and for either 0.1 flipped (0.5),
    # each both ways: 6 of 16.
    assert block["p_value"] == pytest.approx(6 / 16)
    assert block["p_value_test"].startswith("two-sided paired sign-flip permutation test, exact")
    # MDE = (z_0.975 + z_0.80) * sd / sqrt(n)
    assert block["mde"] == pytest.approx((1.959964 + 0.841621) * sd / math.sqrt(6), rel=1e-5)
    low, high = block["diff_ci"]
    assert -0.3 <= low < mean < high <= 0.1
    result.stdout.fnmatch_lines([f"*paired over n_paired=6 samples: mean change {mean:+.4f}  95% CI [[]{low:+.4f}, {high:+.4f}[]]  p=0.375*"])
    # Seeded: the same seed gives the same interval, another seed another one.
    bench.run("-p", "no:cacheprovider", f"--mia-baseline={baseline}")
    assert bench.report()["baseline"]["diff_ci"] == [low, high]
    bench.run("-p", "no:cacheprovider", f"--mia-baseline={baseline}", "--mia-seed=7")
    assert bench.report()["baseline"]["diff_ci"] != [low, high]


def test_the_gate_fails_a_worse_model_and_passes_an_identical_one(bench: Bench, rows: list[dict[str, Any]]) -> None:
    scores = [8, 7, 9, 8, 6, 8]
    baseline = make_baseline(bench, rows, scores)
    per_sample(bench, rows, scores)
    same = bench.run("-p", "no:cacheprovider", f"--mia-baseline={baseline}", "--mia-max-drop=0.02")
    assert same.ret == 0
    same.stdout.fnmatch_lines(
        [
            "PASS: baseline verdict pass: change (candidate - baseline) +0.0000, 95% CI [[]+0.0000, +0.0000[]], n_paired=6; "
            "a drop above 0.02 is ruled out; rule: pass when the lower bound of the 95% CI of the change is >= -0.02; *"
        ]
    )
    assert bench.report()["baseline"]["gate_verdict"] == "pass" and bench.report()["passed"] is True
    per_sample(bench, rows, [s - 4 for s in scores])
    worse = bench.run("-p", "no:cacheprovider", f"--mia-baseline={baseline}", "--mia-max-drop=0.02")
    assert worse.ret == pytest.ExitCode.TESTS_FAILED
    worse.stdout.fnmatch_lines(["FAIL: baseline verdict regression: change (candidate - baseline) -0.4000, *; the whole CI is below -0.02; rule: *"])
    assert bench.report()["baseline"]["gate_verdict"] == "regression"


def test_noise_wider_than_the_allowed_drop_fails_as_inconclusive(bench: Bench, rows: list[dict[str, Any]]) -> None:
    """The mean did not move, but six noisy pairs cannot rule out a drop of
    0.05: a bare difference of means would pass this run."""
    baseline = make_baseline(bench, rows, [8, 8, 8, 8, 8, 8])
    per_sample(bench, rows, [10, 6, 9, 7, 8, 8])
    result = bench.run("-p", "no:cacheprovider", f"--mia-baseline={baseline}", "--mia-max-drop=0.05")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    block = bench.report()["baseline"]
    assert block["mean_diff"] == pytest.approx(0.0) and block["delta"] == pytest.approx(0.0)
    assert block["gate_verdict"] == "inconclusive" and -block["diff_ci"][0] > 0.05
    result.stdout.fnmatch_lines(
        [
            "FAIL: baseline verdict inconclusive: change (candidate - baseline) +0.0000, 95% CI [[]-0.*, +0.*[]], n_paired=6; "
            "the CI reaches below -0.05: a drop above 0.05 cannot be ruled out (this run detects drops of * and more); rule: *"
        ]
    )


def test_threshold_on_the_lower_bound(bench: Bench, rows: list[dict[str, Any]]) -> None:
    per_sample(bench, rows, [10, 4, 9, 5, 8, 6])  # mean 0.7, the CI's lower bound well below
    on_mean = bench.run("-p", "no:cacheprovider", "--mia-threshold=0.6")
    assert on_mean.ret == 0
    low = bench.report()["ci"]["total_score"][0]
    assert low < 0.6
    on_lower = bench.run("-p", "no:cacheprovider", "--mia-threshold=0.6", "--mia-threshold-on=lower")
    assert on_lower.ret == pytest.ExitCode.TESTS_FAILED
    on_lower.stdout.fnmatch_lines([f"FAIL: the lower bound of total_score's 95% CI {low:.4f} is below the threshold 0.6"])
    assert bench.report()["threshold_on"] == "lower"
    bad = bench.run("--mia-threshold-on=median")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--mia-threshold-on on the command line: expected mean or lower, got 'median'*"])


class _Cells(HTMLParser):
    """Text of each cell of the table with id ``baseline-changed``, by row, and every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._in_table = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self._in_table = dict(attrs).get("id") == "baseline-changed"
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag == "td":
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False

    def handle_data(self, data: str) -> None:
        if self._in_table and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data


def test_html_shows_changed_answers_side_by_side_escaped(bench: Bench, rows: list[dict[str, Any]]) -> None:
    baseline = make_baseline(bench, rows, [8, 8, 8, 8, 8, 8], answer="before " + HOSTILE)
    per_sample(bench, rows, [8, 5, 8, 9, 2, 8], answer="after " + HOSTILE)
    html = bench.pytester.path / "report.html"
    assert bench.run("-p", "no:cacheprovider", f"--mia-baseline={baseline}", f"--mia-html={html}").ret == 0
    page = _Cells()
    page.feed(html.read_text(encoding="utf-8"))
    table = [row for row in page.rows if row]
    # Only changed samples, biggest drops first: 4 (-0.6), 1 (-0.3), 3 (+0.1).
    assert [row[0] for row in table] == ["4", "1", "3"]
    assert [row[3] for row in table] == ["-0.6000", "-0.3000", "+0.1000"]
    assert table[0][4:6] == ["before " + HOSTILE + " 8", "after " + HOSTILE + " 2"]
    # ... and both judge replies beside them (change = this run - baseline).
    assert table[0][6:] == ["total score: 8/10", "total score: 2/10"]
    assert not any(name.startswith("on") for _, attrs in page.tags for name in attrs)
    assert sum(tag == "script" for tag, _ in page.tags) == 1  # the page's own


# -- only a real run's numbers make a baseline (issue 22, items 14 and 15) -------------


def test_a_baseline_made_by_the_mock_is_refused_before_any_call(bench: Bench) -> None:
    common = ("--mia-bench", f"--mia-dataset={bench.dataset}", f"--mia-report={bench.report_path}", "--mia-limit=2", "-p", "no:cacheprovider")
    for mocked, roles in (
        (["--mia-model=mock", "--mia-judge-model=mock"], "model and the judge"),
        (["--mia-model=vlm", f"--mia-base-url={bench.server.url}", "--mia-judge-model=mock"], "judge"),
    ):
        assert bench.pytester.runpytest(*common, *mocked).ret == 0
        baseline = bench.pytester.path / "mock-baseline.json"
        bench.report_path.replace(baseline)
        bench.server.requests.clear()
        result = bench.run("--mia-limit=2", "-p", "no:cacheprovider", f"--mia-baseline={baseline}", "--mia-max-drop=0.05")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*--mia-baseline: *mock-baseline.json: the {roles} of that run * the built-in mock (its scores are random); its numbers compare with nothing"])
        assert bench.server.requests == [] and not bench.report_path.exists()


def test_a_demo_report_is_refused_as_a_baseline(pytester: pytest.Pytester) -> None:
    demo = ("--mia-bench", "--mia-demo", "--mia-limit=2", "-p", "no:cacheprovider")
    assert pytester.runpytest(*demo, "--mia-report=demo.json").ret == 0
    result = pytester.runpytest(*demo, "--mia-baseline=demo.json", "--mia-max-drop=0.05")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mia-baseline: demo.json: made by --mia-demo (the built-in mock model and judge: its scores are random); its numbers compare with nothing"])


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("total_score", float("-inf"), "*base.json: total_score is -inf, not a score in [[]0, 1[]]*"),
        ("total_score", -1e300, "*base.json: total_score is -1e+300, not a score in [[]0, 1[]]*"),
        ("sample", float("-inf"), "*base.json: sample 1: score is -inf, not a score in [[]0, 1[]]*"),
        ("sample", float("nan"), "*base.json: sample 1: score is nan, not a score in [[]0, 1[]]*"),
        ("sample", 1.5, "*base.json: sample 1: score is 1.5, not a score in [[]0, 1[]]*"),
        ("by_type", float("inf"), "*base.json: by_type.* is inf, not a score in [[]0, 1[]]*"),
        ("protocol", -1e300, "*base.json: sample 1: protocols.apple.score is -1e+300, not a score in [[]0, 1[]]*"),
    ],
)
def test_a_baseline_with_a_score_outside_0_1_is_refused_before_any_call(bench: Bench, where: str, value: float, message: str) -> None:
    assert bench.run("--mia-limit=2", "--mia-protocol=evalscope,apple").ret == 0
    data = bench.report()
    if where == "total_score":
        data["total_score"] = value
    elif where == "sample":
        data["samples"][1]["score"] = value
    elif where == "by_type":
        data["by_type"][next(iter(data["by_type"]))] = value
    else:
        data["samples"][1]["protocols"]["apple"]["score"] = value
    # json writes -Infinity and NaN, as a hand-edited or foreign report may hold them.
    (bench.pytester.path / "base.json").write_text(json.dumps(data))
    bench.server.requests.clear()
    result = bench.run("--mia-limit=2", "--mia-protocol=evalscope,apple", "--mia-baseline=base.json", "--mia-max-drop=0.05", "--mia-no-cache")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert bench.server.requests == []
