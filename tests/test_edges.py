"""Edge cases found by using the tool as a user: keys and foreign hosts,
malformed successful replies, bad report paths and baselines, odd options."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from support.server import Reply, Request

from conftest import Bench

CANARY = "sk-canary-77a1c0ffee"


def test_the_default_openai_key_is_not_sent_to_another_host(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    bench.run("--mia-limit=1", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert {r.headers.get("authorization") for r in bench.server.requests} == {"Bearer EMPTY"}
    # naming the variable is consent
    bench.server.requests.clear()
    bench.run("--mia-limit=1", "-p", "no:cacheprovider", "--mia-api-key-env=OPENAI_API_KEY").assert_outcomes(passed=1)
    assert [r.headers.get("authorization") for r in bench.server.by_role("model")] == [f"Bearer {CANARY}"]
    assert [r.headers.get("authorization") for r in bench.server.by_role("judge")] == ["Bearer EMPTY"]


def test_a_401_says_why_no_key_was_sent(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    bench.server.script = lambda r: Reply("who are you", status=401)
    result = bench.run("--mia-limit=1", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*HTTP 401: who are you (no key sent: $OPENAI_API_KEY goes only to api.openai.com unless you name it with --mia-api-key-env)*"])


def test_a_key_echoed_in_a_successful_reply_is_scrubbed(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIA_KEY", CANARY)
    bench.server.script = lambda r: Reply(f"total score: 5/10 {r.headers.get('authorization')}") if r.role == "judge" else Reply(r.headers.get("authorization"))
    bench.run("--mia-limit=2", "--mia-api-key-env=MIA_KEY", "--mia-judge-api-key-env=MIA_KEY", "--mia-html=r.html", "--mia-cache-dir=c").assert_outcomes(passed=2)
    sample = bench.report()["samples"][0]
    assert sample["response"] == "Bearer ***" and sample["judge_reply"].endswith("Bearer ***")
    for path in bench.pytester.path.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    "body",
    [b'{"choices": "garbage"}', b'{"choices": [{}]}', b'{"error": {"message": "overloaded"}}', b"[1, 2]", b"not json at all", b'{"choices": [{"message": {"content": ["parts"]}}]}'],
)
def test_malformed_successful_replies_are_retried_and_never_cached(bench: Bench, body: bytes) -> None:
    bench.server.script = lambda r: Reply(raw_body=body) if r.role == "model" else Reply("total score: 5/10")
    result = bench.run("--mia-limit=1", "--mia-max-retries=1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*model call to * failed (after 2 attempts): malformed reply*"])
    bench.server.script = lambda r: Reply("total score: 5/10") if r.role == "judge" else Reply("fine")
    bench.server.requests.clear()
    bench.run("--mia-limit=1").assert_outcomes(passed=1)
    assert [r.role for r in bench.server.requests] == ["model", "judge"]


def test_a_plain_error_page_is_quoted(bench: Bench) -> None:
    bench.server.script = lambda r: Reply(raw_body=b"upstream said no", status=400)
    result = bench.run("--mia-limit=1", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*HTTP 400: upstream said no*"])


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        ({"total_score": "0.8"}, "*total_score is '0.8', not a number*"),
        ({"by_type": {"advanced": "x"}}, "*by_type.advanced is 'x', not a number*"),
        ({"samples": "oops"}, "*samples is 'oops', not a list*"),
        ({"samples": [{"index": "0", "score": 1}]}, "*samples.0.index is '0', not an integer*"),
    ],
)
def test_a_malformed_baseline_is_refused_before_any_call(bench: Bench, baseline: dict[str, Any], message: str) -> None:
    bench.run("--mia-limit=1").assert_outcomes(passed=1)
    good = bench.report()
    (bench.pytester.path / "base.json").write_text(json.dumps({**good, **baseline}))
    bench.server.requests.clear()
    result = bench.run("--mia-baseline=base.json", "--mia-limit=1", "--mia-no-cache")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert bench.server.requests == []


def test_baseline_of_the_same_rows_under_another_path_is_accepted(bench: Bench, tmp_path: Path) -> None:
    bench.run("--mia-limit=3").assert_outcomes(passed=3)
    baseline = bench.pytester.path / "base.json"
    bench.report_path.rename(baseline)
    moved = tmp_path / "moved"
    shutil.copytree(bench.dataset, moved)
    result = bench.pytester.runpytest(*bench.args(f"--mia-dataset={moved}", f"--mia-baseline={baseline}", "--mia-limit=3"))
    result.assert_outcomes(passed=3)
    block = bench.report()["baseline"]
    assert block["differences"] is None and block["n_paired"] == 3 and block["refused"] is None


def test_report_path_that_is_a_directory_is_a_usage_error(bench: Bench) -> None:
    (bench.pytester.path / "out").mkdir()
    result = bench.run("--mia-html=out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mia-html: out is a directory; give a file path*"])


def test_collect_only_leaves_an_existing_report_alone(bench: Bench) -> None:
    bench.run("--mia-limit=2").assert_outcomes(passed=2)
    before = bench.report_path.read_text()
    result = bench.run("--mia-limit=2", "--collect-only")
    assert result.ret == 0
    assert bench.report_path.read_text() == before
    assert "MIA-Bench" not in result.stdout.str()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mia-temperature=inf"], "*--mia-temperature on the command line: expected a finite number, got 'inf'*"),
        (["--mia-judge-temperature=1e400"], "*--mia-judge-temperature on the command line: expected a finite number*"),
        (["--mia-split=validation"], "*is a single file with no splits; --mia-split applies to hub ids and hub-layout directories*"),
    ],
)
def test_more_malformed_options(pytester: pytest.Pytester, rows: list[dict[str, Any]], tmp_path: Path, args: list[str], message: str) -> None:
    from support import data

    dataset = data.write_parquet(tmp_path / "one.parquet", rows[:1], [data.image_bytes("jpeg", 20, 20)])
    result = pytester.runpytest("--mia-bench", "--mia-model=vlm", f"--mia-dataset={dataset}", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_stray_ini_values_do_not_break_a_plain_run(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmia_limit = abc\nmia_max_drop = 0.1\nmia_protocol = nope\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nmia_bench = maybe\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*mia_bench in tox.ini: *maybe*"])


def test_a_separate_path_value_is_warned_about(bench: Bench) -> None:
    result = bench.pytester.runpytest("--mia-bench", "--mia-model=vlm", "--mia-dataset", str(bench.dataset), "--collect-only", "-q")
    result.stdout.fnmatch_lines([f"*write --mia-dataset={bench.dataset} (with '='): given as a separate argument*"])


def test_absurd_numbers_in_a_judge_reply_follow_the_policy(bench: Bench) -> None:
    bench.server.script = lambda r: Reply("total score: " + "9" * 400 + "/10") if r.role == "judge" else Reply("x")
    bench.run("--mia-limit=1", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    sample = bench.report()["samples"][0]
    assert (sample["status"], sample["score"]) == ("zero", 0.0)


def test_judge_spread_names_the_sample(bench: Bench) -> None:
    calls: dict[str, int] = {}

    def script(request: Request) -> Reply:
        if request.role == "model":
            if "Explain the activity" in request.text:  # sample 0 fails
                return Reply("no", status=400)
            return Reply("x")
        n = calls[request.text] = calls.get(request.text, 0) + 1
        wobble = 2 if "Describe the activities" in request.text else 0  # row 2: the dataset's sample 1
        return Reply(f"total score: {5 + (wobble if n % 2 else 0)}/10")

    bench.server.script = script
    bench.run("--mia-limit=4", "--mia-judge-repeats=2", "-p", "no:cacheprovider").assert_outcomes(passed=3, failed=1)
    spread = bench.report()["judge_spread"]
    assert spread["max_std_sample"] == 1  # not 0, its position among the judged samples


def test_bidi_controls_in_model_text_are_made_visible(bench: Bench) -> None:
    bench.server.script = lambda r: Reply("total score: 5/10") if r.role == "judge" else Reply("a \u202elive\u202c b")
    bench.run("--mia-limit=1", "--mia-html=r.html", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    page = (bench.pytester.path / "r.html").read_text(encoding="utf-8")
    assert "\u202e" not in page and "a &lt;U+202E&gt;live&lt;U+202C&gt; b" in page
