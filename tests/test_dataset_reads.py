"""Reading images from a dataset: from parquet each image is decoded once
whatever order samples ask in, with memory that does not grow with the
dataset; and images given as file paths come from the dataset's folder only."""

from __future__ import annotations

import base64
import json
import math
import os
import random
import sys
import threading
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import data
from support.server import OpenAIServer, Reply, Request

from conftest import Bench
from pytest_miabench.data import dataset, parquet, samples

N_ROWS = 300
GROUP_ROWS = 24  # a multiple of BATCH, so many small groups cost no more batches than one big one


def _rows(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return [rows[i % len(rows)] for i in range(n)]


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return [data.image_bytes("jpeg", 40, 30, seed=i) for i in range(N_ROWS)]


@pytest.fixture(scope="module", params=["datasets, one row group", "pyarrow, row groups of 24"])
def parquet_dataset(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]], images: list[bytes]) -> Path:
    root = tmp_path_factory.mktemp("reads")
    if request.param.startswith("datasets"):
        hub = data.write_hub_dataset(root / "hub", _rows(rows, N_ROWS), images)
        assert pq.ParquetFile(next((hub / "data").glob("*.parquet"))).num_row_groups == 1  # what datasets writes
        return hub
    path = data.write_parquet_pyarrow(root / "groups.parquet", _rows(rows, N_ROWS), images, row_group_size=GROUP_ROWS)
    assert pq.ParquetFile(path).num_row_groups == math.ceil(N_ROWS / GROUP_ROWS)
    return path


def in_order(n: int, rng: random.Random) -> list[int]:
    return list(range(n))


def windows_shuffled(n: int, rng: random.Random) -> list[int]:
    """Nearly in order, as the engine asks: look-ahead windows, two image threads."""
    order: list[int] = []
    for start in range(0, n, 32):
        window = list(range(start, min(start + 32, n)))
        rng.shuffle(window)
        order += window
    return order


def shuffled(n: int, rng: random.Random) -> list[int]:
    order = list(range(n))
    rng.shuffle(order)
    return order


def twice(n: int, rng: random.Random) -> list[int]:
    """A rerun asks every row again."""
    return list(range(n)) + shuffled(n, rng)


def _parquet_source(path: Path) -> parquet._ParquetSource:
    source = dataset.load(str(path), "test")
    assert isinstance(source, parquet._ParquetSource)
    return source


@pytest.mark.parametrize("order", [in_order, windows_shuffled, shuffled, twice])
def test_every_image_is_decoded_once_in_any_order(parquet_dataset: Path, images: list[bytes], order: Callable[[int, random.Random], list[int]]) -> None:
    source = _parquet_source(parquet_dataset)
    for index in order(N_ROWS, random.Random(11)):
        assert source.image_bytes(index) == images[index], index
    # One decode of each batch; restarting a row group's batches from its
    # first row for a row behind the cursor costs ~2800 for a shuffled order.
    assert source.batches_decoded <= math.ceil(N_ROWS / source.BATCH) + 2


def test_two_threads_read_a_shuffled_order(parquet_dataset: Path, images: list[bytes]) -> None:
    source = _parquet_source(parquet_dataset)
    order = shuffled(N_ROWS, random.Random(5))
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(source.image_bytes, order))
    assert got == [images[i] for i in order]
    assert source.batches_decoded <= math.ceil(N_ROWS / source.BATCH) + 2


