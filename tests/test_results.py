"""What a run leaves for people: the HTML page, confidence intervals,
repeated judging, the baseline gate, token usage and cost."""

from __future__ import annotations

import base64
import io
import json
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from support.server import Reply, Request

from conftest import Bench

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quotes"'


class Page(HTMLParser):
    """Collects elements, attributes and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if not self._in_script:
            self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_html_report_shows_every_sample_escaped_with_thumbnails(bench: Bench) -> None:
    from PIL import Image

    bench.server.script = lambda r: Reply("total score: 7/10 " + HOSTILE) if r.role == "judge" else Reply(HOSTILE)
    for extra in ([], ["-n", "2"]):
        html_path = bench.pytester.path / "report.html"
        result = bench.run(f"--mia-html={html_path}", "-p", "no:cacheprovider", *extra)
        result.assert_outcomes(passed=6)
        result.stdout.fnmatch_lines([f"HTML report: {html_path}"])
        page = parse(html_path)
        rows = [a["id"] for tag, a in page.tags if tag == "tr" and (a.get("id") or "").startswith("s-")]
        assert sorted(rows) == [f"s-{i}" for i in range(6)]
        # hostile model and judge text is text, never markup
        text = "".join(page.text)
        assert text.count('<script>alert("x")</script>') >= 12  # 6 responses + 6 judge replies
        assert not any(name.startswith("on") for _, attrs in page.tags for name in attrs)
        imgs = [a for tag, a in page.tags if tag == "img"]
        assert imgs and all((a.get("src") or "").startswith("data:image/jpeg;base64,") for a in imgs)
        thumbs = {a["src"] for a in imgs}
        assert len(thumbs) == 6
        for src in thumbs:
            image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
            image.load()
            assert max(image.size) <= 160
        scripts = [a for tag, a in page.tags if tag == "script"]
        assert len(scripts) == 1  # the page's own, nothing injected
        html_path.unlink()


def test_confidence_intervals_are_seeded(pytester: pytest.Pytester, server: Any, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    from support import data

    n = 40
    dataset = data.write_parquet(tmp_path / "ci.parquet", rows[:n], [data.image_bytes("jpeg", 32, 32, seed=i) for i in range(n)])
    bench = Bench(pytester, server, dataset)
    instructions = [row["instruction"] for row in rows[:n]]

    def varied(request: Request) -> Reply:
        if request.role == "model":
            return Reply("An answer.")
        position = next(i for i, text in enumerate(instructions) if text in request.text)
        return Reply(f"total score: {position % 7 + 2}/10")

    server.script = varied
    cis = []
    for seed in ("0", "0", "1"):
        result = bench.run(f"--mia-seed={seed}")
        result.assert_outcomes(passed=n)
        cis.append(bench.report()["ci"])
    assert cis[0] == cis[1]
    assert cis[0]["total_score"] != cis[2]["total_score"]
    total = bench.report()["total_score"]
    low, high = cis[0]["total_score"]
    assert 0.2 <= low < total < high <= 0.8
    result.stdout.fnmatch_lines([f"total_score: {total:.4f}  95% CI [[]0.*, 0.*[]]*"])
    assert set(cis[0]["by_type"]) == {row["type"] for row in rows[:n]}


def test_judge_repeats_average_k_verdicts(bench: Bench) -> None:
    lock = threading.Lock()
    asked: dict[str, int] = {}

    def noisy(request: Request) -> Reply:
        if request.role == "model":
            return Reply("An answer.")
        with lock:
            n = asked[request.text] = asked.get(request.text, 0) + 1
        return Reply(f"total score: {[6, 8, 10][(n - 1) % 3]}/10")

    bench.server.script = noisy
    result = bench.run("--mia-judge-repeats=3", "--mia-limit=4", "--mia-model-revision=r1")
    result.assert_outcomes(passed=4)
    assert len(bench.server.by_role("judge")) == 12 and len(bench.server.by_role("model")) == 4
    assert sorted(asked.values()) == [3, 3, 3, 3]
    report = bench.report()
    assert all(sorted(s["judge_scores"]) == pytest.approx([0.6, 0.8, 1.0]) for s in report["samples"])
    assert report["total_score"] == pytest.approx(0.8)
    spread = report["judge_spread"]
    assert spread["n_compared"] == 4 and spread["n_disagree"] == 4
    assert spread["mean_std"] == pytest.approx((((0.2**2) * 2) / 3) ** 0.5)
    result.stdout.fnmatch_lines(["judge disagreement over 3 repeats: mean per-sample std 0.1633*"])
    # distinct cache entries: a rerun asks nothing; K=1 reuses the first verdict
    bench.server.requests.clear()
    bench.run("--mia-judge-repeats=3", "--mia-limit=4", "--mia-model-revision=r1").assert_outcomes(passed=4)
    bench.run("--mia-judge-repeats=1", "--mia-limit=4", "--mia-model-revision=r1").assert_outcomes(passed=4)
    assert bench.server.requests == []


def _baseline_run(bench: Bench, score: int, *extra: str) -> pytest.RunResult:
    bench.server.script = lambda r: Reply(f"total score: {score}/10") if r.role == "judge" else Reply(f"answer {score}")
    return bench.run("-p", "no:cacheprovider", *extra)


@pytest.mark.parametrize("xdist", [False, True], ids=["single", "xdist"])
def test_baseline_gate(bench: Bench, xdist: bool) -> None:
    extra = ["-n", "2"] if xdist else []
    _baseline_run(bench, 8).assert_outcomes(passed=6)
    baseline = bench.pytester.path / "baseline.json"
    bench.report_path.rename(baseline)

    small = _baseline_run(bench, 7, f"--mia-baseline={baseline}", "--mia-max-drop=0.15", *extra)
    assert small.ret == 0
    small.stdout.fnmatch_lines(["baseline *: total_score 0.8000 -> delta -0.1000", "PASS: baseline verdict pass: change (candidate - baseline) -0.1000, 95% CI [[]-0.1000, -0.1000[]], n_paired=6; a drop above 0.15 is ruled out; *"])
    block = bench.report()["baseline"]
    assert block["delta"] == pytest.approx(-0.1) and block["gate_failed"] is False and block["n_changed"] == 6
    assert block["changed"][0]["before"] == pytest.approx(0.8) and block["changed"][0]["after"] == pytest.approx(0.7)

    big = _baseline_run(bench, 5, f"--mia-baseline={baseline}", "--mia-max-drop=0.15", "--mia-threshold=0.4", *extra)
    big.assert_outcomes(passed=6, failed=1)  # the samples, and the gate (mia-bench::gate)
    assert big.ret == 1
    big.stdout.fnmatch_lines(["PASS: total_score 0.5000 meets the threshold 0.4", "FAIL: baseline verdict regression: change (candidate - baseline) -0.3000, *"])
    assert bench.report()["passed"] is False and bench.report()["baseline"]["gate_failed"] is True
    assert bench.report()["baseline"]["gate_verdict"] == "regression"


def test_baseline_of_another_protocol_or_dataset_is_refused(bench: Bench, tmp_path: Path) -> None:
    _baseline_run(bench, 8).assert_outcomes(passed=6)
    baseline = json.loads(bench.report_path.read_text())
    other = dict(baseline, protocol={"name": "apple", "prompt_version": "x"})
    (tmp_path / "other.json").write_text(json.dumps(other))
    result = bench.run(f"--mia-baseline={tmp_path / 'other.json'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mia-baseline: *other.json: made with protocol 'apple', this run uses 'evalscope'; scores are not comparable*"])
    other = dict(baseline, dataset={"source": "lmms-lab/MIA-Bench", "split": "test", "limit": None})
    (tmp_path / "data.json").write_text(json.dumps(other))
    result = bench.run(f"--mia-baseline={tmp_path / 'data.json'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*made on dataset 'lmms-lab/MIA-Bench' split 'test', this run uses*"])
    result = bench.run("--mia-max-drop=0.1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mia-max-drop on the command line: needs --mia-baseline PATH*"])


def test_usage_and_cost_sum_what_the_server_sent(bench: Bench) -> None:
    usage = {"model": (1000, 50), "judge": (300, 20)}

    def counted(request: Request) -> Reply:
        if request.role == "judge":
            return Reply("total score: 5/10", usage=usage["judge"])
        return Reply("An answer.", usage=usage["model"])

    bench.server.script = counted
    result = bench.run("--mia-price=vlm=2/8,judge=1/4", "--mia-model-revision=r1")
    result.assert_outcomes(passed=6)
    report = bench.report()
    for role, (prompt, completion) in usage.items():
        calls = len(bench.server.by_role(role))
        assert report["usage"][role]["api_calls"] == calls == 6
        assert report["usage"][role]["prompt_tokens"] == prompt * calls
        assert report["usage"][role]["completion_tokens"] == completion * calls
    model_cost = (6000 * 2 + 300 * 8) / 1e6
    judge_cost = (1800 * 1 + 120 * 4) / 1e6
    assert report["cost"]["model"]["spent"] == pytest.approx(model_cost)
    assert report["cost"]["judge"]["spent"] == pytest.approx(judge_cost)
    result.stdout.fnmatch_lines(["tokens: model 6000 in / 300 out  judge 1800 in / 120 out", f"estimated cost: model ${model_cost:.4f}  judge ${judge_cost:.4f}  total ${model_cost + judge_cost:.4f}"])
    # from the cache: nothing spent, the tokens are shown as saved
    rerun = bench.run("--mia-price=vlm=2/8", "--mia-model-revision=r1")
    report = bench.report()
    assert report["usage"]["model"]["prompt_tokens"] == 0 and report["usage"]["model"]["cached_prompt_tokens"] == 6000
    assert report["cost"]["model"]["spent"] == 0 and report["cost"]["model"]["saved_by_cache"] == pytest.approx(model_cost)
    rerun.stdout.fnmatch_lines(["*(no price for the judge)"])


def test_price_option_is_validated(bench: Bench) -> None:
    result = bench.run("--mia-price=vlm=2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mia-price on the command line: expected NAME=IN/OUT (dollars per million tokens), got 'vlm=2'*"])
