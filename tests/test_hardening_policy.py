"""Hardening II (issue 22), the call policy: waits a server asks for are
bounded by --mia-rate-limit-wait and said once, a server that is no OpenAI
endpoint trips the breaker, and requests in flight when the endpoint
refuses a sampling parameter are sent again the accepted way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import data
from support.reasoning import strict_reasoning
from support.server import Reply, Request

from conftest import Bench
from pytest_miabench.calls.policy import BREAKER_ATTEMPTS

VERDICT = "score of component 1: 4/4, score of component 2: 3/3, total score: 7/10."
# A run that does not end within this is hung (on a server's hour-long ask).
HUNG = 120


def answer(request: Request) -> Reply:
    return Reply(VERDICT if request.role == "judge" else "An answer.")


@pytest.fixture(scope="module")
def ten_samples(tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]]) -> Path:
    images = [data.image_bytes("jpeg", 40, 30, seed=i) for i in range(10)]
    return data.write_parquet(tmp_path_factory.mktemp("ten") / "bench.parquet", rows[:10], images)


def run_bounded(bench: Bench, *extra: str) -> pytest.RunResult:
    """A real pytest process that a hang cannot hold past ``HUNG`` seconds."""
    return bench.pytester.runpytest_subprocess(*bench.args(*extra), "-p", "no:randomly", timeout=HUNG)


# -- 2. a 5xx (or 429) asking for an hour ----------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
def test_a_retry_after_beyond_the_budget_fails_the_call_at_once_naming_the_ask(bench: Bench, status: int) -> None:
    def script(request: Request) -> Reply:
        if request.role == "model" and "Explain the activity" in request.text:  # sample 0
            return Reply("busy", status=status, headers={"Retry-After": "3600"})
        return answer(request)

    bench.server.script = script
    result = run_bounded(bench, "--mia-rate-limit-wait=60", "--mia-concurrency=2")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(
        [f"*row 0: model call to * failed: HTTP {status}: busy; server asked to retry after 3600 s (Retry-After: 3600), more than the 60 s --mia-rate-limit-wait budget*"]
    )
    assert len([r for r in bench.server.by_role("model") if "Explain the activity" in r.text]) == 1


# -- 3. a 200 saying the limit is spent for hours --------------------------------------


@pytest.mark.parametrize("workers", [[], ["-n", "2"]])
def test_a_reset_beyond_the_budget_fails_the_calls_instead_of_stalling(bench: Bench, workers: list[str]) -> None:
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6h0m0s"}
    bench.server.script = lambda request: Reply(VERDICT if request.role == "judge" else "An answer.", headers=spent)
    result = run_bounded(bench, "--mia-rate-limit-wait=60", "--mia-concurrency=1", *workers)
    result.assert_outcomes(failed=6)
    reason = "server asked to pause requests for 21600 s (x-ratelimit-reset-requests: 6h0m0s), more than the 60 s --mia-rate-limit-wait budget"
    result.stdout.fnmatch_lines([f"*row *: * call to 127.0.0.1:* failed: {reason}*"])
    # One request per process, whose reply asked for the pause: none after it.
    assert len(bench.server.requests) == (2 if workers else 1)
    notice = "*mia-bench: 127.0.0.1:* asked for a pause of 21600 s (x-ratelimit-reset-requests: 6h0m0s); calls to it fail until then*"
    result.stdout.fnmatch_lines([notice])
    if not workers:
        assert result.stdout.str().count("asked for a pause of") == 1


def test_a_long_pause_within_the_budget_is_waited_and_said_once(bench: Bench) -> None:
    def script(request: Request) -> Reply:
        reply = answer(request)
        if len(bench.server.requests) == 1:  # the first reply only: the limit is spent for 6 s
            reply.headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6s"}
        return reply

    bench.server.script = script
    result = bench.run("--mia-concurrency=2", "--mia-no-cache", "-p", "no:randomly")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*mia-bench: 127.0.0.1:* asked for a pause of 6 s (x-ratelimit-reset-requests: 6s); calls wait it out*"])
    assert result.stdout.str().count("asked for a pause of") == 1


# -- 6. not an OpenAI endpoint -----------------------------------------------------------


@pytest.mark.parametrize("workers", [[], ["-n", "2"]])
def test_an_html_server_trips_the_breaker_after_a_few_requests(bench: Bench, ten_samples: Path, workers: list[str]) -> None:
    page = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"
    bench.server.script = lambda request: Reply(raw_body=page, content_type="text/html; charset=utf-8")
    bench.dataset = ten_samples
    concurrency = 4
    result = bench.run(f"--mia-concurrency={concurrency}", "--mia-no-cache", *workers, subprocess=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*model endpoint 127.0.0.1:* (vlm) is unusable: HTTP 200 with content type text/html; charset=utf-8, not JSON, "
            "from POST /v1/chat/completions on each of the first 3 attempts*"
        ]
    )
    # The breaker's attempts and what was in flight when it tripped; never
    # each sample's retries (10 x 3 here).  Under xdist a worker has one
    # sample ahead of the one it runs in flight, and its own breaker.
    in_flight = 2 if workers else concurrency
    assert len(bench.server.requests) <= (2 if workers else 1) * (BREAKER_ATTEMPTS + in_flight - 1)
    report = json.loads(bench.report_path.read_text())
    assert report["complete"] is False and report["n_missing"] > 0


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_the_same_400_body_again_and_again_trips_the_breaker_scrubbed(bench: Bench, monkeypatch: pytest.MonkeyPatch, content_type: str) -> None:
    key = "sk-policy-canary-5d1e0f"
    monkeypatch.setenv("MIA_KEY", key)
    body = f"No connected db (token {key})"
    if content_type == "text/plain":  # a proxy's own words
        bench.server.script = lambda request: Reply(status=400, raw_body=body.encode(), content_type=content_type)
    else:
        bench.server.script = lambda request: Reply(body, status=400)
    result = bench.run("--mia-concurrency=1", "--mia-api-key-env=MIA_KEY")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ['*model endpoint 127.0.0.1:* (vlm) is unusable: HTTP 400 "No connected db (token ***)" from POST /v1/chat/completions on each of the first 3 attempts*']
    )
    assert len(bench.server.requests) == BREAKER_ATTEMPTS
    assert key not in result.stdout.str() + result.stderr.str()


def test_different_400s_do_not_trip_the_breaker(bench: Bench) -> None:
    """A 400 that names its sample is the sample's own failure."""
    bench.server.script = lambda request: Reply(f"image of {request.text[:20]!r} refused", status=400) if request.role == "model" else answer(request)
    result = bench.run("--mia-concurrency=1")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=6)


