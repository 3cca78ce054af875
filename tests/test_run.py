"""End to end: ``pytest --mia-bench`` over a small real dataset, against the
loopback server, with and without xdist."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from support.server import Reply, Request

from conftest import SMALL_ROWS, Bench

# Judge replies by the dataset position of the sample they grade, and the
# score evalscope's rules give each (hand-computed from the reply text).
JUDGE_REPLIES = {
    0: ("score of component 1: 4/4, score of component 2: 3/3, score of component 3: 2/3, total score: 9/10.", 0.9),
    1: ("score of component 1: 4/4, score of component 2: 1/6, total score: 5/10. Too short.", 0.5),
    2: ("I cannot grade this.", 0.0),  # nothing parseable: counted as 0
    3: ("score of component 1: 4/4, score of component 2: 0/3, score of component 3: 3/3, total score: 7/10.", 0.7),
    4: ("score of component 1: 4/4, score of component 2: 1/2, score of component 3: 1/2, total score: 6/8.", 0.75),
    5: ("score of component 1: 4/4, score of component 2: 3/3, score of component 3: 1/1, component 4: 1/1, total score: 10/10", 1.0),
}
HAND_TOTAL = (0.9 + 0.5 + 0.0 + 0.7 + 0.75 + 1.0) / 6


def scripted(rows: list[dict[str, Any]]) -> Any:
    """Model echoes the instruction; the judge answers per sample."""
    instructions = [rows[i]["instruction"] for i in SMALL_ROWS]

    def script(request: Request) -> Reply:
        if request.role == "model":
            return Reply(f"Answer: {request.text}")
        for position, instruction in enumerate(instructions):
            if instruction in request.text:
                return Reply(JUDGE_REPLIES[position][0])
        return Reply("unknown sample", status=400)

    return script


def aggregate_view(report: dict[str, Any]) -> dict[str, Any]:
    """The parts of a report that must not depend on how the run was split."""
    drop = {"created", "wall_seconds", "samples"}
    view = {k: v for k, v in report.items() if k not in drop}
    view["samples"] = [{k: v for k, v in s.items() if k not in {"seconds"}} for s in report["samples"]]
    return view


def test_total_score_is_the_hand_computed_mean(bench: Bench, rows: list[dict[str, Any]]) -> None:
    bench.server.script = scripted(rows)
    result = bench.run("--junitxml=junit.xml")
    result.assert_outcomes(passed=6)
    assert result.ret == 0
    report = bench.report()
    assert report["total_score"] == pytest.approx(HAND_TOTAL, abs=1e-12)
    assert [s["score"] for s in report["samples"]] == pytest.approx([JUDGE_REPLIES[i][1] for i in range(6)])
    assert [s["status"] for s in report["samples"]] == ["scored", "scored", "zero", "scored", "scored", "scored"]
    assert (report["n_samples"], report["n_scored"], report["n_zero"], report["n_failed"]) == (6, 5, 1, 0)
    assert report["passed"] is True and report["threshold"] is None
    # sample 0: types describe/length_limit/linguistics scored 1, 1, 2/3
    assert [c["score"] for c in report["samples"][0]["components"]] == pytest.approx([1.0, 1.0, 2 / 3])
    assert report["samples"][0]["response"].startswith("Answer: ")
    assert report["samples"][0]["judge_reply"] == JUDGE_REPLIES[0][0]
    assert report["by_type"]["advanced"] == pytest.approx(0.9)
    result.stdout.fnmatch_lines([f"total_score: {HAND_TOTAL:.4f}*", "samples: 6  scored: 5  failed: 0  zero by policy: 1"])
    # one model call and one judge call per sample
    assert len(bench.server.by_role("model")) == 6 and len(bench.server.by_role("judge")) == 6

    junit = ET.parse(bench.pytester.path / "junit.xml").getroot()
    cases = junit.findall(".//testcase")
    assert len(cases) == 6
    scores = {}
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.findall("./properties/property")}
        assert props["mia_type"] and props["mia_status"]
        scores[case.get("name")] = float(props["mia_score"])
    assert scores == pytest.approx({f"{i:04d}": JUDGE_REPLIES[i][1] for i in range(6)})


def test_xdist_and_single_process_give_identical_aggregates(bench: Bench, rows: list[dict[str, Any]]) -> None:
    bench.server.script = scripted(rows)
    single = bench.run("-p", "no:xdist", "-p", "no:cacheprovider")
    single.assert_outcomes(passed=6)
    first = aggregate_view(bench.report())
    bench.report_path.unlink()
    parallel = bench.run("-n", "2", "-p", "no:cacheprovider")
    parallel.assert_outcomes(passed=6)
    second = aggregate_view(bench.report())
    assert first == second
    assert first["total_score"] == pytest.approx(HAND_TOTAL, abs=1e-12)


@pytest.mark.parametrize("xdist", [False, True], ids=["single", "xdist"])
@pytest.mark.parametrize(("threshold", "ret", "line"), [(0.9, 1, "FAIL: total_score *below the threshold 0.9"), (0.5, 0, "PASS: total_score *meets the threshold 0.5")])
def test_threshold_gates_the_exit_code(bench: Bench, rows: list[dict[str, Any]], threshold: float, ret: int, line: str, xdist: bool) -> None:
    bench.server.script = scripted(rows)
    extra = ["-n", "2"] if xdist else ["-p", "no:xdist"]
    result = bench.run(f"--mia-threshold={threshold}", *extra)
    # Every sample passed; the gate is one more test (mia-bench::gate) and alone decides.
    result.assert_outcomes(passed=6 + (ret == 0), failed=ret)
    assert result.ret == ret
    result.stdout.fnmatch_lines([line])
    report = bench.report()
    assert report["threshold"] == threshold
    assert report["passed"] is (ret == 0)


def test_missing_model_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--mia-bench")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mia-bench needs the model under test: pass --mia-model NAME*"])


def test_unreachable_endpoint_fails_items_with_a_clear_message(bench: Bench) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # One sample in flight at a time: its attempts are the breaker's first three.
    result = bench.pytester.runpytest(
        *bench.args(f"--mia-base-url=http://127.0.0.1:{port}/v1", "--mia-max-retries=1", "--mia-concurrency=1", "-p", "no:randomly")
    )
    result.assert_outcomes(failed=2)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            f"*mia-bench sample 0000 [[]advanced[]]: row 0: model call to 127.0.0.1:{port} (vlm) failed (after 2 attempts): connection failed*",
            f"*STOPPED: row 1: model call to 127.0.0.1:{port} (vlm) failed: model endpoint 127.0.0.1:{port} (vlm) is unusable: connection refused on each of the first 3 attempts*",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    report = bench.report()
    assert report["n_failed"] == 2 and report["n_missing"] == 4 and report["total_score"] is None and report["passed"] is False
    assert all(s["status"] == "failed" and "connection" in s["reason"] for s in report["samples"])


def test_without_mia_bench_the_plugin_is_inert(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import sys

        def test_plain():
            heavy = [m for m in ("openai", "datasets", "PIL", "pyarrow") if m in sys.modules]
            assert heavy == []

        def test_other():
            assert 1 + 1 == 2
        """
    )
    # A subprocess: this test process has imported those modules already.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert "mia-bench" not in result.stdout.str()
    # and it wrote nothing (pytester's own basetemp, captured output and bytecode aside)
    written = sorted(p.name for p in pytester.path.iterdir() if p.name not in {"stdout", "stderr", "__pycache__"} and not p.name.startswith("runpytest"))
    assert written == ["test_user.py"]


