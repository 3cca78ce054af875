"""Model identity: cached answers are reused across runs only for the same
weights (--mia-model-revision), or to resume a run that did not finish."""

from __future__ import annotations

import pytest
from support.server import Reply, Request

from conftest import Bench


class Deployment:
    """A model server whose weights can be swapped under the same name."""

    def __init__(self, checkpoint: str) -> None:
        self.checkpoint = checkpoint

    def __call__(self, request: Request) -> Reply:
        if request.role == "judge":
            # The new weights follow the instructions better.
            good = "ckpt-B" in request.text
            return Reply("total score: 9/10" if good else "total score: 3/10")
        return Reply(f"{self.checkpoint} says: an answer")


def roles(bench: Bench) -> tuple[int, int]:
    seen = [r.role for r in bench.server.requests]
    return seen.count("model"), seen.count("judge")


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_redeployed_model_under_the_same_name_is_asked_again(bench: Bench, xdist: list[str]) -> None:
    deployment = Deployment("ckpt-A")
    bench.server.script = deployment
    bench.run(*xdist).assert_outcomes(passed=6)
    assert bench.report()["total_score"] == pytest.approx(0.3)

    deployment.checkpoint = "ckpt-B"  # same name, same URL, other weights
    bench.server.requests.clear()
    bench.run(*xdist).assert_outcomes(passed=6)
    assert roles(bench) == (6, 6)
    assert bench.report()["total_score"] == pytest.approx(0.9)


def test_the_same_revision_twice_reuses_every_answer(bench: Bench) -> None:
    bench.server.script = Deployment("ckpt-A")
    first = bench.run("--mia-model-revision=sha-123")
    first.assert_outcomes(passed=6)
    first.stdout.fnmatch_lines(["mia-bench: model=vlm revision=sha-123 judge=judge *"])
    bench.server.requests.clear()
    bench.run("--mia-model-revision=sha-123", "-n", "2").assert_outcomes(passed=6)
    assert roles(bench) == (0, 0)
    report = bench.report()
    assert report["model"]["revision"] == "sha-123"
    assert report["usage"]["model"]["cache_hits"] == 6


def test_another_revision_asks_the_model_but_reuses_verdicts_on_identical_answers(bench: Bench) -> None:
    bench.server.script = Deployment("ckpt-A")
    bench.run("--mia-model-revision=v1").assert_outcomes(passed=6)
    bench.server.requests.clear()
    bench.run("--mia-model-revision=v2").assert_outcomes(passed=6)
    # A deterministic model answers byte for byte as before: no judge call.
    assert roles(bench) == (6, 0)


def test_without_a_revision_the_header_says_when_answers_are_reused(bench: Bench) -> None:
    result = bench.run("--mia-limit=1")
    result.stdout.fnmatch_lines(["mia-bench: model=vlm revision=unset (cached answers reused only to resume an interrupted run) *"])
    assert bench.report()["model"]["revision"] is None


def test_a_run_stopped_early_is_resumed_by_the_next(bench: Bench) -> None:
    # -x stops at the first failing item: a judge that is down fails one.
    bench.server.script = lambda r: Reply("down", status=503) if r.role == "judge" else Reply("an answer")
    first = bench.run("-x", "--mia-concurrency=1", "--mia-max-retries=0")
    first.assert_outcomes(failed=1)
    asked = roles(bench)[0]
    assert 1 <= asked < 6
    bench.server.script = lambda r: Reply("total score: 5/10") if r.role == "judge" else Reply("an answer")
    bench.server.requests.clear()
    bench.run().assert_outcomes(passed=6)
    # The answers the stopped run obtained are reused; only the rest are asked.
    assert roles(bench) == (6 - asked, 6)


def test_rejudge_after_a_finished_run_reuses_its_answers(bench: Bench) -> None:
    bench.server.script = Deployment("ckpt-A")
    bench.run().assert_outcomes(passed=6)
    bench.server.requests.clear()
    bench.run("--mia-rejudge", "-n", "2").assert_outcomes(passed=6)
    assert roles(bench) == (0, 6)
    bench.server.requests.clear()
    # ... and the run after that is a new one: the model is asked again.
    bench.run().assert_outcomes(passed=6)
    assert roles(bench)[0] == 6
