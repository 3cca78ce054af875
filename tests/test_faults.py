"""Faults: flaky and hung endpoints, hard errors, broken rows and images,
odd replies, bad options, crashed workers, and keys that must never leak."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from support import data
from support.server import OpenAIServer, Reply, Request

from conftest import Bench

VERDICT = "score of component 1: 4/4, score of component 2: 2/3, total score: 8/10."


def good(request: Request) -> Reply:
    return Reply(VERDICT) if request.role == "judge" else Reply("An answer.")


def test_thirty_percent_transient_errors_change_nothing(bench: Bench) -> None:
    bench.server.script = good
    bench.run("-p", "no:cacheprovider").assert_outcomes(passed=6)
    clean = bench.report()

    rng = random.Random(7)
    lock = threading.Lock()
    failures = {"n": 0}

    def flaky(request: Request) -> Reply:
        with lock:
            roll = rng.random()
        if roll < 0.3:
            failures["n"] += 1
            if roll < 0.15:
                return Reply("slow down", status=429, headers={"retry-after-ms": "20"})
            return Reply("oops", status=500 if roll < 0.25 else 503)
        return good(request)

    bench.server.script = flaky
    bench.server.requests.clear()
    for extra in ([], ["-n", "2"]):
        result = bench.run("-p", "no:cacheprovider", "--mia-max-retries=8", *extra)
        result.assert_outcomes(passed=6)
        report = bench.report()
        assert report["total_score"] == clean["total_score"]
        assert [s["score"] for s in report["samples"]] == [s["score"] for s in clean["samples"]]
        assert report["usage"]["retries"] > 0
    assert failures["n"] > 0


def test_retry_after_is_honoured(bench: Bench) -> None:
    seen: list[float] = []

    def once_limited(request: Request) -> Reply:
        seen.append(request.started)
        if len(seen) == 1:
            return Reply("rate limited", status=429, headers={"retry-after": "1"})
        return good(request)

    bench.server.script = once_limited
    bench.run("--mia-limit=1", "--mia-concurrency=1", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert seen[1] - seen[0] >= 1.0  # waited at least what the server asked
    assert bench.report()["samples"][0]["retries"] == 1


def test_a_hung_request_times_out_and_the_retry_succeeds(bench: Bench) -> None:
    calls = {"n": 0}

    def hang_once(request: Request) -> Reply:
        if request.role == "model":
            calls["n"] += 1
            if calls["n"] == 1:
                return Reply(hang=True)
        return good(request)

    bench.server.script = hang_once
    result = bench.run("--mia-limit=1", "--mia-timeout=3", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    sample = bench.report()["samples"][0]
    assert sample["calls"]["model"] == 2 and sample["retries"] == 1 and sample["status"] == "scored"


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_non_transient_errors_fail_at_once(bench: Bench, status: int) -> None:
    bench.server.script = lambda r: Reply("model 'vlm' is not allowed", status=status) if r.role == "model" else good(r)
    result = bench.run("--mia-limit=2", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    assert len(bench.server.requests) == 2  # no retry
    host = bench.server.url.split("//")[1].split("/")[0]
    result.stdout.fnmatch_lines([f"*row 0: model call to {host} (vlm) failed: HTTP {status}: model 'vlm' is not allowed*"])


def test_malformed_reply_body_is_retried_then_reported(bench: Bench) -> None:
    bench.server.script = lambda r: Reply(raw_body=b"<html>bad gateway</html>") if r.role == "judge" else good(r)
    result = bench.run("--mia-limit=1", "--mia-max-retries=1", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*judge call to * (judge) failed (after 2 attempts): malformed reply*"])
    sample = bench.report()["samples"][0]
    assert sample["response"] == "An answer." and sample["status"] == "failed"  # the answer is kept


@pytest.mark.parametrize(
    ("text", "finish_reason"),
    [("", "stop"), (None, "stop"), (None, "content_filter"), ("A long answer cut he", "length")],
    ids=["empty", "null", "refused", "truncated"],
)
def test_odd_model_replies_are_judged_as_given(bench: Bench, text: str | None, finish_reason: str) -> None:
    prompts: list[str] = []

    def script(request: Request) -> Reply:
        if request.role == "judge":
            prompts.append(request.text)
            return Reply(VERDICT)
        return Reply(text, finish_reason=finish_reason)

    bench.server.script = script
    bench.run("--mia-limit=1", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    sample = bench.report()["samples"][0]
    assert sample["response"] == text and sample["finish_reason"] == finish_reason
    assert f"The response is:' {text or ''}' You need to score" in prompts[0]
    assert sample["status"] == "scored"


@pytest.mark.parametrize(
    ("reply", "status"),
    [("", "zero"), ("\x00\x01 garbage ]]]{", "zero"), ("total score: 9/10. " + "x" * 1_000_000, "scored")],
    ids=["empty", "garbage", "enormous"],
)
def test_odd_judge_replies_follow_the_policy(bench: Bench, reply: str | None, status: str) -> None:
    bench.server.script = lambda r: Reply(reply) if r.role == "judge" else Reply("An answer.")
    bench.run("--mia-limit=1", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    sample = bench.report()["samples"][0]
    assert sample["status"] == status
    assert sample["score"] == (0.9 if status == "scored" else 0.0)


@pytest.mark.parametrize(("text", "finish_reason"), [(None, "stop"), ("I can't help with that.", "content_filter")], ids=["null", "filtered"])
def test_a_judge_reply_without_text_is_a_failed_call_never_a_verdict(bench: Bench, text: str | None, finish_reason: str) -> None:
    bench.server.script = lambda r: Reply(text, finish_reason=finish_reason) if r.role == "judge" else Reply("An answer.")
    result = bench.run("--mia-limit=1", "--mia-max-retries=1", "--mia-model-revision=r1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*judge call to * (judge) failed (after 2 attempts): malformed reply (no usable text*"])
    assert len(bench.server.by_role("judge")) == 2  # retried
    sample = bench.report()["samples"][0]
    assert sample["status"] == "failed" and sample["response"] == "An answer."
    # Nothing was cached as a verdict: a rerun asks the judge again.
    bench.server.script = good
    bench.run("--mia-limit=1", "--mia-model-revision=r1").assert_outcomes(passed=1)
    assert len(bench.server.by_role("judge")) == 3 and len(bench.server.by_role("model")) == 1


def test_broken_rows_fail_with_their_cause_and_the_rest_runs(pytester: pytest.Pytester, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    good_rows = [dict(r) for r in rows[:10]]
    broken = [dict(r) for r in good_rows]
    broken[1]["component_weight"] = broken[1]["component_weight"][:-1]
    broken[2]["instruction"] = "   "
    broken[3]["component_weight"] = [0] + broken[3]["component_weight"][1:]
    broken[4]["component_weight"] = [-2] + broken[4]["component_weight"][1:]  # (a float is a mistyped column: test_dataset_schema)
    images: list[bytes | None] = [data.image_bytes("jpeg", 40, 30, seed=i) for i in range(10)]
    images[5] = images[5][:200]  # truncated JPEG
    images[6] = data.image_bytes("bmp", 40, 30)  # unsupported format
    images[7] = b"this is not an image at all"
    images[8] = None  # no image at all
    path = data.write_json_dataset(tmp_path / "json", broken, images)
    with OpenAIServer(good, judge_model="judge") as server:
        bench = Bench(pytester, server, path)
        for extra in ([], ["-n", "2"]):
            result = bench.run("-p", "no:cacheprovider", *extra)
            result.assert_outcomes(passed=2, failed=8)
            result.stdout.fnmatch_lines_random(
                [
                    "*sample 0001 *: row 1: components (*), component_weight (*) and component_type (*) differ in length*",
                    "*sample 0002 *: row 2: instruction is empty or missing*",
                    "*sample 0003 *: row 3: component_weight '0' is not a positive whole number*",
                    "*sample 0004 *: row 4: component_weight '-2' is not a positive whole number*",
                    "*sample 0005 *: row 5: image: JPEG is truncated: * (200 bytes)*",
                    "*sample 0006 *: row 6: image: unsupported image format BMP*",
                    "*sample 0007 *: row 7: image: image bytes are not a recognised image format*",
                    "*sample 0008 *: row 8: image is missing or empty*",
                ]
            )
            report = bench.report()
            assert [s["status"] for s in report["samples"]] == ["scored"] + ["failed"] * 8 + ["scored"]
            assert report["total_score"] == pytest.approx(0.8) and report["n_failed"] == 8
            assert len(server.by_role("model")) == 2
            server.requests.clear()


def test_broken_images_in_parquet(pytester: pytest.Pytester, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    images = [data.image_bytes("webp", 40, 30, seed=i) for i in range(3)]
    images[1] = images[1][: len(images[1]) // 2]
    dataset = data.write_hub_dataset(tmp_path / "hub", rows[:3], images)
    with OpenAIServer(good, judge_model="judge") as server:
        result = Bench(pytester, server, dataset).run("-p", "no:cacheprovider")
        result.assert_outcomes(passed=2, failed=1)
        result.stdout.fnmatch_lines(["*sample 0001 *: row 1: image: WEBP is truncated: its RIFF header says * bytes, got *"])


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ("{tmp}/nope.parquet", "*--mia-dataset: cannot load the MIA-Bench dataset: {tmp}/nope.parquet: no such file or directory*"),
        ("{tmp}/empty-dir", "*{tmp}/empty-dir: cannot load*check the directory holds data/<split>-*.parquet*"),
        ("someone/not-cached-here", "*someone/not-cached-here: cannot load*HF_HUB_OFFLINE=1*local hub-layout directory or parquet file also works*"),
    ],
)
def test_unloadable_dataset_is_one_usage_error(pytester: pytest.Pytester, tmp_path: Path, dataset: str, message: str) -> None:
    (tmp_path / "empty-dir").mkdir()
    result = pytester.runpytest("--mia-bench", "--mia-model=vlm", f"--mia-dataset={dataset.format(tmp=tmp_path)}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message.format(tmp=tmp_path)])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_wrong_split_names_the_split(bench: Bench) -> None:
    result = bench.run("--mia-split=validation")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*split 'validation' not found*--mia-split*"])


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (["--mia-threshold=1.5"], None, "*--mia-threshold on the command line: expected a number in [[]0, 1[]], got 1.5*"),
        ([], "mia_threshold = 2", "*mia_threshold in tox.ini: expected a number in [[]0, 1[]], got 2.0*"),
        (["--mia-limit=-3"], None, "*--mia-limit on the command line: expected a number >= 0, got -3*"),
        ([], "mia_concurrency = lots", "*mia_concurrency in tox.ini: expected a whole number, got 'lots'*"),
        ([], "mia_protocol = nope", "*mia_protocol in tox.ini: unknown protocol 'nope'*"),
        (["--mia-timeout=0"], None, "*--mia-timeout on the command line: expected a number > 0, got 0*"),
    ],
)
def test_malformed_options_name_their_source(pytester: pytest.Pytester, small_dataset: Path, args: list[str], ini: str | None, message: str) -> None:
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest("--mia-bench", "--mia-model=vlm", f"--mia-dataset={small_dataset}", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_crashed_worker_loses_nothing_already_reported(bench: Bench) -> None:
    bench.server.script = good
    bench.pytester.makeconftest(
        """
        import os

        def pytest_runtest_call(item):
            if item.name == "0003" and os.environ.get("PYTEST_XDIST_WORKER"):
                os._exit(3)
        """
    )
    result = bench.run("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, failed=1)
    report = bench.report()
    by_index = {s["index"]: s for s in report["samples"]}
    assert sorted(by_index) == [0, 1, 2, 3, 4, 5]
    assert by_index[3]["status"] == "failed" and "crashed" in by_index[3]["reason"]
    assert report["n_samples"] == 6 and report["n_failed"] == 1 and report["n_scored"] == 5
    assert report["total_score"] == pytest.approx(0.8)


CANARY = "sk-canary-3f9c2e71d4b8a6"


def test_the_api_key_appears_nowhere(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIA_CANARY_KEY", CANARY)
    calls = {"n": 0}

    def leaky(request: Request) -> Reply:
        # A hostile server that echoes the Authorization header in errors.
        calls["n"] += 1
        auth = request.headers.get("authorization", "")
        if request.role == "model" and calls["n"] % 3 == 0:
            return Reply(f"bad key {auth}", status=401)
        if request.role == "judge" and calls["n"] % 4 == 0:
            return Reply(f"overloaded for {auth}", status=503)
        return good(request)

    bench.server.script = leaky
    outputs = []
    codes = []
    for extra in (["-v", "--tb=long"], ["-n", "2", "-vv", "--showlocals"], ["--log-cli-level=DEBUG", "--mia-no-cache"]):
        result = bench.run(
            "--mia-api-key-env=MIA_CANARY_KEY",
            "--mia-judge-api-key-env=MIA_CANARY_KEY",
            "--mia-max-retries=1",
            "--junitxml=junit.xml",
            "--mia-cache-dir=cache",
            *extra,
        )
        codes.append(result.ret)
        outputs += [result.stdout.str(), result.stderr.str(), bench.report_path.read_text(), (bench.pytester.path / "junit.xml").read_text()]
    # the key was really sent, so its absence below means something
    assert all(r.headers.get("authorization") == f"Bearer {CANARY}" for r in bench.server.requests)
    assert codes[0] == 1  # some samples failed on the 401: failing and passing runs both seen
    assert any("bad key Bearer ***" in text for text in outputs)
    for text in outputs:
        assert CANARY not in text
    for path in bench.pytester.path.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
    report = json.loads(bench.report_path.read_text())
    assert "MIA_CANARY_KEY" in json.dumps(report)  # the variable's name is fine
