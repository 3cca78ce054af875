"""Hardening (issue 11): odd text, bad output paths, huge replies, corrupt
caches, leaked credentials, interrupted runs and runs with nothing counted."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from support import data
from support.server import OpenAIServer, Reply, Request

from conftest import Bench

LONE = "\ud83d"  # half of a surrogate pair: valid in JSON text, not in UTF-8


def lone_surrogates(request: Request) -> Reply:
    if request.role == "judge":
        return Reply(f"score of component 1: 1/1, total score: 5/10 {LONE}")
    if "Explain the activity" in request.text:  # sample 0: an error body carrying one
        return Reply(f"no {LONE} here", status=400)
    return Reply(f"an answer {LONE} with half a pair")


@pytest.mark.parametrize("extra", [[], ["--mia-no-cache"], ["-n", "2"]])
def test_a_lone_surrogate_flows_into_every_output(bench: Bench, extra: list[str]) -> None:
    bench.server.script = lone_surrogates
    args = ["--mia-limit=3", "--mia-html=r.html", "--junitxml=junit.xml", "--mia-cache-dir=c", "--mia-model-revision=r1", "-rA", *extra]
    for run in range(2):  # the second run reads the cache (when there is one)
        result = bench.run(*args, subprocess=True)
        assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stderr.str()
        result.assert_outcomes(passed=2, failed=1)
        result.stdout.fnmatch_lines(["*HTTP 400: no \ufffd here*", "total_score: 0.5000*"])
        # the JSON report carries the text exactly, as a \ud83d escape
        raw = bench.report_path.read_bytes()
        assert b"\\ud83d" in raw
        report = json.loads(raw)
        by_index = {s["index"]: s for s in report["samples"]}
        assert by_index[1]["response"] == f"an answer {LONE} with half a pair"
        assert by_index[1]["judge_reply"].endswith(LONE)
        assert LONE in by_index[0]["reason"]
        if run and "--mia-no-cache" not in extra:
            assert report["usage"]["model"]["cache_hits"] == 2
        # HTML and JUnit XML cannot carry it: U+FFFD (HTML) or pytest's own escape (XML)
        page = (bench.pytester.path / "r.html").read_text(encoding="utf-8")
        assert "an answer \ufffd with half a pair" in page
        ET.parse(bench.pytester.path / "junit.xml")


# -- 4. output paths ------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("--mia-report=/proc/r.json", "*--mia-report: cannot write /proc/r.json: cannot create a file in /proc (*)*"),
        ("--mia-html=/proc/no/such/place.html", "*--mia-html: cannot write /proc/no/such/place.html: *"),
        ("--mia-report=afile/r.json", "*--mia-report: cannot write afile/r.json: afile is not a directory*"),
        ("--mia-html=ro/r.html", "*--mia-html: cannot write ro/r.html: cannot create a file in ro (*)*"),
    ],
)
def test_an_unwritable_output_path_is_a_usage_error_before_any_call(bench: Bench, arg: str, message: str) -> None:
    (bench.pytester.path / "afile").write_text("x")
    # A read-only mount: unwritable even for root (which ignores chmod).
    (bench.pytester.path / "ro").symlink_to("/proc/self")
    result = bench.run("--mia-limit=1", arg)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert bench.server.requests == []


def test_a_missing_parent_that_can_be_made_is_made(bench: Bench) -> None:
    bench.run("--mia-limit=1", "--mia-html=out/deep/r.html").assert_outcomes(passed=1)
    assert (bench.pytester.path / "out" / "deep" / "r.html").is_file()


def test_an_output_that_fails_at_the_end_fails_the_run_and_keeps_the_others(bench: Bench) -> None:
    # The directory is fine at the start and replaced by a file mid-run.
    (bench.pytester.path / "out").mkdir()
    bench.pytester.makeconftest(
        """
        import shutil
        from pathlib import Path

        def pytest_runtest_call(item):
            out = Path("out")
            if out.is_dir():
                shutil.rmtree(out)
                out.write_text("not a directory any more")
        """
    )
    result = bench.run("--mia-limit=2", "--mia-html=out/r.html", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["ERROR: cannot write out/r.html: *"])
    assert "Traceback" not in result.stdout.str()
    assert bench.report()["n_scored"] == 2  # the JSON report was written all the same


# -- 13. nothing counted ----------------------------------------------------------


def test_a_run_where_every_sample_is_excluded_has_no_score_and_fails_any_gate(bench: Bench) -> None:
    bench.server.script = lambda r: Reply('{"component_1": 1, "component_2": 1, "component_3": 1}') if r.role == "judge" else Reply("x")
    bench.run("--mia-limit=2", "--mia-protocol=evalscope-json", "--mia-no-cache").assert_outcomes(passed=2)
    bench.report_path.rename(bench.pytester.path / "base.json")
    bench.server.script = lambda r: Reply("total score: 5/10") if r.role == "judge" else Reply("x")  # prose: excluded
    for gate, code in (
        ([], pytest.ExitCode.OK),
        (["--mia-threshold=0.5"], pytest.ExitCode.TESTS_FAILED),
        (["--mia-baseline=base.json"], pytest.ExitCode.TESTS_FAILED),
    ):
        result = bench.run("--mia-limit=2", "--mia-protocol=evalscope-json", "--mia-no-cache", *gate)
        assert result.ret == code, gate
        result.stdout.fnmatch_lines(["NO SCORE: none of the 2 samples counts in the mean (2 excluded by the protocol); total_score is null"])
        if gate:
            result.stdout.fnmatch_lines(["FAIL: no total_score to check against the * (no sample was counted)"])
        assert bench.report()["total_score"] is None
        assert bench.report()["passed"] is (not gate)


# -- 7. credentials -----------------------------------------------------------------

KEY = "sk-hardening-canary-4c2a9e"
PASSWORD = "pw-s3cret-71be"


def _encodings(secret: str) -> list[str]:
    raw = secret.encode()
    b64, b64url = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    return [secret, b64, b64.rstrip("="), b64url, b64url.rstrip("="), raw.hex(), raw.hex().upper(), quote(secret, safe="")]


def test_credentials_and_their_encodings_appear_in_no_output(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIA_KEY", KEY)
    calls = {"n": 0}

    def hostile(request: Request) -> Reply:
        calls["n"] += 1
        auth = request.headers.get("authorization", "")
        echo = " ".join(_encodings(KEY) if KEY in auth else [])
        if request.role == "judge":
            if calls["n"] % 3 == 0:  # an error body echoing it, retried
                return Reply(f"overloaded {echo}", status=503, echo_credentials=True)
            return Reply(f"total score: 5/10 {echo} {auth}", echo_credentials=True)
        return Reply(f"an answer {auth}", echo_credentials=True)

    bench.server.script = hostile
    model_url = bench.server.url.replace("http://", f"http://alice:{PASSWORD}@")
    outputs = []
    for extra in (
        ["--log-file=log.txt", "--log-file-level=DEBUG", "--junitxml=junit.xml", "--mia-html=r.html", "--mia-cache-dir=c", "-rA", "-v"],
        ["-o", "log_cli=true", "--log-level=DEBUG", "--mia-no-cache", "-rA"],
        ["-n", "2", "--mia-no-cache", "-rA"],
    ):
        result = bench.run(
            f"--mia-base-url={model_url}", "--mia-judge-api-key-env=MIA_KEY", "--mia-limit=3", "--mia-max-retries=3", *extra
        )
        result.assert_outcomes(passed=3)
        outputs += [result.stdout.str(), result.stderr.str()]
    # the credentials were really sent, so their absence below means something
    basic = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert {r.headers.get("authorization") for r in bench.server.by_role("model")} == {basic}
    assert {r.headers.get("authorization") for r in bench.server.by_role("judge")} == {f"Bearer {KEY}"}
    assert "HTTP Request: POST http://127.0.0.1" in "".join(outputs)  # httpx's log lines were seen
    files = [p for p in bench.pytester.path.rglob("*") if p.is_file()]
    assert {"log.txt", "junit.xml", "r.html", "report.json", "responses.sqlite3"} <= {p.name for p in files}
    texts = outputs + [p.read_bytes().decode("latin-1") for p in files]
    leaks = _encodings(KEY) + _encodings(PASSWORD) + [basic.split()[1], "alice:"]
    for text in texts:
        assert not [leak for leak in leaks if leak in text]
    report = bench.report()
    assert report["model"]["base_url"] == bench.server.url
    assert "***" in report["samples"][0]["response"] and "***" in report["samples"][0]["judge_reply"]


# -- 10. interrupted runs ---------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_reports_every_sample_whose_answers_arrived(
    pytester: pytest.Pytester, rows: list[dict[str, Any]], tmp_path: Path, sig: signal.Signals
) -> None:
    """The judge call of sample 3 never ends, so its item blocks while the
    look-ahead gets every later sample judged (12 is within its bound of
    5 x 4): answered but not claimed."""
    n = 12
    script, dataset = _sample_3_hangs(rows[:n], tmp_path)
    with OpenAIServer(script, judge_model="judge") as server:
        bench = Bench(pytester, server, dataset)
        proc = bench.spawn("--mia-concurrency=4", "--mia-cache-dir=c", "--mia-timeout=600")
        try:
            answered = _wait_for_judged(bench, pytester.path / "c" / "responses.sqlite3", n - 1)
            time.sleep(0.5)  # the last answer's few steps after its cache write
            proc.send_signal(sig)
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == pytest.ExitCode.INTERRUPTED, out.decode(errors="replace")
        if sig == signal.SIGTERM:
            assert b"SIGTERM received: the run was cancelled" in out
        report = bench.report()
    assert report["complete"] is False and report["passed"] is False
    judged = sorted(s["index"] for s in report["samples"] if s["status"] == "scored")
    assert judged == answered == [i for i in range(n) if i != 3]
    assert report["n_missing"] == 1


@pytest.mark.parametrize(
    ("how", "cache", "workers"),
    [
        ("SIGTERM to the controller", "--mia-cache-dir=c", "1"),
        ("Ctrl-C to the process group", "--mia-cache-dir=c", "1"),
        ("SIGTERM to the controller", "--mia-no-cache", "1"),
        ("Ctrl-C to the process group", "--mia-cache-dir=c", "2"),
    ],
)
def test_an_interrupted_xdist_run_reports_what_the_workers_obtained(
    pytester: pytest.Pytester, rows: list[dict[str, Any]], tmp_path: Path, how: str, cache: str, workers: str
) -> None:
    """Under xdist an interrupt ends the workers before they report what they
    hold: the item answered but not yet reported, and the look-ahead samples
    queued behind the item that hangs (sample 3's judge call never ends).
    The report still holds every sample whose judge answered, with a cache
    or without one.  With one worker every sample queues behind sample 3;
    with two, how many do depends on how xdist hands them out."""
    n, head = 16, 3
    script, dataset = _sample_3_hangs(rows[:n], tmp_path)
    with OpenAIServer(script, judge_model="judge") as server:
        bench = Bench(pytester, server, dataset)
        temp = pytester.path / "tmp"
        temp.mkdir()
        env = {**os.environ, "TMPDIR": str(temp)}
        proc = bench.spawn("-n", workers, "--mia-concurrency=4", cache, "--mia-timeout=600", "--junitxml=j.xml", new_session=True, env=env)
        try:
            answered = _wait_until_quiet(bench)
            if how.startswith("SIGTERM"):
                proc.send_signal(signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGINT)
            out, _ = proc.communicate(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == pytest.ExitCode.INTERRUPTED, out.decode(errors="replace")
        report = bench.report()
    junit = {name for case in ET.parse(pytester.path / "j.xml").iter("testcase") if (name := case.get("name"))}
    judged = sorted(s["index"] for s in report["samples"] if s["status"] == "scored")
    if workers == "1":
        # More than the items xdist heard of: the look-ahead's samples are in
        # (at least sample 4: xdist always sends a worker the item after the one it runs).
        assert sorted(junit) == ["0000", "0001", "0002"] and judged[:4] == [0, 1, 2, 4]
    assert judged == answered
    assert head not in judged and report["complete"] is False and report["n_missing"] == n - len(answered)
    # The workers' records were for this session only: none is left behind.
    if cache == "--mia-no-cache":
        assert not (pytester.path / "c").exists() and not [p for p in temp.iterdir() if p.name.startswith("mia-handoff-")]
    else:
        with contextlib.closing(sqlite3.connect(pytester.path / "c" / "responses.sqlite3")) as db:
            assert db.execute("SELECT COUNT(*) FROM mia_responses WHERE layer = 'handoff'").fetchone()[0] == 0


def _sample_3_hangs(rows: list[dict[str, Any]], tmp_path: Path) -> tuple[Callable[[Request], Reply], Path]:
    """A server script and a dataset of ``rows``: the model answers
    "answer-<index>-", the judge scores every answer but sample 3's, whose
    judge call never ends."""
    instructions = [" ".join(row["instruction"].split()) for row in rows]

    def script(request: Request) -> Reply:
        if request.role == "model":
            # Whole instructions, the longest that fits: rows 6 and 8 begin alike.
            text = " ".join(request.text.split())
            index = max((i for i, instruction in enumerate(instructions) if text.startswith(instruction)), key=lambda i: len(instructions[i]))
            return Reply(f"answer-{index}-")
        if "answer-3-" in request.text:
            return Reply(hang=True)
        return Reply("score of component 1: 1/1, total score: 6/10.")

    images = [data.image_bytes("jpeg", 40, 30, seed=i) for i in range(len(rows))]
    return script, data.write_parquet(tmp_path / "bench.parquet", rows, images)


def _wait_until_quiet(bench: Bench) -> list[int]:
    """The samples whose judge call was answered, once sample 3's hangs and
    no new judge call came for a second (the workers wait on sample 3)."""
    deadline = time.monotonic() + 90
    seen: list[int] = []
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        texts = [r.text for r in bench.server.by_role("judge")]
        answered = sorted({int(m.group(1)) for t in texts if (m := re.search(r"answer-(\d+)-", t)) and m.group(1) != "3"})
        if answered != seen:
            seen, quiet_since = answered, time.monotonic()
        elif any("answer-3-" in t for t in texts) and time.monotonic() - quiet_since > 1.5:
            time.sleep(0.5)  # the last answer's few steps after its reply: cache writes
            return answered
        time.sleep(0.05)
    raise AssertionError(f"the run never settled: {seen}")


def _wait_for_judged(bench: Bench, cache: Path, count: int) -> list[int]:
    """The samples the server answered a judge call for, once ``count`` of
    them are also in the cache (the client has them)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answered = sorted(int(m.group(1)) for r in bench.server.by_role("judge") if (m := re.search(r"answer-(\d+)-", r.text)) and m.group(1) != "3")
        if len(answered) >= count and cache.exists():
            with contextlib.closing(sqlite3.connect(cache)) as db:
                if db.execute("SELECT COUNT(*) FROM mia_responses WHERE layer = 'judge'").fetchone()[0] >= count:
                    return answered
        time.sleep(0.02)
    raise AssertionError(f"the run never got that far: {answered}")


# -- 6. a corrupt cache -------------------------------------------------------------------


def _per_sample(request: Request) -> Reply:
    """Each sample its own answer and score, so a swapped entry shows."""
    if request.role == "model":
        return Reply(f"answer {len(request.text)}")
    n = int(re.search(r"answer (\d+)", request.text).group(1)) % 11  # type: ignore[union-attr]
    return Reply(f"score of component 1: 1/1, total score: {n}/10.")


def test_random_bytes_in_the_cache_never_give_a_wrong_score(bench: Bench) -> None:
    bench.server.script = _per_sample
    bench.run("--mia-cache-dir=c", "--mia-model-revision=r1").assert_outcomes(passed=6)
    truth = {s["index"]: s["score"] for s in bench.report()["samples"]}
    assert len(set(truth.values())) > 3
    db = bench.pytester.path / "c" / "responses.sqlite3"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pristine = db.read_bytes()
    page = 4096
    assert len(pristine) >= 3 * page
    asked_again = warned = 0
    for seed in range(12):
        rng = random.Random(seed)
        corrupt = bytearray(pristine)
        for _ in range(1 + seed % 4):  # a few bytes in pages after the header page
            offset = rng.randrange(page, len(corrupt))
            corrupt[offset] = rng.randrange(256)
        if seed == 11:  # the header page too: the file is no database any more
            corrupt[:100] = bytes(rng.randrange(256) for _ in range(100))
        db.write_bytes(bytes(corrupt))
        for extra in (db.parent / "responses.sqlite3-wal", db.parent / "responses.sqlite3-shm"):
            extra.unlink(missing_ok=True)
        bench.server.requests.clear()
        result = bench.run("--mia-cache-dir=c", "--mia-model-revision=r1", "-W", "always")
        assert result.ret == pytest.ExitCode.OK, (seed, result.stdout.str()[-2000:])
        result.assert_outcomes(passed=6)
        assert {s["index"]: s["score"] for s in bench.report()["samples"]} == truth, seed
        asked_again += bool(bench.server.requests)
        warned += "mia-bench: " in result.stdout.str() and "cache" in result.stdout.str()
    assert asked_again and warned  # both a miss and an unusable database were seen


def test_a_corrupt_index_never_hands_out_another_entry(tmp_path: Path) -> None:
    """A random byte in the key index can point a key at another row whose
    value passes its checksum (this found 45 in 3000 before the row's own
    key was checked): thousands of seeded corruptions, not one wrong value."""
    from pytest_miabench.calls.cache import ResponseCache, cache_key

    pristine_dir = tmp_path / "pristine"
    cache = ResponseCache(pristine_dir)
    entries = {}
    for layer in ("model", "judge"):
        for i in range(6):
            key = cache_key({"layer": layer, "i": i})
            entries[(layer, key)] = {"text": f"{layer}-{i}"}
            cache.put(layer, key, entries[(layer, key)])
    cache._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache.close()
    pristine = (pristine_dir / ResponseCache.FILENAME).read_bytes()
    wrong, hits = [], 0
    for trial in range(2000):
        rng = random.Random(trial)
        corrupt = bytearray(pristine)
        for _ in range(1 + trial % 4):
            corrupt[rng.randrange(4096, len(corrupt))] = rng.randrange(256)
        directory = tmp_path / str(trial)
        directory.mkdir()
        (directory / ResponseCache.FILENAME).write_bytes(bytes(corrupt))
        try:
            damaged = ResponseCache(directory)
        except Exception:
            continue  # unusable: the engine warns and runs without it
        try:
            for (layer, key), value in entries.items():
                try:
                    got = damaged.get(layer, key)
                except sqlite3.DatabaseError:
                    continue  # the engine warns and asks the API
                hits += got is not None
                if got is not None and got != value:
                    wrong.append((trial, value, got))
        finally:
            damaged.close()
    assert hits and not wrong


# -- 5. huge replies -----------------------------------------------------------------------

HUGE = 50 * 1024 * 1024


def test_a_huge_reply_fails_its_sample_unread_unstored_and_the_run_goes_on(bench: Bench) -> None:
    def script(request: Request) -> Reply:
        if request.role == "judge":
            if "Describe the main theme of the banner" in request.text:  # sample 3
                return Reply("total score: 5/10 ", huge=HUGE, chunked=True)
            return Reply("total score: 5/10")
        if "Describe the activities" in request.text:  # sample 1: with a Content-Length
            return Reply("answer ", huge=HUGE)
        if "Provide a critique of the ergonomic" in request.text:  # sample 2: chunked, no length given
            return Reply("answer ", huge=HUGE, chunked=True)
        return Reply("a fine answer")

    bench.server.script = script
    result = bench.run("--mia-cache-dir=c", "--mia-html=r.html", "--mia-max-retries=3", "--mia-model-revision=r1", subprocess=True)
    result.assert_outcomes(passed=3, failed=3)
    cap = "reply body larger than 4194304 bytes (--mia-max-reply-bytes); not read further, not stored"
    result.stdout.fnmatch_lines_random([f"*sample 0001*row 1: model call to * failed: {cap}*", f"*sample 0002*row 2: model call to * failed: {cap}*", f"*sample 0003*row 3: judge call to * failed: {cap}*"])
    # read no further than the cap: the server could not send the rest
    assert bench.server.broken_writes == 3
    # asked once each (a retry would get the same), nothing large stored or written
    assert len(bench.server.requests) == 6 + 4
    for path in bench.pytester.path.rglob("*"):
        if path.is_file():
            assert path.stat().st_size < 1024 * 1024, path
    report = bench.report()
    by_index = {s["index"]: s for s in report["samples"]}
    assert [by_index[i]["status"] for i in range(6)] == ["scored", "failed", "failed", "failed", "scored", "scored"]
    assert by_index[3]["response"] == "a fine answer"  # the model's answer is kept
    assert by_index[1]["response"] is None
    # the cache holds no oversize answer: those samples are asked again
    bench.server.requests.clear()
    bench.server.script = lambda r: Reply("total score: 5/10") if r.role == "judge" else Reply("short now")
    bench.run("--mia-cache-dir=c", "--mia-model-revision=r1").assert_outcomes(passed=6)
    assert sorted(r.role for r in bench.server.requests) == ["judge", "judge", "judge", "model", "model"]


def test_the_reply_cap_has_an_ini_twin(bench: Bench) -> None:
    bench.pytester.makeini("[pytest]\nmia_max_reply_bytes = 2000\n")
    bench.server.script = lambda r: Reply("total score: 5/10") if r.role == "judge" else Reply("answer ", huge=3000)
    result = bench.run("--mia-limit=1", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*reply body larger than 2000 bytes (--mia-max-reply-bytes)*"])
    bench.run("--mia-limit=1", "-p", "no:cacheprovider", "--mia-max-reply-bytes=100000").assert_outcomes(passed=1)
