"""Each protocol end to end: scripted judge replies through the loopback
server, a real run, and a JSON report equal to the hand-computed numbers."""

from __future__ import annotations

from typing import Any

import pytest
from support.server import Reply, Request

from conftest import SMALL_ROWS, Bench

# Six samples: rows 0 [4,3,3] d/ll/li, 2 [6,4] d/m, 11 [4,3,3] d/m/m,
# 241 [4,2,2] (sum 8), 255 [5,5] g/g, 286 [4,2,1,2,1].
TEXT_REPLIES = [
    "score of component 1: 4/4, score of component 2: 3/3, score of component 3: 2/3, total score: 9/10. Good.",
    "**score of component 1: 6/6**, **score of component 2: 2/4**, **total score: 8/10**.",
    "score of component 1: 4/4, score of component 2: 0/3, score of component 3: 3/3. Reasons: fine.",
    "",
    "score of component 1: 5/5, score of component 2: 3/5, total score: 11/10.",
    "The response is weak. score of component 1: 2/4, score of component 2: 1/2, score of component 3: 0/1, "
    "score of component 4: 2/2, score of component 5: 1/1, total score: 6/10.",
]
JSON_REPLIES = [
    '{"reasoning":"ok","component_1":4,"component_2":3,"component_3":2}',
    '<think>hmm</think>\n```json\n{"reasoning": "x", "component_1": 6, "component_2": 1.5}\n```',
    '{"component_1":"4","component_2":"3","component_3":"3"}',
    "score of component 1: 4/4, score of component 2: 2/2, score of component 3: 2/2, total score: 8/8.",
    '{"component_1": 6, "component_2": 5}',
    '{"component_1":4,"component_2":2,"component_3":1,"component_4":1,"component_5":0,"total_score":7}',
]

# protocol -> (replies, statuses, scores, total, counts, some protocol_metrics)
EXPECTED: dict[str, Any] = {
    # split parser: ** and a preamble drop the sample; no total -> last item;
    # 11/10 is not clamped
    "apple": (
        TEXT_REPLIES,
        ["scored", "dropped", "scored", "dropped", "scored", "dropped"],
        [0.9, None, 1.0, None, 1.1, None],
        (0.9 + 1.0 + 1.1) / 3,
        {"n_scored": 3, "n_dropped": 3, "n_zero": 0, "n_excluded": 0},
        {"total_score": 1.0, "describe": 1.0, "length_limit": 1.0, "linguistics": 2 / 3, "mention": 0.0, "grammar": 0.6},
    ),
    "vlmevalkit": (
        TEXT_REPLIES,
        ["scored", "dropped", "scored", "dropped", "scored", "dropped"],
        [0.9, None, 1.0, None, 1.1, None],
        (0.9 + 1.0 + 1.1) / 3,
        {"n_scored": 3, "n_dropped": 3, "n_zero": 0, "n_excluded": 0},
        {"total_score": 1.0, "describe": 1.0, "mention": 0.0, "grammar": 0.6},
    ),
    # regex parser keyed by component texts: no total -> mean of 1, 0, 1
    "lmms-eval": (
        TEXT_REPLIES,
        ["scored", "scored", "scored", "zero", "scored", "scored"],
        [0.9, 0.8, 2 / 3, 0.0, 1.0, 0.6],
        (0.9 + 0.8 + 2 / 3 + 0.0 + 1.0 + 0.6) / 6,
        {"n_scored": 5, "n_dropped": 0, "n_zero": 1, "n_excluded": 0},
        {"total_score": (0.9 + 0.8 + 2 / 3 + 0.0 + 1.0 + 0.6) / 6},
    ),
    # keyed by types: the two "mention" collapse, so no total -> mean(1, 1)
    "evalscope": (
        TEXT_REPLIES,
        ["scored", "scored", "scored", "zero", "scored", "scored"],
        [0.9, 0.8, 1.0, 0.0, 1.0, 0.6],
        (0.9 + 0.8 + 1.0 + 0.0 + 1.0 + 0.6) / 6,
        {"n_scored": 5, "n_dropped": 0, "n_zero": 1, "n_excluded": 0},
        {"total_score": 4.3 / 6, "component_1_describe": (1 + 1 + 1 + 0 + 0.5) / 5, "component_2_mention": (0.5 + 1.0 + 1.0) / 3},
    ),
    # JSON contract: legacy text and an out-of-bounds value are excluded
    "evalscope-json": (
        JSON_REPLIES,
        ["scored", "scored", "scored", "excluded", "excluded", "scored"],
        [0.9, 0.75, 1.0, None, None, 0.8],
        (0.9 + 0.75 + 1.0 + 0.8) / 4,
        {"n_scored": 4, "n_dropped": 0, "n_zero": 0, "n_excluded": 2},
        {"judge_score": 0.8625, "component_1_describe": 1.0, "component_2_mention": (1.5 / 4 + 1.0 + 1.0) / 3},
    ),
}


def judge_by_sample(rows: list[dict[str, Any]], replies: list[str]) -> Any:
    instructions = [rows[i]["instruction"] for i in SMALL_ROWS]

    def script(request: Request) -> Reply:
        if request.role == "model":
            return Reply("A response.")
        for position, instruction in enumerate(instructions):
            if instruction in request.text:
                return Reply(replies[position])
        return Reply("unknown sample", status=400)

    return script


