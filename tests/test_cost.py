"""Cost known before the run (--mia-estimate) and bounded during it
(--mia-budget-tokens, --mia-budget-usd), against the loopback server, which
reports usage on every reply."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from support.server import Reply, Request

from conftest import Bench
from pytest_miabench.run.estimate import image_tokens

# Every reply reports this usage: a call costs CALL_TOKENS tokens.
USAGE = (100, 10)
CALL_TOKENS = sum(USAGE)
SAMPLES = 6


def _script(request: Request) -> Reply:
    if request.role == "judge":
        return Reply("score of component 1: 4/4, score of component 2: 3/3, total score: 7/10.", usage=USAGE)
    return Reply(f"Answer to: {request.text[:80]}", usage=USAGE)


@pytest.fixture
def priced(bench: Bench) -> Bench:
    bench.server.script = _script
    return bench


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The estimate's rows by "model" or "judge [protocol]"."""
    return {row["role"] + (f" [{row['protocol']}]" if row["protocol"] else ""): row for row in report["estimate"]["calls"]}


# -- the estimate -----------------------------------------------------------


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_an_estimate_calls_nothing_and_counts_every_multiplier(priced: Bench, xdist: tuple[str, ...]) -> None:
    result = priced.run(*xdist, "-p", "no:randomly", "--mia-estimate", "--mia-protocol=evalscope,apple", "--mia-judge-repeats=3", "--mia-price=vlm=1/2,judge=3/4")
    assert result.ret == 0
    result.assert_outcomes(skipped=SAMPLES)
    assert priced.server.requests == []  # not even the model or judge endpoint saw a request
    rows = _rows(priced.report())
    assert {name: row["calls"] for name, row in rows.items()} == {
        "model": SAMPLES,
        "judge [evalscope]": SAMPLES * 3,  # x repeats
        "judge [apple]": SAMPLES * 3,  # x protocols
    }
    assert all(row["cache_hits"] == 0 and row["input_tokens"] > 0 for row in rows.values())
    # The judge's max tokens are each protocol's: the high end of the cost range exists for it...
    assert rows["judge [evalscope]"]["output_tokens_max"] == SAMPLES * 3 * 4096
    # ...and not for a model without --mia-max-tokens.
    estimate = priced.report()["estimate"]
    assert rows["model"]["output_tokens_max"] is None and estimate["cost"]["high"] is None and estimate["cost"]["low"] > 0
    result.stdout.fnmatch_lines(["ESTIMATE (--mia-estimate): no API call was made; 6 samples*", "*judge ?apple?: 18 calls*", "estimated cost: $*"])
    assert "mia-bench::gate" not in result.stdout.str()


def test_the_estimate_is_the_same_with_and_without_xdist(priced: Bench) -> None:
    args = ("-p", "no:randomly", "--mia-estimate", "--mia-protocol=all", "--mia-max-tokens=64", "--mia-price=vlm=1/2,judge=3/4")
    priced.run(*args).assert_outcomes(skipped=SAMPLES)
    alone = priced.report()["estimate"]
    priced.run("-n", "2", *args).assert_outcomes(skipped=SAMPLES)
    assert priced.report()["estimate"] == alone
    assert alone["cost"]["high"] > alone["cost"]["low"] > 0
    assert priced.server.requests == []


def test_the_estimate_counts_what_the_cache_already_holds(priced: Bench) -> None:
    priced.run("-p", "no:randomly", "--mia-model-revision=r1").assert_outcomes(passed=SAMPLES)
    paid = len(priced.server.requests)
    assert paid == 2 * SAMPLES

    for xdist in ((), ("-n", "2")):
        priced.run(*xdist, "-p", "no:randomly", "--mia-estimate", "--mia-model-revision=r1", "--mia-judge-repeats=2", "--mia-protocol=evalscope,apple")
        rows = _rows(priced.report())
        assert (rows["model"]["cache_hits"], rows["model"]["paid_calls"], rows["model"]["input_tokens"]) == (SAMPLES, 0, 0)
        # No --mia-max-tokens leaves the model's output unbounded, but nothing of it is paid.
        assert rows["model"]["output_tokens_max"] == 0
        # The first verdict of each answer is cached; the second repeat and the other protocol are not.
        assert (rows["judge [evalscope]"]["calls"], rows["judge [evalscope]"]["cache_hits"]) == (2 * SAMPLES, SAMPLES)
        assert (rows["judge [apple]"]["calls"], rows["judge [apple]"]["cache_hits"]) == (2 * SAMPLES, 0)

    # Another revision's answers are not this run's: nothing is cached for it.
    priced.run("-p", "no:randomly", "--mia-estimate", "--mia-model-revision=r2")
    assert {row["cache_hits"] for row in priced.report()["estimate"]["calls"]} == {0}
    # And the estimates themselves asked nothing.
    assert len(priced.server.requests) == paid


def test_an_estimate_begins_no_run_in_the_journal(priced: Bench) -> None:
    """Without a revision, answers are reused only to resume an unfinished
    run: an estimate must neither begin one nor close one."""
    priced.run("-p", "no:randomly", "--mia-limit=2", "--mia-concurrency=1", "--mia-budget-tokens=1").assert_outcomes(failed=2)
    before = _journal(priced.pytester.path)
    priced.run("-p", "no:randomly", "--mia-estimate", "--mia-limit=2")
    assert _journal(priced.pytester.path) == before
    assert _rows(priced.report())["model"]["cache_hits"] == 1  # the unfinished run's answer would be reused


def _journal(root: Path) -> list[tuple[Any, ...]]:
    [database] = root.glob(".pytest_cache/**/responses.sqlite3")
    with sqlite3.connect(database) as db:
        return db.execute("SELECT lineage, run, open FROM mia_runs ORDER BY lineage").fetchall()


