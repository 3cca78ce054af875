"""What keeps a run lean, checked as behaviour (no timings): images are read
page by page, the report is written one line per sample."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from support import data

from conftest import Bench
from pytest_miabench.data import dataset as dataset_mod

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
