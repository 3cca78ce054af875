"""In-process look-ahead: same results as one-at-a-time, never a call for an
item that will not run, never more than N samples in flight, exactly one
model and one judge call per sample in every mode."""

from __future__ import annotations

import json
import random
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support import data
from support.server import OpenAIServer, Reply, Request

from conftest import Bench

N_SAMPLES = 16


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]]) -> Path:
    images = [data.image_bytes(("jpeg", "webp", "png")[i % 3], 48, 32, seed=i) for i in range(N_SAMPLES)]
    return data.write_parquet(tmp_path_factory.mktemp("conc") / "bench.parquet", rows[:N_SAMPLES], images)


def jittery(rows: list[dict[str, Any]], seed: int = 3) -> Any:
    """Random latency, so completions arrive out of order; per-sample replies."""
    rng = random.Random(seed)
    lock = threading.Lock()
    instructions = [row["instruction"] for row in rows[:N_SAMPLES]]

    def script(request: Request) -> Reply:
        with lock:
            delay = rng.uniform(0.0, 0.08)
        position = next((i for i, text in enumerate(instructions) if text in request.text), -1)
        if request.role == "model":
            return Reply(f"answer {position}", delay=delay)
        return Reply(f"total score: {position % 10}/10", delay=delay)

    return script


def sample_of(request: Request, rows: list[dict[str, Any]]) -> int:
    return next(i for i, row in enumerate(rows[:N_SAMPLES]) if row["instruction"] in request.text)


def junit_view(path: Path) -> list[tuple[str | None, list[tuple[str | None, str | None]]]]:
    root = ET.parse(path).getroot()
    return [
        (case.get("name"), [(p.get("name"), p.get("value")) for p in case.findall("./properties/property")])
        for case in root.iter("testcase")
    ]


def test_look_ahead_gives_the_same_results_report_and_junit(pytester: pytest.Pytester, dataset: Path, rows: list[dict[str, Any]]) -> None:
    views = []
    for concurrency in (1, 8):
        with OpenAIServer(jittery(rows), judge_model="judge") as server:
            bench = Bench(pytester, server, dataset)
            # Run order is what this compares, so pytest-randomly (if installed) must not shuffle it.
            result = bench.run(f"--mia-concurrency={concurrency}", "-p", "no:cacheprovider", "-p", "no:randomly", "-v", "--junitxml=junit.xml")
            result.assert_outcomes(passed=N_SAMPLES)
            order = [line.split()[0] for line in result.stdout.lines if line.startswith("mia-bench::")]
            report = bench.report()
            for key in ("created", "wall_seconds"):
                report.pop(key)
            report["usage"].pop("concurrency_reached")  # the adaptive limit starts at the window
            for role in ("model", "judge"):
                report[role].pop("base_url")  # each run has its own server port
            for sample in report["samples"]:
                sample.pop("seconds")
            views.append((order, report, junit_view(pytester.path / "junit.xml")))
            assert server.max_in_flight <= concurrency
            if concurrency > 1:
                assert server.max_in_flight >= 2  # it did overlap
    assert views[0] == views[1]
    assert views[0][0] == [f"mia-bench::{i:04d}" for i in range(N_SAMPLES)]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_stop_on_first_failure_wastes_at_most_the_window(pytester: pytest.Pytester, dataset: Path, rows: list[dict[str, Any]], concurrency: int) -> None:
    def failing_second(request: Request) -> Reply:
        if request.role == "model" and sample_of(request, rows) == 1:
            return Reply("no", status=400)
        return Reply("total score: 5/10" if request.role == "judge" else "answer", delay=0.02)

    with OpenAIServer(failing_second, judge_model="judge") as server:
        bench = Bench(pytester, server, dataset)
        # The window is over run order: keep it dataset order (no pytest-randomly shuffle).
        result = bench.run("-x", f"--mia-concurrency={concurrency}", "-p", "no:cacheprovider", "-p", "no:randomly")
        result.assert_outcomes(passed=1, failed=1)
        called = {sample_of(r, rows) for r in server.by_role("model")}
        extra = called - {0, 1}
        assert len(extra) <= concurrency - 1
        assert extra <= set(range(2, 2 + concurrency))
        report = bench.report()
        assert report["n_missing"] == N_SAMPLES - 2


@pytest.mark.parametrize("mode", ["single", "xdist"])
def test_exactly_one_model_and_one_judge_call_per_sample(pytester: pytest.Pytester, dataset: Path, rows: list[dict[str, Any]], mode: str) -> None:
    with OpenAIServer(jittery(rows), judge_model="judge") as server:
        bench = Bench(pytester, server, dataset)
        extra = ["-n", "2", "--mia-concurrency=4"] if mode == "xdist" else ["--mia-concurrency=8"]
        bench.run("-p", "no:cacheprovider", *extra).assert_outcomes(passed=N_SAMPLES)
        for role in ("model", "judge"):
            per_sample = Counter(sample_of(r, rows) for r in server.by_role(role))
            assert per_sample == Counter(range(N_SAMPLES)), role
        if mode == "xdist":
            # each worker keeps at most its current and its next item in flight
            assert server.max_in_flight <= 4


