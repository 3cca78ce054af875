"""The Responses API (issue 24, item 2): --mia-api / --mia-judge-api responses
call ``responses.create`` on a loopback server that serves only that API,
with every part of the chat request carried over unchanged, and the retries,
the breaker, the sampling adaptation, the reply cap and the cache as for chat."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from support.reasoning import TEMPERATURE_ERROR
from support.scripted import per_sample
from support.server import OpenAIServer, Reply, Request

from conftest import SMALL_ROWS, Bench
from pytest_miabench.calls.replies import responses_input

SCORES = [3, 7, 10, 0, 5, 9]  # the judge's verdict per sample, out of 10
PROTOCOLS = ["evalscope", "evalscope-json", "lmms-eval", "vlmevalkit", "apple"]


@pytest.fixture
def responses_server(bench: Bench) -> Iterator[OpenAIServer]:
    """A second server, answering only POST /v1/responses, with the same script as ``bench.server``."""
    with OpenAIServer(lambda request: bench.server.script(request), judge_model="judge", responses_only=True) as server:
        yield server


def on(server: OpenAIServer, role: str) -> list[str]:
    """``--mia-api responses`` (or the judge's) with the role's calls going to ``server``."""
    if role == "model":
        return ["--mia-api=responses", f"--mia-base-url={server.url}"]
    return ["--mia-judge-api=responses", f"--mia-judge-base-url={server.url}"]


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
@pytest.mark.parametrize("role", ["model", "judge"])
def test_a_whole_run_through_the_responses_api(
    bench: Bench, responses_server: OpenAIServer, rows: list[dict[str, Any]], role: str, xdist: list[str]
) -> None:
    per_sample(bench, rows, SMALL_ROWS, SCORES)
    result = bench.run(*on(responses_server, role), "--mia-max-tokens=300", "--mia-judge-max-tokens=200", "-p", "no:cacheprovider", *xdist)
    result.assert_outcomes(passed=6)
    report = bench.report()
    assert [s["score"] for s in sorted(report["samples"], key=lambda s: s["index"])] == [pytest.approx(s / 10) for s in SCORES]
    assert report["total_score"] == pytest.approx(sum(SCORES) / 10 / 6)
    assert report[role]["api"] == "responses"
    assert report["judge" if role == "model" else "model"]["api"] == "chat"
    # Every call of the role went to /v1/responses, and only those.
    moved = responses_server.by_role(role)
    assert len(moved) == 6 and {r.path for r in moved} == {"/v1/responses"}
    assert bench.server.by_role(role) == [] and len(bench.server.requests) == 6
    limit = 300 if role == "model" else 200
    assert {r.json["max_output_tokens"] for r in moved} == {limit}
    for request in moved:
        assert not {"messages", "max_tokens", "max_completion_tokens"} & set(request.json)
    if role == "model":
        instructions = {rows[i]["instruction"] for i in SMALL_ROWS}
        assert {r.text for r in moved} == instructions
        for request in moved:
            [item] = request.json["input"]
            assert item["role"] == "user"
            assert [part["type"] for part in item["content"]] == ["input_image", "input_text"]
            assert item["content"][0]["image_url"].startswith("data:image/")
    result.stdout.fnmatch_lines([f"*mia-bench: {role}: {responses_server.url} (Responses API)*"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_each_protocols_judge_request_is_carried_over_unchanged(
    bench: Bench, responses_server: OpenAIServer, protocol: str
) -> None:
    """The same run through chat and through the Responses API: the judge gets
    the same prompt, the same image (or none) at the same detail, the same
    temperature and token limit."""
    bench.server.script = lambda request: Reply("A dog runs.\n  <b>bold</b> {x}") if request.role == "model" else Reply("total score: 5/10")
    bench.run(f"--mia-protocol={protocol}", "-p", "no:cacheprovider").assert_outcomes(passed=6)
    bench.run(f"--mia-protocol={protocol}", "-p", "no:cacheprovider", *on(responses_server, "judge")).assert_outcomes(passed=6)
    chat = sorted(bench.server.by_role("judge"), key=lambda r: r.text)
    responses = sorted(responses_server.by_role("judge"), key=lambda r: r.text)
    assert len(chat) == len(responses) == 6
    for old, new in zip(chat, responses):
        assert new.text == old.text
        assert [(mime, data) for mime, data, _ in new.images] == [(mime, data) for mime, data, _ in old.images]
        # The detail as chat sends it; the Responses API requires one: chat's default, auto, when chat sends none.
        assert [image["detail"] for _, _, image in new.images] == [image.get("detail", "auto") for _, _, image in old.images]
        old_content, new_content = old.messages[-1]["content"], new.messages[-1]["content"]
        if isinstance(old_content, str):  # a prompt alone stays the same string
            assert new_content == old_content
        else:  # text and image parts in the same order
            assert [p["type"] for p in new_content] == [{"text": "input_text", "image_url": "input_image"}[p["type"]] for p in old_content]
        assert [m["role"] for m in new.messages] == [m["role"] for m in old.messages]
        assert new.json.get("temperature") == old.json.get("temperature")
        assert new.json["max_output_tokens"] == old.json["max_tokens"]


def test_usage_reasoning_and_finish_reason_are_read_from_the_response(bench: Bench, responses_server: OpenAIServer) -> None:
    def script(request: Request) -> Reply:
        if request.role == "judge":
            return Reply("total score: 6/10", usage=(40, 5))
        if "Describe the activities" in request.text:  # sample 1 ran out of tokens
            return Reply("A dog", usage=(100, 20), reasoning_tokens=15, response_status="incomplete", incomplete_reason="max_output_tokens")
        return Reply("A dog runs.", usage=(100, 20), reasoning_tokens=15, reasoning_summary=("Looked at the dog.", "Counted legs."))

    bench.server.script = script
    result = bench.run(*on(responses_server, "model"), "--mia-reasoning-effort=high", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    assert {r.json["reasoning"]["effort"] for r in responses_server.by_role("model")} == {"high"}
    assert all("reasoning_effort" not in r.json for r in responses_server.by_role("model"))
    report = bench.report()
    usage = report["usage"]["model"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["reasoning_tokens"]) == (600, 120, 90)
    samples = {s["index"]: s for s in report["samples"]}
    assert samples[1]["finish_reason"] == "length" and samples[1]["response"] == "A dog"
    assert {samples[i]["finish_reason"] for i in (0, 2, 3, 4, 5)} == {"stop"}
    assert samples[0]["reasoning"] == "Looked at the dog.\n\nCounted legs."


def test_a_429_is_waited_out_and_the_call_succeeds(bench: Bench, responses_server: OpenAIServer, rows: list[dict[str, Any]]) -> None:
    per_sample(bench, rows, SMALL_ROWS, SCORES)
    scored = bench.server.script
    limited: set[str] = set()
    lock = threading.Lock()

    def script(request: Request) -> Reply:
        with lock:
            first = request.text not in limited
            limited.add(request.text)
        if first:  # every call's first attempt
            return Reply("slow down", status=429, headers={"retry-after-ms": "20"})
        return scored(request)

    bench.server.script = script
    bench.run(*on(responses_server, "model"), *on(responses_server, "judge"), "-p", "no:cacheprovider").assert_outcomes(passed=6)
    report = bench.report()
    assert report["total_score"] == pytest.approx(sum(SCORES) / 10 / 6)
    assert sum(s["rate_limited"] for s in report["samples"]) == 12
    assert len(responses_server.requests) == 24 and bench.server.requests == []


def test_a_server_error_is_retried_and_a_dead_route_trips_the_breaker(bench: Bench, responses_server: OpenAIServer) -> None:
    failed: set[str] = set()

    def script(request: Request) -> Reply:
        if request.role == "model" and request.text not in failed:
            failed.add(request.text)
            return Reply("busy", status=503)
        return Reply("total score: 5/10") if request.role == "judge" else Reply("answer")

    bench.server.script = script
    bench.run(*on(responses_server, "model"), "-p", "no:cacheprovider").assert_outcomes(passed=6)
    assert sum(s["retries"] for s in bench.report()["samples"]) == 6
    # Chat calls to a server of the Responses API alone: 404 on each, the run stops.
    result = bench.run(f"--mia-base-url={responses_server.url}", "-p", "no:cacheprovider", "--mia-concurrency=1")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*model endpoint * is unusable: HTTP 404 on each of the first 3 attempts (POST /v1/chat/completions*"])
    # A judge whose Responses route is missing: the message names that route.
    bench.server.script = lambda request: Reply("no such model", status=404) if request.role == "judge" else Reply("answer")
    result = bench.run(*on(responses_server, "judge"), "-p", "no:cacheprovider", "--mia-concurrency=1")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*judge endpoint * is unusable: HTTP 404 on each of the first 3 attempts (POST /v1/responses)*"])


def test_a_refused_temperature_is_dropped_and_max_output_tokens_kept(bench: Bench, responses_server: OpenAIServer) -> None:
    def script(request: Request) -> Reply:
        if request.role == "model" and "temperature" in request.json:
            return Reply(status=400, error=TEMPERATURE_ERROR)
        return Reply("total score: 5/10") if request.role == "judge" else Reply("answer")

    bench.server.script = script
    args = (*on(responses_server, "model"), "--mia-temperature=0.3", "--mia-max-tokens=64", "--mia-concurrency=1", "-p", "no:cacheprovider")
    bench.run(*args).assert_outcomes(passed=6)
    model = responses_server.by_role("model")
    assert len(model) == 6 + 1  # one refusal, then each call the accepted way
    assert "temperature" in model[0].json and all("temperature" not in r.json for r in model[1:])
    assert {r.json["max_output_tokens"] for r in model} == {64}
    deviations = bench.report()["model"]["sampling_deviations"]
    assert deviations == ["temperature=0.3 not sent, the model's default applies (the endpoint refused it)"]


def test_a_reasoning_model_gets_max_output_tokens_and_no_temperature_from_the_first_call(bench: Bench, responses_server: OpenAIServer) -> None:
    bench.server.script = lambda request: Reply("total score: 5/10") if request.role == "judge" else Reply("answer")
    args = ("--mia-model=o3-pro", *on(responses_server, "model"), "--mia-temperature=0.3", "--mia-max-tokens=64", "-p", "no:cacheprovider")
    bench.run(*args).assert_outcomes(passed=6)
    bodies = [r.json for r in responses_server.by_role("model")]
    assert len(bodies) == 6 and {b["max_output_tokens"] for b in bodies} == {64}
    assert not any({"temperature", "max_tokens", "max_completion_tokens"} & set(b) for b in bodies)
    deviations = bench.report()["model"]["sampling_deviations"]
    assert deviations == ["temperature=0.3 not sent, the model's default applies (o3-pro is a reasoning model)"]


def test_a_reply_over_the_cap_fails_its_sample_and_the_run_goes_on(bench: Bench, responses_server: OpenAIServer) -> None:
    def script(request: Request) -> Reply:
        if request.role == "judge":
            return Reply("total score: 5/10")
        if "Describe the activities" in request.text:  # sample 1
            return Reply("answer ", huge=5000)
        return Reply("answer")

    bench.server.script = script
    result = bench.run(*on(responses_server, "model"), "--mia-max-reply-bytes=4000", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*row 1: model call to * failed: reply body larger than 4000 bytes (--mia-max-reply-bytes)*"])


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"object": "response", "status": "completed", "output": []}, "completed response has no output text"),
        ({"object": "response", "status": "completed", "output": "A dog."}, "reply is not a response with a list of output items"),
        ({"choices": [{"message": {"content": "A dog."}}]}, "reply is not a response with a list of output items"),
        ({"object": "response", "status": "failed", "output": [], "error": {"code": "server_error", "message": "boom"}}, "response status failed: *boom*"),
        (
            {"object": "response", "status": "completed", "output": [{"type": "message", "content": [{"type": "output_text", "text": 7}]}]},
            "output_text part of the reply holds no text",
        ),
        ({"object": "response", "status": "completed", "output": [{"type": "message", "content": 5}]}, "completed response has no output text"),
        ({"object": "response", "status": "in_progress", "output": []}, "response status in_progress"),
    ],
)
def test_a_malformed_response_fails_its_call_with_the_cause(bench: Bench, responses_server: OpenAIServer, body: dict[str, Any], reason: str) -> None:
    bench.server.script = lambda request: Reply(raw_body=json.dumps(body).encode()) if request.role == "model" else Reply("total score: 5/10")
    result = bench.run(*on(responses_server, "model"), "--mia-limit=1", "--mia-max-retries=1", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*row 0: model call to * failed (after 2 attempts): malformed reply ({reason})*"])


def test_cache_entries_of_the_two_apis_never_mix(bench: Bench, rows: list[dict[str, Any]]) -> None:
    """One server serving both APIs at one URL, the same settings: only the API differs."""
    per_sample(bench, rows, SMALL_ROWS, SCORES)
    args = ("--mia-cache-dir=cache", "--mia-model-revision=r1")
    responses = ("--mia-api=responses", "--mia-judge-api=responses")

    def paths() -> list[str]:
        found = sorted(r.path for r in bench.server.requests)
        bench.server.requests.clear()
        return found

    bench.run(*args).assert_outcomes(passed=6)
    assert paths() == ["/v1/chat/completions"] * 12
    # Through the Responses API: nothing is served from chat's entries.
    bench.run(*args, *responses).assert_outcomes(passed=6)
    assert paths() == ["/v1/responses"] * 12
    assert not any(s["cached"]["model"] or s["cached"]["judge"] for s in bench.report()["samples"])
    # Again through the Responses API: every call from the cache.
    bench.run(*args, *responses).assert_outcomes(passed=6)
    assert paths() == []
    assert all(s["cached"] == {"model": True, "judge": True} for s in bench.report()["samples"])
    assert bench.report()["total_score"] == pytest.approx(sum(SCORES) / 10 / 6)


def test_the_options_are_checked_and_have_ini_twins(bench: Bench, responses_server: OpenAIServer) -> None:
    result = bench.run("--mia-api=completions")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mia-api on the command line: expected chat or responses, got 'completions'*"])
    bench.pytester.makeini("[pytest]\nmia_judge_api = Responses\nmia_api = responses\n")
    bench.run(f"--mia-base-url={responses_server.url}", f"--mia-judge-base-url={responses_server.url}", "-p", "no:cacheprovider").assert_outcomes(passed=6)
    assert len(responses_server.requests) == 12 and bench.server.requests == []
    bench.pytester.makeini("[pytest]\nmia_judge_api = soap\n")
    result = bench.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*mia_judge_api in tox.ini: expected chat or responses, got 'soap'*"])


def test_the_built_in_mock_serves_the_responses_api(pytester: pytest.Pytester) -> None:
    """A dry run of a Responses API setup: the mock answers both APIs alike."""
    reports = []
    for apis in ([], ["--mia-api=responses", "--mia-judge-api=responses"]):
        result = pytester.runpytest("--mia-bench", "--mia-demo", *apis, "--mia-report=r.json", "-p", "no:cacheprovider")
        assert result.ret == 0, result.stdout.str()
        reports.append(json.loads((pytester.path / "r.json").read_text()))
    chat, responses = reports
    assert responses["model"]["api"] == responses["judge"]["api"] == "responses"
    assert [s["score"] for s in responses["samples"]] == [s["score"] for s in chat["samples"]]
    assert [s["response"] for s in responses["samples"]] == [s["response"] for s in chat["samples"]]


def test_a_refusal_is_an_answer_without_text_and_no_verdict(bench: Bench, responses_server: OpenAIServer) -> None:
    """As chat's null content: the model's refusal is judged as an empty
    answer; the judge's is no verdict (retried, never a stored 0)."""
    refusal = {
        "object": "response",
        "status": "completed",
        "output": [{"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]}],
    }
    body = json.dumps(refusal).encode()
    bench.server.script = lambda request: Reply("total score: 0/10") if request.role == "judge" else Reply(raw_body=body)
    bench.run(*on(responses_server, "model"), "--mia-limit=1", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    [sample] = bench.report()["samples"]
    assert sample["response"] is None and sample["finish_reason"] == "stop" and sample["score"] == 0.0
    bench.server.script = lambda request: Reply(raw_body=body) if request.role == "judge" else Reply("answer")
    result = bench.run(*on(responses_server, "judge"), "--mia-limit=1", "--mia-max-retries=1", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*row 0: judge call to * failed (after 2 attempts): malformed reply (no usable text (content null*"])


def test_messages_are_carried_over_part_for_part_roles_included() -> None:
    """No protocol sends a system message today; one (a custom protocol's,
    say) would stay a system message, not be merged into the user's."""
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA==", "detail": "low"}}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AA=="}}, {"type": "text", "text": " two "}]},
    ]
    assert responses_input(messages) == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "input_text", "text": "Look:"}, {"type": "input_image", "image_url": "data:image/png;base64,AA==", "detail": "low"}]},
        {"role": "user", "content": [{"type": "input_image", "image_url": "data:image/jpeg;base64,AA==", "detail": "auto"}, {"type": "input_text", "text": " two "}]},
    ]