def test_user_tests_are_not_run_with_mia_bench(bench: Bench, rows: list[dict[str, Any]]) -> None:
    bench.server.script = scripted(rows)
    bench.pytester.makepyfile(test_user="def test_user():\n    raise AssertionError('must not run')\n")
    result = bench.run("-v")
    result.assert_outcomes(passed=6)
    assert "test_user.py" not in result.stdout.str()


def test_report_header_names_what_reproduces_the_run(bench: Bench) -> None:
    result = bench.run("--mia-limit=2", "--collect-only", "-q")
    # The set of ids is the promise; their listed order is not (pytest-randomly
    # shuffles this inner run too).
    assert {line for line in result.outlines if line.startswith("mia-bench::")} == {"mia-bench::0000", "mia-bench::0001"}
    verbose = bench.run("--mia-limit=2", "--collect-only")
    verbose.stdout.fnmatch_lines(
        [
            "mia-bench: model=vlm revision=unset (cached answers reused only to resume an interrupted run) judge=judge protocol=evalscope",
            f"mia-bench: dataset={bench.dataset} split=test limit=2 concurrency=8",
        ]
    )
    assert bench.server.requests == []  # collection calls nothing


def test_k_selects_by_instruction_type_and_calls_nothing_else(bench: Bench, rows: list[dict[str, Any]]) -> None:
    types = [rows[i]["type"] for i in SMALL_ROWS]
    wanted = types[0]
    result = bench.run("-k", wanted)
    expected = [i for i, t in enumerate(types) if t == wanted]
    result.assert_outcomes(passed=len(expected), deselected=6 - len(expected))
    assert [s["index"] for s in bench.report()["samples"]] == expected
    assert len(bench.server.by_role("model")) == len(expected)


def test_deselect_and_last_failed_use_stable_ids(bench: Bench, rows: list[dict[str, Any]]) -> None:
    bench.server.script = scripted(rows)
    result = bench.run("--deselect", "mia-bench::0001", "--deselect", "mia-bench::0004")
    result.assert_outcomes(passed=4, deselected=2)
    assert [s["index"] for s in bench.report()["samples"]] == [0, 2, 3, 5]
    calls_before = len(bench.server.requests)

    def broken(request: Request) -> Reply:
        if "Answer:" not in request.text and rows[SMALL_ROWS[3]]["instruction"] in request.text:
            return Reply("bad request", status=400)
        return scripted(rows)(request)

    bench.server.script = broken
    failing = bench.run("--mia-no-cache")
    failing.assert_outcomes(passed=5, failed=1)
    bench.server.script = scripted(rows)
    calls_before = len(bench.server.requests)
    rerun = bench.run("--lf", "--mia-no-cache")
    rerun.assert_outcomes(passed=1, deselected=5)
    assert len(bench.server.requests) - calls_before == 2  # one model + one judge call, sample 3 only