@pytest.mark.parametrize("protocol", sorted(EXPECTED))
def test_protocol_end_to_end(bench: Bench, rows: list[dict[str, Any]], protocol: str) -> None:
    replies, statuses, scores, total, counts, metrics = EXPECTED[protocol]
    bench.server.script = judge_by_sample(rows, replies)
    result = bench.run(f"--mia-protocol={protocol}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    report = bench.report()
    assert report["protocol"]["name"] == protocol
    assert [s["status"] for s in report["samples"]] == statuses
    assert [s["score"] for s in report["samples"]] == [pytest.approx(x) if x is not None else None for x in scores]
    assert report["total_score"] == pytest.approx(total, abs=1e-12)
    assert {k: report[k] for k in counts} == counts
    for key, value in metrics.items():
        assert report["protocol_metrics"][key] == pytest.approx(value), key
    policy = counts["n_dropped"] + counts["n_zero"] + counts["n_excluded"]
    if policy:
        result.stdout.fnmatch_lines(["*note: the protocol's failure policy moved the number*"])


@pytest.mark.parametrize(
    ("protocol", "sees_image", "detail", "temperature", "max_tokens"),
    [
        ("apple", True, None, None, 2000),
        ("vlmevalkit", True, "low", 0.0, 2048),
        ("lmms-eval", False, None, 0.0, 1024),
        ("evalscope", False, None, 0.0, 4096),
        ("evalscope-json", False, None, 0.0, 4096),
    ],
)
def test_judge_request_follows_the_protocol(
    bench: Bench, protocol: str, sees_image: bool, detail: str | None, temperature: float | None, max_tokens: int
) -> None:
    bench.run(f"--mia-protocol={protocol}", "--mia-limit=2", "-p", "no:cacheprovider").assert_outcomes(passed=2)
    for request in bench.server.by_role("judge"):
        body = request.json
        assert body.get("temperature") == temperature
        assert ("temperature" in body) is (temperature is not None)
        assert body["max_tokens"] == max_tokens
        images = request.images
        assert len(images) == (1 if sees_image else 0)
        if sees_image:
            assert images[0][2].get("detail") == detail


def test_judge_image_and_sampling_overrides(bench: Bench) -> None:
    bench.run(
        "--mia-protocol=apple",
        "--mia-no-judge-image",
        "--mia-judge-temperature=0.5",
        "--mia-judge-max-tokens=77",
        "--mia-limit=1",
        "-p",
        "no:cacheprovider",
    ).assert_outcomes(passed=1)
    [judge] = bench.server.by_role("judge")
    assert judge.images == [] and judge.json["temperature"] == 0.5 and judge.json["max_tokens"] == 77
    report = bench.report()
    assert report["judge"]["sees_image"] is False and report["judge"]["temperature"] == 0.5

    bench.server.requests.clear()
    bench.run("--mia-protocol=evalscope", "--mia-judge-image", "--mia-limit=1", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    [judge] = bench.server.by_role("judge")
    assert len(judge.images) == 1


def test_judge_retries_reask_unparseable_replies(bench: Bench, rows: list[dict[str, Any]]) -> None:
    asked: dict[str, int] = {}

    def script(request: Request) -> Reply:
        if request.role == "model":
            return Reply("A response.")
        n = asked[request.text] = asked.get(request.text, 0) + 1
        # the first verdict is unusable, the second is fine
        return Reply("no idea" if n == 1 else "score of component 1: 1/1, score of component 2: 1/1, total score: 8/10.")

    bench.server.script = script
    bench.run("--mia-protocol=apple", "--mia-limit=3", "-p", "no:cacheprovider").assert_outcomes(passed=3)
    report = bench.report()
    assert report["n_dropped"] == 3 and report["total_score"] is None  # default 0 re-asks: parity

    asked.clear()
    bench.run("--mia-protocol=apple", "--mia-limit=3", "--mia-judge-retries=2", "-p", "no:cacheprovider").assert_outcomes(passed=3)
    report = bench.report()
    assert report["n_scored"] == 3 and report["total_score"] == pytest.approx(0.8)
    assert [s["judge_reasks"] for s in report["samples"]] == [1, 1, 1]
    assert report["usage"]["judge_reasks"] == 3
    assert sorted(asked.values()) == [2, 2, 2]


def test_custom_protocol_from_a_conftest(bench: Bench) -> None:
    bench.pytester.makeconftest(
        """
        from pytest_miabench.protocols import Protocol, Verdict, SCORED

        class LengthProtocol(Protocol):
            name = "length"
            prompt_version = "length-1"

            def build_prompt(self, sample, response):
                return f"How long is this? {response}"

            def parse(self, sample, reply):
                value = min(1.0, len(reply or "") / 10)
                return Verdict(SCORED, value, tuple(value for _ in sample.components), {"length": value})

        def pytest_miabench_register_protocols():
            return [LengthProtocol]
        """
    )
    bench.server.script = lambda r: Reply("12345") if r.role == "judge" else Reply("x")
    result = bench.run("--mia-protocol=length", "--mia-limit=2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    report = bench.report()
    assert report["total_score"] == pytest.approx(0.5)
    assert report["protocol_metrics"] == {"length": pytest.approx(0.5)}
    assert bench.server.by_role("judge")[0].text == "How long is this? x"


def test_unknown_protocol_is_a_usage_error(bench: Bench) -> None:
    result = bench.run("--mia-protocol=nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mia-protocol on the command line: unknown protocol 'nope'; choose one of apple, evalscope, evalscope-json, lmms-eval, vlmevalkit*"])
