"""What keeps a run lean, checked as behaviour (no timings): images are read
page by page, the first request waits for nothing but its own image and the
clients, the garbage collector's freeze is undone, the report is written
with the C JSON encoder's layout."""

from __future__ import annotations

import gc
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from support import data
from support.server import OpenAIServer

from conftest import Bench
from pytest_miabench import dataset as dataset_mod
from pytest_miabench.engine import Engine
from pytest_miabench.protocols.evalscope import EvalscopeProtocol
from pytest_miabench.settings import Settings

IMAGE_BYTES = 150_000
N_IMAGES = 80


@pytest.fixture(scope="module")
def wide_dataset(tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]]) -> Path:
    """80 rows in one row group, 12 MB of incompressible image bytes."""
    rng = random.Random(5)
    images = [rng.randbytes(IMAGE_BYTES) for _ in range(N_IMAGES)]
    return data.write_hub_dataset(tmp_path_factory.mktemp("wide") / "mia", rows[:N_IMAGES], images)


def test_reading_one_image_does_not_load_its_row_group(wide_dataset: Path) -> None:
    source = dataset_mod.load(str(wide_dataset), "test")
    before = pa.total_allocated_bytes()
    first = source.image_bytes(0)
    held = pa.total_allocated_bytes() - before  # the open page cursor keeps its buffers
    assert len(first) == IMAGE_BYTES
    # pyarrow's pre-buffering would hold the whole 12 MB column chunk here.
    assert held < N_IMAGES * IMAGE_BYTES / 3, held
    assert [len(source.image_bytes(i)) for i in range(N_IMAGES)] == [IMAGE_BYTES] * N_IMAGES


class RecordingSource(dataset_mod.Source):
    """Real rows and images; notes each read and whether the API clients existed."""

    def __init__(self, rows: list[dict[str, Any]], images: list[bytes]) -> None:
        super().__init__("recording", rows)
        self.images = images
        self.engine: Engine | None = None
        self.reads: list[tuple[int, bool]] = []

    def image_bytes(self, index: int) -> bytes:
        assert self.engine is not None
        self.reads.append((index, self.engine._callers is not None))
        return self.images[index]


def test_only_the_first_image_is_prepared_before_the_clients_exist(rows: list[dict[str, Any]]) -> None:
    images = [data.image_bytes("jpeg", 40, 30, seed=i) for i in range(8)]
    source = RecordingSource(rows[:8], images)
    with OpenAIServer(judge_model="judge") as server:
        settings = Settings(
            enabled=True, model="vlm", base_url=server.url, judge_model="judge", judge_base_url=server.url, concurrency=4, no_cache=True
        )
        engine = Engine(settings, source, EvalscopeProtocol(), None, judge_image=False)
        source.engine = engine
        try:
            samples = source.samples
            for sample in samples[:4]:  # the window, as the runtime submits it
                engine.submit(sample)
            for sample in samples[4:]:  # the next window's images
                engine.prefetch_image(sample)
            results = [engine.result(sample) for sample in samples[:4]]
        finally:
            engine.close()
    assert [r["status"] for r in results] == ["scored"] * 4
    # The first image is read while the clients are built; no other before.
    assert all(ready for index, ready in source.reads if index != 0), source.reads
    # Held-back images start in run order: the window, then the prefetched ones.
    assert [index for index, _ in source.reads] == list(range(8))


CONFTEST_RECORDING_FREEZES = """
import gc, json, pathlib

counts = []

def pytest_collection_finish(session):
    counts.append(gc.get_freeze_count())

def pytest_runtest_call(item):
    counts.append(gc.get_freeze_count())

def pytest_unconfigure(config):
    pathlib.Path("freeze.json").write_text(json.dumps(counts))
"""


def test_the_heap_is_frozen_during_the_run_and_thawed_after_it(bench: Bench) -> None:
    assert gc.get_freeze_count() == 0
    bench.pytester.makeconftest(CONFTEST_RECORDING_FREEZES)
    bench.run("-p", "no:cacheprovider").assert_outcomes(passed=6)
    counts = json.loads((bench.pytester.path / "freeze.json").read_text())
    # Nothing frozen before the run; frozen once the first calls are out
    # or the first sample is done, so at the latest from the second item on.
    assert counts[0] == 0 and all(count > 0 for count in counts[2:]), counts
    # This process ran that session in-process: nothing of it stays frozen.
    assert gc.get_freeze_count() == 0


def test_the_json_report_has_one_line_per_sample(bench: Bench) -> None:
    bench.run("-p", "no:cacheprovider").assert_outcomes(passed=6)
    text = bench.report_path.read_text(encoding="utf-8")
    report = json.loads(text)
    lines = text.splitlines()
    start = lines.index('  "samples": [')
    sample_lines = lines[start + 1 : start + 1 + len(report["samples"])]
    assert [json.loads(line.strip().rstrip(",")) for line in sample_lines] == report["samples"]
    assert lines[start + 1 + len(report["samples"])] == "  ]"
    assert text.startswith('{\n  "schema_version": 1,\n') and text.endswith("\n}\n")


def test_the_request_body_splices_the_image_in_as_json() -> None:
    from pytest_miabench.client import IMAGE_SLOT, encode_body
    from pytest_miabench.images import prepare

    image = prepare(data.image_bytes("webp", 64, 48, seed=2), 2048)
    text = "Décris l'image « en bref » \ud800 \"quoted\" " + IMAGE_SLOT[:-1]  # unicode, a lone surrogate, a near miss
    params = {
        "model": "vlm",
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE_SLOT}}, {"type": "text", "text": text}]}],
        "max_tokens": 5,
    }
    body = encode_body(params, image)
    assert body.isascii()
    sent = json.loads(body)
    assert sent["messages"][0]["content"][0]["image_url"]["url"] == image.data_uri()
    assert sent["messages"][0]["content"][1]["text"] == text
    assert json.loads(encode_body({"model": "judge", "messages": [{"role": "user", "content": text}]})) == {
        "model": "judge",
        "messages": [{"role": "user", "content": text}],
    }


def test_malloc_is_tuned_on_glibc_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from pytest_miabench.runtime import tune_malloc

    if not os.confstr("CS_GNU_LIBC_VERSION"):
        assert tune_malloc() is False  # nothing to tune elsewhere
        return
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert tune_malloc() is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert tune_malloc() is False  # the user's settings stand