def test_memory_does_not_hold_the_images(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows read out of order are kept on disk, not in memory: a shuffled read
    of 8 MB of images holds less than a quarter of that at any moment."""
    rng = random.Random(3)
    big = [rng.randbytes(64_000) for _ in range(128)]  # incompressible: the file is as big as the images
    hub = data.write_hub_dataset(tmp_path / "hub", _rows(rows, len(big)), big)
    source = _parquet_source(hub)
    total = sum(map(len, big))
    arrow_before = pa.total_allocated_bytes()
    tracemalloc.start()
    try:
        for index in shuffled(len(big), rng):
            assert source.image_bytes(index) == big[index]
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert python_peak < total / 4, (python_peak, total)
    assert pa.total_allocated_bytes() - arrow_before < total / 4
    assert source.batches_decoded == len(big) // source.BATCH


# -- image paths stay inside the dataset ------------------------------------

CANARY = b"root:x:0:0:canary-from-outside-the-dataset\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the dataset, with a non-image file a path may aim at."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "passwd").write_bytes(CANARY)
    (folder / "real.jpg").write_bytes(data.image_bytes("jpeg", seed=9))
    return folder


def _escaping_json(root: Path, rows: list[dict[str, Any]], outside: Path) -> Path:
    """Rows 0-2 escape the folder (``..``, absolute, a symlink); row 3 is a
    symlink inside it, row 4 a plain file."""
    root.mkdir()
    (root / "images").mkdir()
    (root / "images" / "leak.jpg").symlink_to(outside / "passwd")
    (root / "images" / "own.jpg").write_bytes(data.image_bytes("jpeg", seed=4))
    (root / "images" / "alias.jpg").symlink_to(root / "images" / "own.jpg")
    refs = ["../outside/passwd", str(outside / "passwd"), "images/leak.jpg", "images/alias.jpg", "images/own.jpg"]
    records = [{**row, "image": ref} for row, ref in zip(rows, refs)]
    path = root / "bench.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_json_image_paths_outside_the_dataset_folder_are_refused(tmp_path: Path, rows: list[dict[str, Any]], outside: Path) -> None:
    path = _escaping_json(tmp_path / "json", rows, outside)
    source = dataset.load(str(path), "test")
    own = (tmp_path / "json" / "images" / "own.jpg").read_bytes()
    assert source.image_bytes(3) == own and source.image_bytes(4) == own
    for index in range(3):
        with pytest.raises(samples.SampleDataError) as info:
            source.image_bytes(index)
        message = str(info.value)
        assert message.startswith(f"row {index}: image path ") and "outside the dataset folder" in message
        assert "--mia-image-root=DIR" in message
        assert "canary" not in message and "root:x" not in message

    # The extra root allows exactly that folder.
    allowed = dataset.load(str(path), "test", image_root=str(outside))
    assert [allowed.image_bytes(i) for i in range(3)] == [CANARY] * 3
    with pytest.raises(samples.DatasetError, match="--mia-image-root .*: not a directory"):
        dataset.load(str(path), "test", image_root=str(outside / "passwd"))


def test_an_unresolvable_image_path_is_the_rows_problem(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    root = tmp_path / "json"
    root.mkdir()
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    records = [{**rows[0], "image": "bad\x00name.jpg"}, {**rows[1], "image": "loop.jpg"}]
    (root / "bench.json").write_text(json.dumps(records), encoding="utf-8")
    source = dataset.load(str(root / "bench.json"), "test")
    for index in (0, 1):
        with pytest.raises(samples.SampleDataError, match=rf"row {index}: image "):
            source.image_bytes(index)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_refused_not_read(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    root = tmp_path / "json"
    root.mkdir()
    pipe = root / "pipe.jpg"
    os.mkfifo(pipe)  # reading it waits for a writer, forever if none comes
    (root / "bench.json").write_text(json.dumps([{**rows[0], "image": "pipe.jpg"}]), encoding="utf-8")
    source = dataset.load(str(root / "bench.json"), "test")
    stop = threading.Event()

    def writer() -> None:
        # Feeds a reader if one ever opens the pipe, so a reader does not hang the test.
        while not stop.is_set():
            try:
                fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while nobody reads
            except OSError:
                stop.wait(0.01)
                continue
            os.write(fd, CANARY)
            os.close(fd)
            return

    feeding = threading.Thread(target=writer)
    feeding.start()
    try:
        with pytest.raises(samples.SampleDataError, match=r"row 0: image path 'pipe.jpg' is not a regular file"):
            source.image_bytes(0)
    finally:
        stop.set()
        feeding.join()


def test_parquet_image_paths_are_read_inside_the_dataset_folder_only(tmp_path: Path, rows: list[dict[str, Any]], outside: Path) -> None:
    root = tmp_path / "pq"
    (root / "images").mkdir(parents=True)
    own = data.image_bytes("png", seed=2)
    (root / "images" / "own.png").write_bytes(own)
    cells: list[dict[str, Any]] = [
        {"bytes": None, "path": "images/own.png"},  # relative to the dataset's folder, not the working directory
        {"bytes": None, "path": str(outside / "passwd")},
        {"bytes": None, "path": "../outside/real.jpg"},
        {"bytes": None, "path": None},
    ]
    path = data.write_parquet_pyarrow(root / "bench.parquet", rows[:4], cells)
    source = dataset.load(str(path), "test")
    assert source.image_bytes(0) == own
    for index in (1, 2):
        with pytest.raises(samples.SampleDataError, match=rf"row {index}: image path .* leads outside the dataset folder"):
            source.image_bytes(index)
    with pytest.raises(samples.SampleDataError, match="row 3: image is missing or empty"):
        source.image_bytes(3)
    allowed = dataset.load(str(path), "test", image_root=str(outside))
    assert allowed.image_bytes(1) == CANARY
    assert allowed.image_bytes(2) == (outside / "real.jpg").read_bytes()


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_a_run_never_sends_or_reports_a_file_from_outside(pytester: pytest.Pytester, tmp_path: Path, rows: list[dict[str, Any]], outside: Path) -> None:
    path = _escaping_json(tmp_path / "json", rows, outside)

    def reply(request: Request) -> Reply:
        if request.role == "judge":
            return Reply("score of component 1: 4/4, score of component 2: 2/3, total score: 8/10.")
        return Reply("An answer.")

    with OpenAIServer(reply, judge_model="judge") as server:
        bench = Bench(pytester, server, path)
        result = bench.run("-p", "no:cacheprovider", f"--junitxml={pytester.path / 'junit.xml'}")
        result.assert_outcomes(passed=2, failed=3)
        result.stdout.fnmatch_lines_random([f"*sample 000{i} *: row {i}: image path * leads outside the dataset folder*" for i in range(3)])
        assert len(server.by_role("model")) == 2
        sent = b"".join(request.raw for request in server.requests)
    for text in (result.stdout.str(), result.stderr.str(), bench.report_path.read_text(), (pytester.path / "junit.xml").read_text()):
        assert "canary" not in text and "root:x" not in text
    assert b"canary" not in sent and base64.b64encode(CANARY)[:16] not in sent