def _decode(data: bytes) -> Any:
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_images_arrive_decodable_with_the_right_mime_type(bench: Bench) -> None:
    result = bench.run("-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    seen = {}
    for request in bench.server.by_role("model"):
        [(mime, data, _)] = request.images
        image = _decode(data)
        seen[request.text] = (mime, image.format, image.size)
    formats = sorted(v[:2] for v in seen.values())
    # jpeg x2, png, webp x2, and the MPO arrives as a plain JPEG (its first frame)
    assert formats == sorted(
        [("image/jpeg", "JPEG"), ("image/png", "PNG"), ("image/webp", "WEBP"), ("image/jpeg", "JPEG"), ("image/jpeg", "JPEG"), ("image/webp", "WEBP")]
    )
    # the judge of the default protocol is text-only
    assert all(r.images == [] for r in bench.server.by_role("judge"))


def test_a_huge_image_arrives_downscaled(pytester: pytest.Pytester, server: Any, rows: list[dict[str, Any]], tmp_path: Any) -> None:
    from support import data

    images = [data.image_bytes("jpeg", 3264, 4928, seed=1), data.image_bytes("jpeg", 800, 600, seed=2)]
    dataset = data.write_hub_dataset(tmp_path / "huge", rows[:2], images)
    bench = Bench(pytester, server, dataset)
    bench.run("-p", "no:cacheprovider").assert_outcomes(passed=2)
    sizes = sorted(_decode(r.images[0][1]).size for r in server.by_role("model"))
    assert sizes == [(800, 600), (1356, 2048)]
    small = next(r for r in server.by_role("model") if _decode(r.images[0][1]).size == (800, 600))
    assert small.images[0][1] == images[1]  # acceptable images go out byte for byte

    server.requests.clear()
    bench.run("-p", "no:cacheprovider", "--mia-image-max-side=1000").assert_outcomes(passed=2)
    sizes = sorted(_decode(r.images[0][1]).size for r in server.by_role("model"))
    assert sizes == [(662, 1000), (800, 600)]


def test_jsonl_in_the_release_row_format(pytester: pytest.Pytester, server: Any, rows: list[dict[str, Any]], tmp_path: Any) -> None:
    import json

    from support import data

    images = [data.image_bytes("png", 30, 20, seed=i) for i in range(3)]
    path = data.write_json_dataset(tmp_path / "rel", rows[:3], images)
    records = json.loads(path.read_text())
    jsonl = path.with_suffix(".jsonl")
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    bench = Bench(pytester, server, jsonl)
    bench.run("-p", "no:cacheprovider").assert_outcomes(passed=3)
    assert [s["instruction"] for s in bench.report()["samples"]] == [r["instruction"] for r in rows[:3]]


def test_a_keyless_local_server_works(bench: Bench) -> None:
    bench.run("--mia-limit=1", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    # no OPENAI_API_KEY in the environment: the client still talks to the server
    assert {r.headers.get("authorization") for r in bench.server.requests} == {"Bearer EMPTY"}


def test_other_hub_layouts_go_through_datasets(pytester: pytest.Pytester, server: Any, small_dataset: Any, rows: list[dict[str, Any]], tmp_path: Any) -> None:
    """``data/<split>-*.parquet`` is read in place; any other layout the
    ``datasets`` library understands (here a ``test/`` folder) is loaded by it."""
    import shutil

    from pytest_miabench.data import dataset

    other = tmp_path / "other"
    (other / "test").mkdir(parents=True)
    shutil.copy(next((small_dataset / "data").glob("*.parquet")), other / "test" / "part-0.parquet")
    assert type(dataset.load(str(small_dataset), "test")).__name__ == "_ParquetSource"
    assert type(dataset.load(str(other), "test")).__name__ == "_TableSource"

    server.script = scripted(rows)
    reports = []
    for path in (small_dataset, other):
        bench = Bench(pytester, server, path)
        bench.run("-p", "no:cacheprovider").assert_outcomes(passed=6)
        reports.append([(s["score"], s["instruction"], s["image"]) for s in bench.report()["samples"]])
    assert reports[0] == reports[1]
    assert bench.report()["total_score"] == pytest.approx(HAND_TOTAL, abs=1e-12)


def test_a_git_lfs_pointer_instead_of_parquet_is_a_clear_error(pytester: pytest.Pytester, tmp_path: Any) -> None:
    (tmp_path / "mia" / "data").mkdir(parents=True)
    (tmp_path / "mia" / "data" / "test-00000-of-00001.parquet").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 186000000\n"
    )
    result = pytester.runpytest("--mia-bench", "--mia-model=vlm", f"--mia-dataset={tmp_path / 'mia'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test-00000-of-00001.parquet: not a readable parquet file (a Git LFS pointer? run 'git lfs pull')*"])
