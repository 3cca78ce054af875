"""The core as a guest in someone else's pytest process: nothing left behind,
cache I/O off the request path, reruns and timeouts as their plugins mean
them, xdist modes as xdist defines them, every paid call counted."""

from __future__ import annotations

import gc
import sqlite3
import threading
from pathlib import Path

import pytest
from support.server import Reply, Request

from conftest import Bench

VERDICT = "score of component 1: 4/4, score of component 2: 3/3, total score: 7/10."


def test_a_run_leaves_no_thread_and_nothing_frozen(bench: Bench) -> None:
    before = {t.ident for t in threading.enumerate()}
    bench.run().assert_outcomes(passed=6)
    # Every thread of ours is named mia-*: loop, image and cache threads.
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive() and t.name.startswith("mia-")]
    assert left == []
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def _hold_write_lock(path: Path, held: threading.Event, release: threading.Event) -> None:
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    held.set()
    release.wait(120)
    db.execute("ROLLBACK")
    db.close()


def test_a_locked_cache_delays_no_request_and_loses_no_answer(bench: Bench, tmp_path: Path) -> None:
    """Another connection holds the cache's write lock for the whole run: the
    calls go out meanwhile, the answers are used and reported, and the failed
    write is one warning (no further write waits out the busy timeout)."""
    from pytest_miabench.calls.cache import ResponseCache

    cache_dir = tmp_path / "cache"
    ResponseCache(cache_dir).close()  # the database a run would create
    bench.server.script = lambda request: Reply(VERDICT if request.role == "judge" else "An answer.")
    held, release = threading.Event(), threading.Event()
    locker = threading.Thread(target=_hold_write_lock, args=(cache_dir / "responses.sqlite3", held, release))
    locker.start()
    assert held.wait(30)
    try:
        # The run journal (same database) cannot begin its run either: one
        # warning at configure, raised in this process by the inline run.
        with pytest.warns(pytest.PytestWarning, match="run journal unusable .database is locked.; model answers are not reused"):
            result = bench.run(f"--mia-cache-dir={cache_dir}")
    finally:
        release.set()
        locker.join()
    result.assert_outcomes(passed=6)
    # Every sample was asked although no answer could be stored (with cache
    # I/O on the loop, the first write's wait would have held every call).
    assert len(bench.server.by_role("model")) == len(bench.server.by_role("judge")) == 6
    result.stdout.fnmatch_lines(["*mia-bench: writing the response cache failed*answers are kept in the reports only*"])
    report = bench.report()
    assert all(s["response"] == "An answer." for s in report["samples"])