def test_a_404_from_a_base_url_without_v1_says_to_try_v1(bench: Bench) -> None:
    bare = bench.server.url.removesuffix("/v1")
    bench.server.script = lambda request: answer(request) if request.path.startswith("/v1/") else Reply("404 page not found", status=404)
    result = bench.run(f"--mia-base-url={bare}", "--mia-concurrency=1")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            f"*model endpoint 127.0.0.1:* (vlm) is unusable: HTTP 404 on each of the first 3 attempts "
            f"(POST /chat/completions; the base URL does not end in /v1: try {bare}/v1); the run stops here*"
        ]
    )
    assert {r.path for r in bench.server.requests} == {"/chat/completions"}
    # The hint is right: the same run with it passes.
    bench.run(f"--mia-base-url={bare}/v1").assert_outcomes(passed=6)


# -- 7. refusals of requests already in flight -----------------------------------------------


@pytest.mark.parametrize("workers", [[], ["-n", "2"]])
def test_requests_in_flight_when_the_endpoint_refuses_are_sent_again_the_accepted_way(bench: Bench, workers: list[str]) -> None:
    """A reasoning model under a name the built-in pattern does not know (an
    Azure deployment's, say): every request in flight gets the 400 the
    first refusal adapted the role to."""
    bench.server.script = strict_reasoning(answer, is_reasoning=lambda name: name == "vlm")
    bench.server.latency = 0.3  # all of a burst is in flight when the first 400 comes back
    result = bench.run("--mia-concurrency=8", "--mia-max-tokens=64", "--mia-temperature=0.5", "--mia-max-retries=0", "--mia-no-cache", *workers)
    result.assert_outcomes(passed=6)
    model = bench.server.by_role("model")
    refused = [r for r in model if "max_tokens" in r.json or "temperature" in r.json]
    if not workers:
        assert len(refused) > 2  # several were in flight: more than one refusal per parameter
    accepted = [r.json for r in model if r not in refused]
    assert len(accepted) == 6 and all(body["max_completion_tokens"] == 64 and "temperature" not in body for body in accepted)
    report = json.loads(bench.report_path.read_text())
    # Sent again as adapted, not retried: every one is counted as a call, none as a retry.
    assert report["usage"]["retries"] == 0
    assert report["usage"]["model"]["api_calls"] == len(model)
