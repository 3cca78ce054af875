"""GitHub Actions sees the verdict: with ``GITHUB_STEP_SUMMARY`` set the run
appends a Markdown job summary; with ``GITHUB_ACTIONS=true`` it prints an
``::error`` annotation for a failed gate and a ``::notice`` for one that
holds.  Only the controller writes, once; without the variables nothing is
written.  Text from the run is escaped for Markdown and workflow commands."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from support.scripted import make_baseline, per_sample

from conftest import SMALL_ROWS, Bench
from pytest_miabench.reporting.github import annotation, md

CANARY_KEY = "sk-canary-github-0123456789abcdef"
PREVIOUS = "## an earlier step's summary\n\n"
# A baseline path is text of the user's (or of whoever named the artifact):
# a table pipe, an HTML tag, a Markdown link and image.
HOSTILE_NAME = "base|<img src=x>[l](y)!.json"


@pytest.fixture
def on_github(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    summary = tmp_path / "step-summary.md"
    summary.write_text(PREVIOUS, encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("OPENAI_API_KEY", CANARY_KEY)
    return summary


def annotations(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("::")]


def test_a_failed_gate_is_summarised_and_annotated_as_an_error(bench: Bench, rows: list[dict[str, Any]], on_github: Path) -> None:
    baseline = make_baseline(bench, rows, SMALL_ROWS, [8, 8, 8, 8, 8, 8], name=HOSTILE_NAME)
    on_github.write_text(PREVIOUS, encoding="utf-8")  # what the baseline's run appended is not under test
    per_sample(bench, rows, SMALL_ROWS, [8, 2, 8, 2, 1, 2])
    result = bench.run("-p", "no:cacheprovider", f"--mia-baseline={baseline}", "--mia-max-drop=0.02", "--mia-threshold=0.9")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    report = bench.report()
    # One annotation, both failing gates in it, escaped as a workflow command (% and newlines).
    (line,) = annotations(result.stdout.str())
    gate_lines = [text for text in result.stdout.lines if text.startswith("FAIL: ")]
    assert len(gate_lines) == 2
    expected = "%0A".join(text.replace("%", "%25") for text in gate_lines)
    assert line == f"::error title=MIA-Bench gate failed::{expected}"
    assert "95%25 CI" in line
    # Appended after what an earlier step wrote; written once.
    text = on_github.read_text(encoding="utf-8")
    assert text.startswith(PREVIOUS) and text.count("## MIA-Bench: FAIL") == 1
    body = text[len(PREVIOUS) :]
    total, (lo, hi) = report["total_score"], report["ci"]["total_score"]
    assert f"**total_score {total:.4f}** (95% CI [{lo:.4f}, {hi:.4f}]; protocol evalscope" in body
    assert "**Verdict: FAIL**" in body
    for gate_line in gate_lines:
        assert f"- {md(gate_line)}\n" in body
    # The per-type table: this run, its CI, the baseline and the change.
    change = report["baseline"]["by_type"]
    for name, score in report["by_type"].items():
        ci = report["ci"]["by_type"][name]
        before = report["baseline"]["baseline_by_type"][name]
        assert f"| {name} | {score:.4f} | [{ci[0]:.4f}, {ci[1]:.4f}] | {before:.4f} | {change[name]:+.4f} |" in body
    assert "| component type | score | 95% CI | baseline | change |" in body
    # The comparison and the samples that regressed most, worst first.
    block = report["baseline"]
    assert f"mean change {block['mean_diff']:+.4f}, 95% CI [{block['diff_ci'][0]:+.4f}, {block['diff_ci'][1]:+.4f}]" in body
    assert "verdict **regression**" in body
    regressed = re.findall(r"^\| mia-bench\\:\\:(\d+) \| \w+ \| 0\.8000 \| (0\.\d+) \| (-0\.\d+) \|$", body, re.M)
    assert regressed == [("0004", "0.1000", "-0.7000"), ("0001", "0.2000", "-0.6000"), ("0003", "0.2000", "-0.6000"), ("0005", "0.2000", "-0.6000")]
    # The hostile path is text: no tag, link, image or extra table cell.
    assert md(str(baseline)) in body and "<img" not in body and "](y)" not in body and "|<" not in body
    assert CANARY_KEY not in text and CANARY_KEY not in result.stdout.str()


def test_a_passing_gate_under_xdist_is_a_notice_written_once_by_the_controller(bench: Bench, rows: list[dict[str, Any]], on_github: Path) -> None:
    per_sample(bench, rows, SMALL_ROWS, [8, 8, 9, 8, 8, 9])
    result = bench.run("-p", "no:cacheprovider", "--mia-threshold=0.5", "-n", "2", subprocess=True)
    assert result.ret == 0
    (line,) = annotations(result.stdout.str())
    total = bench.report()["total_score"]
    assert line == f"::notice title=MIA-Bench gate passed::PASS: total_score {total:.4f} meets the threshold 0.5"
    text = on_github.read_text(encoding="utf-8")
    assert text.startswith(PREVIOUS) and text.count("## MIA-Bench") == 1
    assert "## MIA-Bench: PASS" in text and "**Verdict: PASS**" in text and "### Against the baseline" not in text
    assert f"- {md(line.split('::')[-1])}\n" in text


def test_the_summary_alone_prints_no_annotation(bench: Bench, rows: list[dict[str, Any]], on_github: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS")
    per_sample(bench, rows, SMALL_ROWS, [8] * 6)
    result = bench.run("-p", "no:cacheprovider")
    assert result.ret == 0 and annotations(result.stdout.str()) == []
    text = on_github.read_text(encoding="utf-8")
    assert "## MIA-Bench: NO GATE" in text and "- no gate set (--mia-threshold, --mia-max-drop)" in text


def test_annotations_alone_write_no_file(bench: Bench, rows: list[dict[str, Any]], on_github: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    per_sample(bench, rows, SMALL_ROWS, [8] * 6)
    before = sorted(p.name for p in bench.pytester.path.iterdir())
    result = bench.run("-p", "no:cacheprovider")
    assert result.ret == 0
    assert annotations(result.stdout.str()) == ["::notice title=MIA-Bench::total_score 0.8000 (95%25 CI [0.8000, 0.8000]); no gate set"]
    assert on_github.read_text(encoding="utf-8") == PREVIOUS
    assert sorted(p.name for p in bench.pytester.path.iterdir()) == sorted({*before, "report.json"})  # only the report asked for


def test_off_github_nothing_is_written(bench: Bench, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    per_sample(bench, rows, SMALL_ROWS, [8] * 6)
    result = bench.run("-p", "no:cacheprovider", "--mia-threshold=0.9")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert annotations(result.stdout.str()) == []
    assert not list(tmp_path.rglob("*.md"))


def test_workflow_command_and_markdown_escaping() -> None:
    assert annotation("error", "a: b, c", "100% sure\r\nnext") == "::error title=a%3A b%2C c::100%25 sure%0D%0Anext"
    assert md("a|b <script>x</script>\n[l](http://e) ![i](y) @team `c` *e* _u_") == (
        "a\\|b &lt;script&gt;x&lt;/script&gt; \\[l\\]\\(http\\://e\\) \\!\\[i\\]\\(y\\) \\@team \\`c\\` \\*e\\* \\_u\\_"
    )
    # At the start of a line: no list, heading or block quote.
    assert [md(text) for text in ("- x", "1. x", "# x", "> x")] == ["\\- x", "1\\. x", "\\# x", "&gt; x"]