def test_writes_queued_behind_a_failed_one_do_not_wait_out_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several answers arrive while the database is locked: the first write
    waits out the busy timeout and fails; the ones queued behind it on the
    cache thread are skipped, not each held for the timeout again."""
    import asyncio

    from pytest_miabench.calls import cache as cache_module

    monkeypatch.setattr(cache_module, "BUSY_TIMEOUT_MS", 300)
    attempts: list[str] = []

    class Counted(cache_module.ResponseCache):
        def put(self, layer: str, key: str, value: dict[str, object]) -> None:
            attempts.append(key)
            super().put(layer, key, value)

    store = Counted(tmp_path)
    held, release = threading.Event(), threading.Event()
    locker = threading.Thread(target=_hold_write_lock, args=(store.path, held, release))
    locker.start()
    assert held.wait(30)
    cache = cache_module.AsyncCache(store)

    async def answers_arrive() -> None:
        await asyncio.gather(*(cache.put("model", f"k{i}", {"text": "an answer"}) for i in range(5)))

    try:
        asyncio.run(answers_arrive())
    finally:
        release.set()
        locker.join()
        cache.close()
    assert attempts == ["k0"]
    assert cache.problems == ["writing the response cache failed (database is locked); answers are kept in the reports only"]


@pytest.mark.uses_rerunfailures
def test_rerunfailures_really_calls_again(bench: Bench) -> None:
    pytest.importorskip("pytest_rerunfailures")  # a test dependency; present in CI
    judged: list[str] = []

    def script(request: Request) -> Reply:
        if request.role == "model":
            return Reply("An answer.")
        judged.append(request.text)
        # The first verdict asked for each sample is refused.
        return Reply("busy", status=400) if judged.count(request.text) == 1 else Reply(VERDICT)

    bench.server.script = script
    result = bench.run("--reruns=1", "--mia-no-cache")
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("rerun"), outcomes.get("failed")) == (6, 6, None)
    assert len(bench.server.by_role("judge")) == 12
    assert all(s["status"] == "scored" for s in bench.report()["samples"])


def test_a_pytest_timeout_is_one_line_naming_the_sample(bench: Bench) -> None:
    pytest.importorskip("pytest_timeout")  # a test dependency; present in CI

    hung: list[Request] = []

    def script(request: Request) -> Reply:
        if request.role == "judge":
            return Reply(VERDICT)
        if not hung:  # the first model call never answers
            hung.append(request)
            return Reply(hang=True)
        return Reply("An answer.")

    bench.server.script = script
    result = bench.run("--timeout=2", "--mia-concurrency=1", "--mia-no-cache")
    result.assert_outcomes(passed=5, failed=1)
    out = result.stdout.str()
    assert "+++ Timeout +++" not in out and "Stack of" not in out
    result.stdout.fnmatch_lines(["*mia-bench sample 00?? *: timed out after 2 s (pytest-timeout) waiting for the model's answer*"])
    failures = out[out.index("= FAILURES =") : out.index("= MIA-Bench =")]
    assert len(failures.splitlines()) < 8


def test_tx_with_dist_load_is_xdist_too(bench: Bench) -> None:
    result = bench.run("--tx=2*popen", "--dist=load", subprocess=True)
    result.assert_outcomes(passed=6)
    assert len(bench.server.by_role("model")) == 6 and len(bench.server.by_role("judge")) == 6
    assert bench.report()["n_scored"] == 6


def test_dist_each_is_refused(bench: Bench) -> None:
    result = bench.run("-n", "2", "--dist=each")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--dist each runs every MIA-Bench sample on every worker*"])
    assert bench.server.requests == []


@pytest.mark.parametrize("extra", [[], ["-n", "2"]])
def test_collect_only_lists_every_sample(bench: Bench, extra: list[str]) -> None:
    result = bench.run("--collect-only", "-q", *extra)
    assert result.ret == pytest.ExitCode.OK
    listed = {line for line in result.outlines if line.startswith("mia-bench::")}
    assert listed == {f"mia-bench::{i:04d}" for i in range(6)}
    result.stdout.fnmatch_lines(["6 tests collected*"])
    assert bench.server.requests == []


def test_calls_cut_short_by_x_are_counted(bench: Bench) -> None:
    def script(request: Request) -> Reply:
        if request.role == "judge":
            return Reply("refused", status=400)
        return Reply("An answer.", delay=0.2)

    bench.server.script = script
    result = bench.run("-x", "--mia-concurrency=4", "--mia-no-cache")
    result.assert_outcomes(failed=1)
    usage = bench.report()["usage"]
    # Every request that reached the server is in the usage line, including
    # the look-ahead samples whose items never ran.
    assert usage["model"]["api_calls"] == len(bench.server.by_role("model")) >= 2
    assert usage["judge"]["api_calls"] == len(bench.server.by_role("judge"))


def test_timed_out_calls_are_counted(bench: Bench) -> None:
    first: list[Request] = []

    def script(request: Request) -> Reply:
        if request.role == "judge":
            return Reply(VERDICT)
        if not first:
            first.append(request)
            return Reply("slow", delay=3.0)
        return Reply("An answer.")

    bench.server.script = script
    result = bench.run("--mia-timeout=0.5", "--mia-concurrency=1", "--mia-no-cache")
    result.assert_outcomes(passed=6)
    usage = bench.report()["usage"]
    model, judge = len(bench.server.by_role("model")), len(bench.server.by_role("judge"))
    # The slow call timed out and was asked again.  On a loaded machine any
    # other call may also outlast 0.5 s: every call sent is counted all the same.
    assert usage["model"]["api_calls"] == model >= 7
    assert usage["judge"]["api_calls"] == judge >= 6
    assert usage["retries"] == (model - 6) + (judge - 6)
