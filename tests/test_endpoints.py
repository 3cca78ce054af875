"""Real endpoints: reasoning models as model and judge, thinking output,
reasoning tokens, fail-fast on a dead or refusing endpoint, header notes."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from support import data
from support.reasoning import strict_reasoning
from support.server import OpenAIServer, Reply, Request

from conftest import Bench

JSON_MARKER = "Reply with a single JSON object"
TEXT_VERDICT = "score of component 1: 4/4, score of component 2: 3/3, total score: 7/10."


def any_protocol_judge(model_reply: Reply) -> Any:
    """The model answers ``model_reply``; the judge answers in the format the
    prompt asks for (JSON for evalscope-json, text otherwise)."""

    def script(request: Request) -> Reply:
        if request.role == "model":
            return model_reply
        if JSON_MARKER in request.text:
            return Reply(json.dumps({"component_1": 1, "component_2": 1, "component_3": 1, "component_4": 1, "component_5": 1}))
        return Reply(TEXT_VERDICT)

    return script


@pytest.mark.parametrize("protocol", ["evalscope", "evalscope-json", "lmms-eval", "vlmevalkit", "apple"])
def test_reasoning_models_as_model_and_judge(pytester: pytest.Pytester, small_dataset: Path, protocol: str) -> None:
    inner = any_protocol_judge(Reply("An answer.", reasoning_tokens=5))
    with OpenAIServer(strict_reasoning(inner), judge_model="gpt-5-mini") as server:
        result = pytester.runpytest(
            "--mia-bench",
            "--mia-model=o4-mini",
            "--mia-max-tokens=512",
            "--mia-temperature=0.2",
            "--mia-judge-model=gpt-5-mini",
            f"--mia-base-url={server.url}",
            f"--mia-judge-base-url={server.url}",
            f"--mia-dataset={small_dataset}",
            f"--mia-protocol={protocol}",
            "--mia-reasoning-effort=low",
            "--mia-judge-reasoning-effort=minimal",
            "--mia-report=report.json",
        )
        result.assert_outcomes(passed=6)
        # Asked the accepted way from the first call: no 400 at all.
        for request in server.requests:
            assert "max_tokens" not in request.json and "temperature" not in request.json
        model_bodies = [r.json for r in server.by_role("model")]
        judge_bodies = [r.json for r in server.by_role("judge")]
    assert {b["max_completion_tokens"] for b in model_bodies} == {512}
    assert {b["reasoning_effort"] for b in model_bodies} == {"low"}
    assert {b["reasoning_effort"] for b in judge_bodies} == {"minimal"}
    assert len(model_bodies) == len(judge_bodies) == 6
    report = json.loads((pytester.path / "report.json").read_text())
    assert report["n_scored"] + report["n_zero"] + report["n_dropped"] + report["n_excluded"] == 6
    deviations = report["model"]["sampling_deviations"]
    assert any("max_completion_tokens" in d for d in deviations) and any("temperature" in d for d in deviations)
    judge_deviations = report["judge"]["sampling_deviations"]
    assert any("max_completion_tokens" in d for d in judge_deviations)
    if protocol != "apple":  # apple leaves temperature to the API default: nothing to drop
        assert any("temperature" in d for d in judge_deviations)
    assert report["usage"]["model"]["reasoning_tokens"] == 6 * 5
    result.stdout.fnmatch_lines(["*sampling deviations*judge: max_tokens=*max_completion_tokens*"])


def test_an_unknown_reasoning_model_is_adapted_after_its_first_refusal(bench: Bench) -> None:
    """A host whose model name says nothing: the 400s themselves teach the caller."""
    bench.server.script = strict_reasoning(any_protocol_judge(Reply("An answer.")), is_reasoning=lambda name: name == "vlm")
    result = bench.run("--mia-max-tokens=64", "--mia-temperature=0.5", "--mia-concurrency=1")
    result.assert_outcomes(passed=6)
    model = bench.server.by_role("model")
    refused = [r for r in model if "max_tokens" in r.json or "temperature" in r.json]
    # One refusal per parameter, then every call is sent the accepted way.
    assert len(refused) == 2 and len(model) == 6 + 2
    assert model[-1].json["max_completion_tokens"] == 64 and "temperature" not in model[-1].json
    deviations = bench.report()["model"]["sampling_deviations"]
    assert any("refused" in d for d in deviations)


@pytest.mark.parametrize("protocol, judge_sees_think", [("evalscope", False), ("evalscope-json", False), ("lmms-eval", True)])
def test_thinking_in_the_answer_is_kept_and_stripped_as_the_protocol_does(
    bench: Bench, protocol: str, judge_sees_think: bool
) -> None:
    answer = "<think>plan the caption</think>\n  A dog runs.  "
    bench.server.script = any_protocol_judge(Reply(answer))
    bench.run(f"--mia-protocol={protocol}").assert_outcomes(passed=6)
    for request in bench.server.by_role("judge"):
        assert ("<think>" in request.text) is judge_sees_think
        assert "A dog runs." in request.text
    samples = bench.report()["samples"]
    assert {s["reasoning"] for s in samples} == {"plan the caption"}
    assert {s["response"] for s in samples} == {answer}


@pytest.mark.parametrize("protocol", ["evalscope", "evalscope-json"])
def test_an_answer_without_a_think_block_reaches_the_judge_untrimmed(bench: Bench, protocol: str) -> None:
    # evalscope strips the answer only when it cut a block out of it; an
    # unrecognised opener (an attribute evalscope does not know) stays.
    # (lmms-eval strips every answer in its prompt builder, on its own.)
    answer = '  <think foo="1">plan</think> A dog runs.\n'
    bench.server.script = any_protocol_judge(Reply(answer))
    bench.run(f"--mia-protocol={protocol}").assert_outcomes(passed=6)
    for request in bench.server.by_role("judge"):
        assert answer in request.text


def test_reasoning_content_is_kept_in_the_report(bench: Bench) -> None:
    bench.server.script = any_protocol_judge(Reply("A dog runs.", message_extra={"reasoning_content": "look at the dog"}))
    bench.run().assert_outcomes(passed=6)
    assert {s["reasoning"] for s in bench.report()["samples"]} == {"look at the dog"}
    assert all("look at the dog" not in r.text for r in bench.server.by_role("judge"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]]) -> Path:
    """All 400 rows with tiny images."""
    images = [data.image_bytes("jpeg", 16, 12, seed=i) for i in range(len(rows))]
    return data.write_parquet(tmp_path_factory.mktemp("big") / "all.parquet", rows, images)


@pytest.mark.parametrize("mode", ["single", "xdist"])
def test_a_closed_port_stops_the_run_at_once(pytester: pytest.Pytester, big_dataset: Path, mode: str) -> None:
    port = _closed_port()
    args = [
        "--mia-bench",
        "--mia-model=vlm",
        "--mia-judge-model=judge",
        f"--mia-base-url=http://127.0.0.1:{port}/v1",
        f"--mia-judge-base-url=http://127.0.0.1:{port}/v1",
        f"--mia-dataset={big_dataset}",
        "--mia-report=report.json",
    ]
    if mode == "xdist":
        args += ["-n", "2"]
    result = pytester.runpytest_subprocess(*args)  # a real process: xdist and exit codes as a user sees them
    assert result.ret == pytest.ExitCode.INTERRUPTED
    message = f"model endpoint 127.0.0.1:{port} (vlm) is unusable: connection refused on each of the first 3 attempts"
    result.stdout.fnmatch_lines([f"*{message}*"])
    report = json.loads((pytester.path / "report.json").read_text())
    # The rest is listed as not run, not failed one by one for minutes.
    assert report["n_missing"] >= 400 - 2 * 8 - 2 and report["complete"] is False
    assert report["n_failed"] <= 2 * 8 + 2


@pytest.mark.parametrize("status", [401, 403, 404])
def test_every_call_refused_the_same_way_stops_the_run(bench: Bench, status: int) -> None:
    bench.server.script = lambda request: Reply("no", status=status)
    result = bench.run("--mia-concurrency=1")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"*model endpoint 127.0.0.1:* (vlm) is unusable: HTTP {status} on each of the first 3 attempts*"])
    assert len(bench.server.requests) == 3
    assert bench.report()["n_missing"] == 3


def test_one_success_means_later_failures_are_per_sample(bench: Bench) -> None:
    calls = []

    def script(request: Request) -> Reply:
        calls.append(request.role)
        if request.role == "model" and len([c for c in calls if c == "model"]) > 1:
            return Reply("gone", status=404)
        return Reply(TEXT_VERDICT if request.role == "judge" else "An answer.")

    bench.server.script = script
    result = bench.run("--mia-concurrency=1")
    result.assert_outcomes(passed=1, failed=5)
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize("url, problem", [("not a url", "is not an http(s) URL"), ("ftp://example.com/v1", "is not an http(s) URL"), ("http:///v1", "has no host")])
def test_a_malformed_base_url_is_a_usage_error(bench: Bench, url: str, problem: str) -> None:
    result = bench.pytester.runpytest("--mia-bench", "--mia-model=vlm", f"--mia-base-url={url}", f"--mia-dataset={bench.dataset}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--mia-base-url on the command line: *{problem}*"])
    assert bench.server.requests == []


def test_the_header_says_where_each_role_goes_and_with_which_key(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-header-canary-0123456789")
    monkeypatch.setenv("MODEL_KEY", "sk-model-canary-0123456789")
    result = bench.pytester.runpytest(
        "--mia-bench", "--mia-model=vlm", f"--mia-base-url={bench.server.url}", "--mia-api-key-env=MODEL_KEY",
        f"--mia-dataset={bench.dataset}", "--collect-only",
    )
    result.stdout.fnmatch_lines(
        [
            f"mia-bench: model: {bench.server.url}, key from $MODEL_KEY",
            "mia-bench: judge: https://api.openai.com/v1 (default), key from $OPENAI_API_KEY",
        ]
    )
    result = bench.pytester.runpytest(
        "--mia-bench", "--mia-model=vlm", f"--mia-base-url={bench.server.url}", f"--mia-judge-base-url={bench.server.url}",
        f"--mia-dataset={bench.dataset}", "--collect-only",
    )
    result.stdout.fnmatch_lines([f"mia-bench: judge: {bench.server.url}, no key sent ($OPENAI_API_KEY goes only to api.openai.com*"])
    assert "canary" not in result.stdout.str() + result.stderr.str()


def test_a_400_from_a_proxy_says_the_key_was_withheld(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proxy-canary-0123456789")
    bench.server.script = lambda request: Reply("No connected db.", status=400)
    result = bench.run("--mia-concurrency=1", "--maxfail=1")
    result.stdout.fnmatch_lines(["*HTTP 400: No connected db. (no key sent: $OPENAI_API_KEY goes only to api.openai.com*"])


@pytest.fixture(scope="module")
def hundred(tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]]) -> Path:
    images = [data.image_bytes("jpeg", 16, 12, seed=i) for i in range(100)]
    return data.write_parquet(tmp_path_factory.mktemp("hundred") / "hundred.parquet", rows[:100], images)


@pytest.mark.parametrize("headers_mode", ["full", "reset-requests-only"])
def test_a_rate_limited_endpoint_scores_every_sample_without_a_storm(
    pytester: pytest.Pytester, hundred: Path, headers_mode: str
) -> None:
    from support.ratelimited import limited

    answer = any_protocol_judge(Reply("An answer."))

    def slow(request: Request) -> Reply:
        # A model takes time to answer (a 429 does not): the in-flight bound then sets the rate.
        reply = answer(request)
        reply.delay = 0.2
        return reply

    script = limited(20, slow, headers_mode)  # type: ignore[arg-type]
    with OpenAIServer(script, judge_model="judge") as server:
        result = pytester.runpytest(
            "--mia-bench", "--mia-model=vlm", "--mia-judge-model=judge", f"--mia-base-url={server.url}",
            f"--mia-judge-base-url={server.url}", f"--mia-dataset={hundred}", "--mia-concurrency=64",
            "--mia-report=report.json", "--mia-no-cache",
        )
    result.assert_outcomes(passed=100)
    assert script.succeeded == 200
    # The window starts at the 64 asked for: the first bursts find the limit
    # (halving four times), then the window adapts instead of storming.
    assert script.rate_limited < 2 * 64, script.rate_limited
    usage = json.loads((pytester.path / "report.json").read_text())["usage"]
    assert usage["rate_limited"] == script.rate_limited
    assert usage["concurrency_reached"] is not None and usage["concurrency_reached"] < 64
    result.stdout.fnmatch_lines([f"rate limits: {script.rate_limited} HTTP 429 replies; concurrency went down to *"])


def test_rpm_caps_the_request_rate(bench: Bench) -> None:
    bench.server.script = any_protocol_judge(Reply("An answer."))
    bench.run("--mia-rpm=600", "--mia-no-cache").assert_outcomes(passed=6)
    starts = sorted(r.started for r in bench.server.requests)
    # 600 per minute: the 12th start is booked 1.1 s after the first.  At the
    # server the spread shrinks by however late the first request arrived
    # (connection set-up, a loaded machine), so only half is required: an
    # uncapped run spreads its 12 starts over a few milliseconds.
    assert len(starts) == 12 and starts[-1] - starts[0] >= 11 * 0.1 * 0.5, starts
