"""The response cache: reruns cost nothing, kills lose at most what was in
flight, --mia-rejudge keeps model answers, and the cache follows pytest's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support import data
from support.server import OpenAIServer, Reply, Request

from conftest import Bench


def test_a_rerun_under_the_same_revision_makes_no_api_call_and_gives_the_same_score(bench: Bench) -> None:
    first = bench.run("--mia-model-revision=ckpt-1")
    first.assert_outcomes(passed=6)
    before = bench.report()
    assert before["usage"]["model"]["api_calls"] == 6 and before["usage"]["model"]["cache_hits"] == 0
    bench.server.requests.clear()

    second = bench.run("-n", "2", "--mia-model-revision=ckpt-1")
    second.assert_outcomes(passed=6)
    after = bench.report()
    assert bench.server.requests == []
    assert after["total_score"] == before["total_score"]
    assert after["usage"]["model"]["api_calls"] == 0 and after["usage"]["judge"]["api_calls"] == 0
    assert after["usage"]["model"]["cache_hits"] == 6 and after["usage"]["judge"]["cache_hits"] == 6
    assert all(s["cached"] == {"model": True, "judge": True} for s in after["samples"])
    second.stdout.fnmatch_lines(["api calls: model 0, judge 0  cache hits: model 6, judge 6*"])


def test_cache_keys_cover_what_changes_the_answer(bench: Bench) -> None:
    def script(request: Request) -> Reply:
        if request.role == "judge":
            return Reply("total score: 5/10")
        body = request.json  # an answer that depends on what was asked
        return Reply(f"t={body.get('temperature')} m={body.get('max_tokens')} image={len(request.images[0][1])}")

    bench.server.script = script
    revision = "--mia-model-revision=r1"
    bench.run("--mia-limit=2", revision).assert_outcomes(passed=2)
    assert len(bench.server.requests) == 4
    for extra, model_calls, judge_calls in [
        # Other weights: asked again; the same answers need no new verdict.
        ("--mia-model-revision=r2", 2, 0),
        ("--mia-temperature=0.3", 2, 2),  # new model answers -> new judge prompts
        ("--mia-max-tokens=50", 2, 2),
        ("--mia-image-max-side=32", 2, 2),  # different image bytes
        ("--mia-judge-model=judge2", 0, 2),
        ("--mia-protocol=lmms-eval", 0, 2),
        ("--mia-judge-temperature=0.7", 0, 2),
        ("--mia-no-judge-image", 0, 0),  # evalscope's judge sees no image anyway
    ]:
        bench.server.requests.clear()
        bench.server.judge_model = "judge2" if "judge2" in extra else "judge"
        args = [extra] if "revision" in extra else [extra, revision]
        bench.run("--mia-limit=2", *args).assert_outcomes(passed=2)
        roles = [r.role for r in bench.server.requests]
        assert (roles.count("model"), roles.count("judge")) == (model_calls, judge_calls), extra
        bench.server.judge_model = "judge"


def test_rejudge_keeps_model_answers(bench: Bench) -> None:
    bench.run().assert_outcomes(passed=6)
    bench.server.requests.clear()
    bench.run("--mia-rejudge").assert_outcomes(passed=6)
    assert [r.role for r in bench.server.requests].count("model") == 0
    assert [r.role for r in bench.server.requests].count("judge") == 6
    report = bench.report()
    assert all(s["cached"] == {"model": True, "judge": False} for s in report["samples"])


def test_errors_are_never_cached(bench: Bench) -> None:
    bench.server.script = lambda r: Reply("down", status=503) if r.role == "judge" else Reply("fine")
    bench.run("--mia-limit=2", "--mia-max-retries=0", "--mia-model-revision=r1").assert_outcomes(failed=2)
    bench.server.script = lambda r: Reply("total score: 5/10") if r.role == "judge" else Reply("fine")
    bench.server.requests.clear()
    bench.run("--mia-limit=2", "--mia-model-revision=r1").assert_outcomes(passed=2)
    roles = [r.role for r in bench.server.requests]
    # the model answers were kept; the failed judge calls are asked again
    assert (roles.count("model"), roles.count("judge")) == (0, 2)


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (["--mia-no-cache"], None),
        (["-p", "no:cacheprovider"], None),
        (["--cache-clear"], ".pytest_cache"),
        (["--mia-cache-dir=ci-cache"], "ci-cache"),
    ],
)
def test_cache_location_follows_pytest(bench: Bench, args: list[str], where: str | None) -> None:
    args = [*args, "--mia-model-revision=r1"]
    bench.run("--mia-limit=1", "--mia-model-revision=r1").assert_outcomes(passed=1)  # fills .pytest_cache
    bench.server.requests.clear()
    bench.run("--mia-limit=1", *args).assert_outcomes(passed=1)
    calls = len(bench.server.requests)
    if where is None:
        assert calls == 2  # bypassed
        assert not (bench.pytester.path / "ci-cache").exists()
    elif where == ".pytest_cache":
        assert calls == 2  # cleared with pytest's cache
    else:
        assert calls == 2  # a fresh directory
        assert (bench.pytester.path / "ci-cache" / "responses.sqlite3").is_file()
        bench.server.requests.clear()
        bench.run("--mia-limit=1", *args).assert_outcomes(passed=1)
        assert bench.server.requests == []


def test_many_xdist_workers_share_one_cache(pytester: pytest.Pytester, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    images = [data.image_bytes("jpeg", 40, 30, seed=i) for i in range(24)]
    dataset = data.write_parquet(tmp_path / "bench.parquet", rows[:24], images)
    with OpenAIServer(judge_model="judge") as server:
        bench = Bench(pytester, server, dataset)
        bench.run("-n", "2", "--mia-cache-dir=shared", "--mia-model-revision=r1").assert_outcomes(passed=24)
        assert len(server.requests) == 48
        server.requests.clear()
        bench.run("--mia-cache-dir=shared", "--mia-model-revision=r1").assert_outcomes(passed=24)
        assert server.requests == []


class Slow:
    """A server script answering every call after 0.15 s, remembering which
    prompts reached the judge (a judge call starts only once the model's
    answer is committed to the cache)."""

    def __init__(self) -> None:
        self.judged: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Reply:
        if request.role == "model":
            return Reply("an answer", delay=0.15)
        with self.lock:
            self.judged.add(request.text)
        return Reply("score of component 1: 1/1, total score: 6/10.", delay=0.15)

    def interrupt(self, bench: Bench, sig: signal.Signals, after_judged: int, *args: str) -> tuple[int, str]:
        """Run pytest in a real process (pytester's helper cannot signal it
        mid-run) and send ``sig`` once ``after_judged`` samples reached the judge."""
        proc = bench.spawn(*args)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.judged) >= after_judged:
                    break
            time.sleep(0.01)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
        return proc.returncode, out.decode(errors="replace")


def _parquet(tmp_path: Path, rows: list[dict[str, Any]], n: int, fmt: str) -> Path:
    images = [data.image_bytes(fmt, 40, 30, seed=i) for i in range(n)]
    return data.write_parquet(tmp_path / "bench.parquet", rows[:n], images)


def test_sigkill_then_rerun_only_asks_what_was_not_answered(pytester: pytest.Pytester, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    n = 16
    slow = Slow()
    with OpenAIServer(slow, judge_model="judge") as server:
        bench = Bench(pytester, server, _parquet(tmp_path, rows, n, "jpeg"))
        code, _ = slow.interrupt(bench, signal.SIGKILL, 6, "--mia-concurrency=2")
        assert code == -signal.SIGKILL
        with slow.lock:
            safe = set(slow.judged)
            first_model_calls = len(server.by_role("model"))
        assert 6 <= len(safe) < n
        server.requests.clear()
        rerun = bench.run("--mia-concurrency=2")
        rerun.assert_outcomes(passed=n)
        asked_again = {r.text for r in server.by_role("model")}
        instructions = {row["instruction"] for row in rows[:n]}
        assert asked_again <= instructions
        # no second model call for a sample whose answer reached the judge
        judged_instructions = {i for i in instructions if any(i in text for text in safe)}
        assert not (asked_again & judged_instructions)
        # in all, at most the in-flight requests at the kill were repeated
        assert len(asked_again) + len(judged_instructions) <= n + 2
        assert first_model_calls + len(asked_again) <= n + 2


def test_ctrl_c_writes_an_incomplete_report_and_a_rerun_resumes(pytester: pytest.Pytester, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    n = 12
    slow = Slow()
    with OpenAIServer(slow, judge_model="judge") as server:
        bench = Bench(pytester, server, _parquet(tmp_path, rows, n, "webp"))
        code, out = slow.interrupt(bench, signal.SIGINT, 4, "--mia-concurrency=1")
        assert code == pytest.ExitCode.INTERRUPTED, out
        report = bench.report()
        assert report["complete"] is False and report["passed"] is False
        done = [s for s in report["samples"] if s["status"] == "scored"]
        assert 3 <= len(done) < n
        assert all(s["score"] == pytest.approx(0.6) for s in done)

        server.requests.clear()
        bench.run("--mia-concurrency=1").assert_outcomes(passed=n)
        again = {r.text for r in server.by_role("model")}
        assert not again & {s["response"] for s in done}
        assert len(server.by_role("model")) <= n - len(done)
        assert bench.report()["complete"] is True


def test_sqlite_cache_survives_a_killed_writer(tmp_path: Path) -> None:
    from pytest_miabench.calls.cache import ResponseCache

    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from pytest_miabench.calls.cache import ResponseCache\n"
        "c = ResponseCache(Path(sys.argv[1]))\n"
        "for i in range(100000):\n"
        "    c.put('model', f'k{i}', {'text': 'x' * 500})\n"
        "    if i == 300: print('ready', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    cache = ResponseCache(tmp_path)
    count = cache.count("model")
    assert count >= 301
    assert cache.get("model", "k300") == {"text": "x" * 500}
    cache.put("model", "after", {"text": "y"})
    assert cache.get("model", "after") == {"text": "y"}


def test_many_processes_opening_a_new_cache_at_once(tmp_path: Path) -> None:
    """xdist workers start together and all open the (new) cache file: none
    may fail to switch it to WAL mode because another one holds the lock."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pytest_miabench.calls.cache import ResponseCache\n"
        "start = float(sys.argv[2])\n"
        "while time.time() < start: pass\n"
        "c = ResponseCache(Path(sys.argv[1]))\n"
        "for i in range(50):\n"
        "    c.put('model', f'{sys.argv[3]}-{i}', {'text': 'x'})\n"
        "print('ok')\n"
    )
    for attempt in range(3):
        directory = tmp_path / f"cache{attempt}"
        start = time.time() + 1.0  # every process opens the file at the same moment
        procs = [
            subprocess.Popen([sys.executable, "-c", code, str(directory), str(start), str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for n in range(8)
        ]
        outputs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 8, [err.decode()[-300:] for _, err in outputs]
        from pytest_miabench.calls.cache import ResponseCache

        assert ResponseCache(directory).count("model") == 8 * 50
