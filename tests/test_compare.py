"""``pytest-miabench compare BASELINE.json CANDIDATE.json``: the plugin's
paired gate on two existing reports.  The reports come from real plugin runs
against the loopback server; the command runs as a real process and prints
the verdict the run printed for the same pair, writes the same HTML
comparison, and exits 0 (gate holds), 1 (gate fails) or 2 (unusable input)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.scripted import make_baseline, per_sample
from test_html import text_inside

from conftest import SMALL_ROWS, Bench

SCORES = [8, 7, 9, 8, 6, 8]


def compare(cwd: Path, *args: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    if script:
        found = Path(sys.executable).parent / "pytest-miabench"
        command = [str(found) if found.exists() else str(shutil.which("pytest-miabench"))]
    else:
        command = [sys.executable, "-m", "pytest_miabench"]
    return subprocess.run([*command, "compare", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def verdict_lines(output: str) -> list[str]:
    """The baseline block and its verdict, as the plugin and the command print them."""
    lines = output.splitlines()
    # The summary's block (the gate outcome's failure text, printed earlier, is the verdict alone).
    start = next(i for i, line in enumerate(lines) if line.startswith("baseline ") and ": total_score " in line)
    return [line for line in lines[start:] if line.startswith(("baseline ", "  ", "PASS: baseline verdict", "FAIL: ")) and "threshold" not in line]


@pytest.mark.parametrize(("candidate", "code", "verdict"), [(SCORES, 0, "pass"), ([s - 4 for s in SCORES], 1, "regression")], ids=["holds", "fails"])
def test_the_same_verdict_and_page_as_the_run(bench: Bench, rows: list[dict[str, Any]], candidate: list[int], code: int, verdict: str) -> None:
    baseline = make_baseline(bench, rows, SMALL_ROWS, SCORES)
    per_sample(bench, rows, SMALL_ROWS, candidate)
    html = bench.pytester.path / "run.html"
    run = bench.run("-p", "no:cacheprovider", f"--mia-baseline={baseline}", "--mia-max-drop=0.02", f"--mia-html={html}")
    assert run.ret == code
    assert bench.report()["baseline"]["gate_verdict"] == verdict
    page = bench.pytester.path / "compare.html"
    result = compare(bench.pytester.path, str(baseline), str(bench.report_path), "--max-drop", "0.02", "--html", str(page))
    assert result.returncode == code, result.stderr
    assert result.stderr == ""
    printed = verdict_lines(result.stdout)
    assert len(printed) >= 4 and any(line.startswith("  paired over n_paired=6 samples") for line in printed)
    assert printed == verdict_lines(run.stdout.str())
    assert printed[-1].startswith("PASS: baseline verdict pass: change" if code == 0 else "FAIL: baseline verdict regression: change (candidate - baseline) -0.4000")
    # The HTML comparison is the run's own, text for text.
    assert text_inside(page.read_text(encoding="utf-8"), "baseline") == text_inside(html.read_text(encoding="utf-8"), "baseline")


def test_without_a_gate_it_compares_and_exits_0_and_the_console_script_is_installed(bench: Bench, rows: list[dict[str, Any]]) -> None:
    baseline = make_baseline(bench, rows, SMALL_ROWS, SCORES)
    per_sample(bench, rows, SMALL_ROWS, [s - 4 for s in SCORES])
    assert bench.run("-p", "no:cacheprovider").ret == 0
    result = compare(bench.pytester.path, str(baseline), str(bench.report_path), script=True)
    assert result.returncode == 0, result.stderr
    assert "paired over n_paired=6 samples: mean change -0.4000" in result.stdout
    assert not any(line.startswith(("PASS", "FAIL")) for line in result.stdout.splitlines())


def _edited(path: Path, target: Path, **changes: Any) -> Path:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    target.write_text(json.dumps(data), encoding="utf-8")
    return target


def test_unusable_input_exits_2_with_one_line(bench: Bench, rows: list[dict[str, Any]]) -> None:
    baseline = make_baseline(bench, rows, SMALL_ROWS, SCORES)
    subset = make_baseline(bench, rows, SMALL_ROWS, SCORES, "--mia-limit=3", name="subset.json")
    candidate = make_baseline(bench, rows, SMALL_ROWS, SCORES, name="candidate.json")
    here = bench.pytester.path
    (here / "notes.txt").write_text("not json", encoding="utf-8")
    (here / "other.json").write_text('{"results": []}', encoding="utf-8")
    block = json.loads(candidate.read_text(encoding="utf-8"))["protocol"]
    cases = {
        "missing": (str(here / "absent.json"), str(candidate), "absent.json: cannot read"),
        "not JSON": (str(here / "notes.txt"), str(candidate), "notes.txt: not a JSON report"),
        "not a report": (str(baseline), str(here / "other.json"), "other.json: not a pytest-miabench JSON report"),
        "schema": (str(_edited(baseline, here / "v9.json", schema_version=9)), str(candidate), "schema_version 9, this version reads 1"),
        "protocol": (
            str(_edited(baseline, here / "apple.json", protocol={**block, "name": "apple"}, protocols={})),
            str(candidate),
            "made with protocol 'apple', this run uses 'evalscope'",
        ),
        "dataset": (
            str(_edited(baseline, here / "data.json", dataset={"source": "elsewhere", "split": "test", "fingerprint": "x"})),
            str(candidate),
            "made on dataset 'elsewhere' split 'test'",
        ),
        "demo": (str(_edited(baseline, here / "demo.json", demo=True)), str(candidate), "made by --mia-demo"),
        "mock": (str(baseline), str(_edited(candidate, here / "mock.json", mock_roles=["judge"])), "the judge of that run was the built-in mock"),
        "samples": (str(subset), str(candidate), "the sample sets differ: 3 samples only in this run (index 3, 4, 5)"),
    }
    for name, (before, after, message) in cases.items():
        result = compare(here, before, after, "--max-drop", "0.02")
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        assert result.stdout == "", name
        (line,) = result.stderr.splitlines()
        assert line.startswith("pytest-miabench compare: error: ") and message in line, (name, line)
    # ... the shared samples are compared when asked, as --mia-baseline-common does.
    assert compare(here, str(subset), str(candidate), "--max-drop", "0.02", "--common").returncode == 0
    # A bad --max-drop, and an --html path that cannot be written, before anything is read.
    assert compare(here, str(baseline), str(candidate), "--max-drop", "nan").returncode == 2
    (here / "file").write_text("", encoding="utf-8")
    result = compare(here, str(baseline), str(candidate), "--html", str(here / "file" / "page.html"))
    assert result.returncode == 2 and "--html: " in result.stderr and not (here / "file" / "page.html").exists()