def test_image_tokens_follow_openais_published_examples() -> None:
    assert image_tokens(1024, 1024, None) == 765  # "a 1024 x 1024 square image in detail: high mode costs 765 tokens"
    assert image_tokens(2048, 4096, "high") == 1105  # "a 2048 x 4096 image in detail: high mode costs 1105 tokens"
    assert image_tokens(4096, 8192, "low") == 85  # "a 4096 x 8192 image in detail: low most costs 85 tokens"


# -- the budget ---------------------------------------------------------------


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_a_budget_stops_the_run_part_way_keeps_every_answer_and_a_rerun_pays_only_the_rest(priced: Bench, xdist: tuple[str, ...]) -> None:
    budget = 4 * CALL_TOKENS - 1
    first = priced.run(*xdist, "-p", "no:randomly", "--mia-concurrency=1", f"--mia-budget-tokens={budget}")
    assert first.ret == 1
    requests = list(priced.server.requests)
    report = priced.report()
    # What the endpoints reported is what the report counts, and no more than
    # the budget plus the calls that may be in flight at once: one per
    # process with --mia-concurrency=1 (a worker's spend reaches the others
    # once its reply is in, so the other worker's call may start meanwhile).
    in_flight = 2 if xdist else 1
    assert report["budget"]["spent_tokens"] == CALL_TOKENS * len(requests)
    assert CALL_TOKENS * len(requests) <= budget + CALL_TOKENS * in_flight
    assert report["budget"]["stopped"].startswith("budget spent:")
    assert report["passed"] is False and report["n_missing"] >= 1 and len(report["samples"]) < SAMPLES
    first.stdout.fnmatch_lines(["budget: * of 439 tokens spent*", "STOPPED: budget spent: *not run*", "FAIL: budget: budget spent*"])
    # Every answer received is in the report.
    answered = {f"Answer to: {r.text[:80]}" for r in requests if r.role == "model"}
    assert answered and answered <= {s["response"] for s in report["samples"]}
    judged = sum(1 for r in requests if r.role == "judge")

    # ... and in the cache: a rerun with a larger budget asks only for what is missing.
    priced.server.requests.clear()
    second = priced.run(*xdist, "-p", "no:randomly", "--mia-concurrency=1", "--mia-budget-tokens=100000")
    assert second.ret == 0
    second.assert_outcomes(passed=SAMPLES + 1)  # and the gate: within the budget
    rerun = priced.server.requests
    assert sum(1 for r in rerun if r.role == "model") == SAMPLES - len(answered)
    assert sum(1 for r in rerun if r.role == "judge") == SAMPLES - judged
    assert not answered & {f"Answer to: {r.text[:80]}" for r in rerun if r.role == "model"}
    assert priced.report()["budget"]["stopped"] is None


def test_a_dollar_budget_counts_at_the_given_prices(priced: Bench) -> None:
    # $1 per thousand tokens either way: a call costs $0.11.
    result = priced.run("-p", "no:randomly", "--mia-concurrency=1", "--mia-price=vlm=1000/1000,judge=1000/1000", "--mia-budget-usd=0.3")
    assert result.ret == 1
    budget = priced.report()["budget"]
    assert budget["spent_usd"] == pytest.approx(CALL_TOKENS * len(priced.server.requests) / 1000)
    assert "--mia-budget-usd" in budget["stopped"] and len(priced.server.requests) == 3


def test_a_dollar_budget_needs_prices(priced: Bench) -> None:
    result = priced.run("--mia-budget-usd=1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mia-budget-usd on the command line: needs --mia-price*"])
    result = priced.run("--mia-budget-usd=1", "--mia-price=other=1/1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mia-price names neither the model (vlm) nor the judge (judge)*"])
    assert priced.server.requests == []


def test_the_html_and_the_github_summary_show_spend_against_the_budget(priced: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = priced.pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    html = priced.pytester.path / "report.html"
    assert priced.run("-p", "no:randomly", "--mia-concurrency=1", "--mia-budget-tokens=200", f"--mia-html={html}").ret == 1
    page = html.read_text(encoding="utf-8")
    assert 'id="budget"' in page and "of 200 tokens spent" in page and "stopped by the budget: budget spent" in page
    text = summary.read_text(encoding="utf-8")
    assert "### Spend against the budget" in text and "| tokens | 200 |" in text and "**Stopped by the budget**" in text


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_calls_in_flight_when_the_budget_is_spent_finish_and_are_kept(priced: Bench, xdist: tuple[str, ...]) -> None:
    """The first answer spends the budget while the answers called ahead are
    still on their way: they are waited for, reported and cached, not cancelled."""
    lock = threading.Lock()
    seen: list[str] = []

    def script(request: Request) -> Reply:
        reply = _script(request)
        if request.role == "model":
            with lock:
                seen.append(request.text)
                first = len(seen) == 1
            reply.delay = 0.0 if first else 1.0
        return reply

    priced.server.script = script
    result = priced.run(*xdist, "-p", "no:randomly", f"--mia-budget-tokens={CALL_TOKENS - 10}")
    assert result.ret == 1
    model_calls = [r for r in priced.server.requests if r.role == "model"]
    assert len(model_calls) > 1 and priced.server.broken_writes == 0  # several in flight, none hung up on
    responses = {s["response"] for s in priced.report()["samples"]}
    assert {f"Answer to: {r.text[:80]}" for r in model_calls} <= responses

    priced.server.requests.clear()
    priced.server.script = _script
    priced.run(*xdist, "-p", "no:randomly").assert_outcomes(passed=SAMPLES)
    assert sum(1 for r in priced.server.requests if r.role == "model") == SAMPLES - len(model_calls)