def test_deselected_samples_are_never_called_even_with_a_wide_window(pytester: pytest.Pytester, dataset: Path, rows: list[dict[str, Any]]) -> None:
    with OpenAIServer(jittery(rows), judge_model="judge") as server:
        bench = Bench(pytester, server, dataset)
        args = ["--mia-concurrency=32", "-p", "no:cacheprovider"]
        args += [f"--deselect=mia-bench::{i:04d}" for i in range(0, N_SAMPLES, 2)]
        bench.run(*args).assert_outcomes(passed=N_SAMPLES // 2, deselected=N_SAMPLES // 2)
        called = {sample_of(r, rows) for r in server.requests}
        assert called == set(range(1, N_SAMPLES, 2))
        assert bench.report()["n_samples"] == N_SAMPLES // 2


def test_collection_calls_nothing_and_decodes_no_image(pytester: pytest.Pytester, dataset: Path) -> None:
    with OpenAIServer(judge_model="judge") as server:
        bench = Bench(pytester, server, dataset)
        pytester.makeconftest(
            """
            import PIL.Image

            def _refuse(*args, **kwargs):
                raise AssertionError("an image was opened during collection")

            def pytest_collection_modifyitems(items):
                assert len(items) == 16

            def pytest_configure(config):
                PIL.Image.open = _refuse
            """
        )
        # A subprocess: the conftest patches Pillow for the whole process.
        result = bench.run("--collect-only", "-q", subprocess=True)
        assert result.ret == 0
        result.stdout.fnmatch_lines(["mia-bench::0000", "*16 tests collected*"])
        assert server.requests == []


def test_loadscope_is_warned_about(pytester: pytest.Pytester, dataset: Path) -> None:
    with OpenAIServer(judge_model="judge") as server:
        result = Bench(pytester, server, dataset).run("-n", "2", "--dist=loadscope", "--mia-limit=2", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=2)
        result.stdout.fnmatch_lines(["*--dist loadscope sends every MIA-Bench sample to one worker; use --dist load or worksteal*"])


def test_the_window_stays_full_behind_a_slow_head(pytester: pytest.Pytester, dataset: Path, rows: list[dict[str, Any]]) -> None:
    """Sample 0's model call is held until every other sample is judged; the
    others only get an answer when ``concurrency - 1`` of their calls are at
    the server at once (a barrier).  So the run can only finish early if,
    while the head is stuck, each sample that ends is replaced at once by
    the next one in run order.  A window that moves one position per
    finished item stops after samples 1-3 and leaves the head waiting."""
    concurrency = 4
    others = N_SAMPLES - 1
    assert others % (concurrency - 1) == 0  # the barrier's last round is full
    held = 30.0  # how long the head waits at most; the old window always waits it out
    all_judged = threading.Event()
    judged: set[int] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency - 1, timeout=held)
    released_by_others: list[bool] = []

    def script(request: Request) -> Reply:
        sample = sample_of(request, rows)
        if sample == 0:
            if request.role == "model":
                released_by_others.append(all_judged.wait(held))
                return Reply("answer 0")
            return Reply("total score: 5/10")
        barrier.wait()  # answered only when concurrency - 1 others are in flight
        if request.role == "model":
            return Reply(f"answer {sample}")
        with lock:
            judged.add(sample)
            if len(judged) == others:
                all_judged.set()
        return Reply("total score: 5/10")

    with OpenAIServer(script, judge_model="judge") as server:
        bench = Bench(pytester, server, dataset)
        result = bench.run(f"--mia-concurrency={concurrency}", "-p", "no:cacheprovider", "-p", "no:randomly", "-v")
        assert released_by_others == [True], "the other samples did not all run while the head was held"
        result.assert_outcomes(passed=N_SAMPLES)
        assert server.max_in_flight == concurrency
        for role in ("model", "judge"):
            assert Counter(sample_of(r, rows) for r in server.by_role(role)) == Counter(range(N_SAMPLES)), role
        # Reported in run order all the same.
        order = [line.split()[0] for line in result.stdout.lines if line.startswith("mia-bench::")]
        assert order == [f"mia-bench::{i:04d}" for i in range(N_SAMPLES)]


def test_images_are_prepared_in_run_order(pytester: pytest.Pytester, dataset: Path) -> None:
    """The first window's images are prepared first: a sample never waits
    for the images of samples that start after it (the pool is first in,
    first out).  The old look-ahead queued the next window's images ahead
    of the first window's."""
    concurrency = 4
    pytester.makeconftest(
        """
        import json
        import threading

        from pytest_miabench.run import engine

        started = []
        lock = threading.Lock()
        prepare_image = engine.Engine._prepare_image

        def logged(self, index):
            with lock:
                started.append(index)
            return prepare_image(self, index)

        def pytest_configure(config):
            engine.Engine._prepare_image = logged

        def pytest_unconfigure(config):
            with open("prepared.json", "w") as out:
                json.dump(started, out)
        """
    )
    with OpenAIServer(judge_model="judge") as server:
        bench = Bench(pytester, server, dataset)
        # A subprocess: the conftest patches the engine for the whole process.
        result = bench.run(f"--mia-concurrency={concurrency}", "-p", "no:cacheprovider", "-p", "no:randomly", subprocess=True)
        result.assert_outcomes(passed=N_SAMPLES)
    started = json.loads((pytester.path / "prepared.json").read_text())
    assert sorted(started) == list(range(N_SAMPLES))  # each image once
    # Two image threads take the queue in order; two taken together may log
    # in either order.  The old order began with samples 4-7.
    assert all(started.index(index) <= concurrency for index in range(concurrency)), started
