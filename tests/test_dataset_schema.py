"""A missing column or a column of the wrong type is one usage error naming
the column, what was expected and what was found; a null or empty value in
a column of the right type stays that row's own problem."""

from __future__ import annotations

import base64
import fnmatch
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import data

from pytest_miabench.data import dataset, samples


@pytest.fixture(scope="module")
def few(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(row) for row in rows[:5]]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory, few: list[dict[str, Any]]) -> pa.Table:
    """Five real rows as ``datasets`` writes them."""
    images = [data.image_bytes("jpeg", 40, 30, seed=i) for i in range(len(few))]
    hub = data.write_hub_dataset(tmp_path_factory.mktemp("schema") / "hub", few, images)
    return pq.read_table(next((hub / "data").glob("*.parquet")))


def _write_table(path: Path, table: pa.Table, change: dict[str, pa.Array | None]) -> Path:
    """``table`` with columns replaced (or dropped: None), written by pyarrow."""
    for name, column in change.items():
        index = table.schema.get_field_index(name)
        table = table.remove_column(index) if column is None else table.set_column(index, name, column)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _error(source: Path | str) -> str:
    with pytest.raises(samples.DatasetError) as info:
        dataset.load(str(source), "test")
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"instruction": pa.array(range(5))}, "column 'instruction': expected string, found int64"),
        ({"type": pa.array([1.5] * 5)}, "column 'type': expected string, found double"),
        ({"num_of_component": pa.array(["three"] * 5)}, "column 'num_of_component': expected integer, found string"),
        ({"components": pa.array(["a, b"] * 5)}, "column 'components': expected list of strings, found string"),
        ({"component_weight": pa.array([["1", "2"]] * 5)}, "column 'component_weight': expected list of integers, found list<*: string>"),
        ({"component_type": pa.array([[1, 2]] * 5)}, "column 'component_type': expected list of strings, found list<*: int64>"),
        ({"image": pa.array(range(5))}, "column 'image': expected an image: struct {bytes: binary, path: string} as datasets writes it, binary, or a string path, found int64"),
        ({"components": None}, "column 'components' is missing (expected list of strings) (columns: component_type, component_weight, image, instruction, num_of_component, type)"),
        ({"image": None}, "column 'image' is missing (expected an image: *) (columns: *)"),
    ],
    ids=["instruction-int", "type-float", "count-string", "components-string", "weights-strings", "ctypes-ints", "image-int", "no-components", "no-image"],
)
def test_a_parquet_column_of_the_wrong_type_or_missing_is_one_error(
    tmp_path: Path, table: pa.Table, change: dict[str, pa.Array | None], expected: str
) -> None:
    path = _write_table(tmp_path / "bench.parquet", table, change)
    message = _error(path)
    assert fnmatch.fnmatchcase(message, f"{path}: {expected}"), message


def test_every_schema_problem_is_named_in_the_one_error(tmp_path: Path, table: pa.Table, few: list[dict[str, Any]]) -> None:
    path = _write_table(tmp_path / "bench.parquet", table, {"instruction": pa.array(range(5)), "component_type": None})
    message = _error(path)
    assert "column 'component_type' is missing (expected list of strings)" in message
    assert "column 'instruction': expected string, found int64" in message


def test_optional_and_empty_columns_stay_per_row(tmp_path: Path, table: pa.Table, few: list[dict[str, Any]]) -> None:
    """num_of_component may be absent; a column with no values at all (null
    type) or a null in a typed column is the row's problem, as before."""
    nulls = pa.array([None, *[r["instruction"] for r in few[1:]]], pa.string())
    path = _write_table(tmp_path / "bench.parquet", table, {"num_of_component": None, "instruction": nulls, "type": pa.nulls(5)})
    source = dataset.load(str(path), "test")
    assert [s.problem for s in source.samples] == ["row 0: instruction is empty or missing"] + [f"row {i}: type is empty or missing" for i in range(1, 5)]


def test_a_whole_float_count_and_dictionary_strings_are_accepted(tmp_path: Path, table: pa.Table, few: list[dict[str, Any]]) -> None:
    """What pandas writes: an integer column with gaps as float64, strings dictionary-encoded."""
    declared = pa.array([float(r["num_of_component"]) for r in few])
    types = pa.array([r["type"] for r in few]).dictionary_encode()
    path = _write_table(tmp_path / "bench.parquet", table, {"type": types, "num_of_component": declared})
    source = dataset.load(str(path), "test")
    assert [s.problem for s in source.samples] == [None] * 5
    assert [(s.spec.type, s.spec.weights) for s in source.samples if s.spec] == [(r["type"], tuple(r["component_weight"])) for r in few]


@pytest.mark.parametrize(
    "weights",
    [
        lambda few: [[float(w) for w in r["component_weight"]] for r in few],  # 4.0: whole, and still not an integer column
        lambda few: [[float("nan")] * len(r["component_weight"]) if i == 2 else [float(w) for w in r["component_weight"]] for i, r in enumerate(few)],
    ],
    ids=["whole-floats", "a-nan"],
)
def test_float_or_nan_weights_are_one_error_naming_the_column(tmp_path: Path, table: pa.Table, few: list[dict[str, Any]], weights: Any) -> None:
    path = _write_table(tmp_path / "bench.parquet", table, {"component_weight": pa.array(weights(few))})
    message = _error(path)
    assert fnmatch.fnmatchcase(message, f"{path}: column 'component_weight': expected list of integers, found list<*: double>"), message
    records = [{**row, "image": f"{i}.jpg", "component_weight": w} for i, (row, w) in enumerate(zip(few, weights(few)))]
    json_path = _json(tmp_path / "bench.json", records)  # json writes NaN, as pandas' to_json does not
    assert _error(json_path) == f"{json_path}: column 'component_weight': expected list of integers, found list of float (row 0 and 4 more)"


# -- images given as text: data URIs and base64 -----------------------------------------


def _data_uri(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


@pytest.mark.parametrize("encode", [_data_uri, lambda raw: base64.b64encode(raw).decode(), lambda raw: base64.encodebytes(raw).decode()], ids=["data-uri", "base64", "base64-lines"])
def test_an_image_column_of_base64_text_is_read_as_images(tmp_path: Path, table: pa.Table, few: list[dict[str, Any]], encode: Any) -> None:
    images = [data.image_bytes("png", 40, 30, seed=i) for i in range(len(few))]
    path = _write_table(tmp_path / "bench.parquet", table, {"image": pa.array([encode(raw) for raw in images])})
    source = dataset.load(str(path), "test")
    assert [source.image_bytes(i) for i in range(len(few))] == images
    records = [{**row, "image": encode(raw)} for row, raw in zip(few, images)]
    json_source = dataset.load(str(_json(tmp_path / "bench.json", records)), "test")
    assert [json_source.image_bytes(i) for i in range(len(few))] == images


def test_a_path_is_still_a_path(tmp_path: Path, table: pa.Table, few: list[dict[str, Any]]) -> None:
    """Text that is base64 but not an image, and short enough for a path, is a path."""
    name = "A" * 64  # valid base64 (zero bytes), and a file name
    (tmp_path / name).write_bytes(data.image_bytes("jpeg", 40, 30))
    path = _write_table(tmp_path / "bench.parquet", table, {"image": pa.array([name] * 5)})
    assert dataset.load(str(path), "test").image_bytes(0) == data.image_bytes("jpeg", 40, 30)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("data:image/png;base64," + "A" * 100_001, "row 0: image is a data URI whose base64 cannot be decoded (*): 'data:image/png;base64,AAAA*'... (100023 characters)"),
        ("data:image/png;base64" + "A" * 100_000, "row 0: image is a data URI without a ',' before its data: 'data:image/png;base64AAA*'... (100021 characters)"),
        ("images/" + "x" * 100_000 + ".jpg", "row 0: image file '/*'... (* characters) cannot be read: *"),
        ("../" + "x" * 100_000, "row 0: image path '../xxxx*'... (100003 characters) leads outside the dataset folder: it is '/*'... (* characters), not inside *"),
        # base64 text too long for a path, of no image: bytes that are not an image
        (base64.b64encode(b"not an image" * 10_000).decode(), None),
    ],
    ids=["bad-data-uri", "data-uri-without-comma", "long-path", "long-path-outside", "long-base64-not-an-image"],
)
def test_no_reason_quotes_more_than_a_prefix_of_a_cell(tmp_path: Path, table: pa.Table, cell: str, expected: str | None) -> None:
    path = _write_table(tmp_path / "bench.parquet", table, {"image": pa.array([cell] * 5)})
    source = dataset.load(str(path), "test")
    if expected is None:
        assert source.image_bytes(0) == b"not an image" * 10_000  # decoded; the image check then fails the sample
        return
    with pytest.raises(samples.SampleDataError) as info:
        source.image_bytes(0)
    message = str(info.value)
    assert fnmatch.fnmatchcase(message, expected), message[:500]
    assert len(message) < 600


def test_clip_quotes_a_prefix_only() -> None:
    from pytest_miabench.config.text import clip

    assert clip("short") == "'short'"
    assert clip("x" * 1000) == repr("x" * 80) + "... (1000 characters)"
    assert clip(7) == "'7'"


def test_a_datasets_loaded_column_of_the_wrong_type_is_one_error(tmp_path: Path, table: pa.Table, few: list[dict[str, Any]]) -> None:
    """A directory in a layout only ``datasets`` understands is checked too."""
    other = tmp_path / "other"
    _write_table(other / "test" / "part-0.parquet", table, {"instruction": pa.array(range(5))})
    assert _error(other) == f"{other}: column 'instruction': expected string, found int64"


def _json(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda row, i: row.update(instruction=i), "column 'instruction': expected string, found integer (row 0 and 4 more)"),
        (lambda row, i: row.update(component_weight=["1", "2"]) if i == 3 else None, "column 'component_weight': expected list of integers, found list of string (row 3)"),
        (lambda row, i: row.update(components=[1, "b"]) if i == 2 else None, "column 'components': expected list of strings, found list of integer and string (row 2)"),
        (lambda row, i: row.update(image={"path": "a.jpg"}), "column 'image': expected string (the image file's path), found object (row 0 and 4 more)"),
        (lambda row, i: row.pop("type"), "column 'type' is missing (expected string) (columns: component_type, component_weight, components, image, instruction, num_of_component)"),
    ],
    ids=["instruction-int", "one-row-weights-strings", "one-row-mixed-components", "image-object", "no-type"],
)
def test_a_json_column_of_the_wrong_type_or_missing_is_one_error(tmp_path: Path, few: list[dict[str, Any]], edit: Any, expected: str) -> None:
    records = [{**row, "image": f"{i}.jpg"} for i, row in enumerate(few)]
    for i, record in enumerate(records):
        edit(record, i)
    path = _json(tmp_path / "bench.json", records)
    assert _error(path) == f"{path}: {expected}"


def test_json_nulls_and_missing_keys_in_some_rows_stay_per_row(tmp_path: Path, few: list[dict[str, Any]]) -> None:
    records = [{**row, "image": f"{i}.jpg"} for i, row in enumerate(few)]
    records[1]["instruction"] = None
    del records[2]["components"]
    del records[3]["image"]
    source = dataset.load(str(_json(tmp_path / "bench.json", records)), "test")
    assert [s.problem for s in source.samples[:3]] == [None, "row 1: instruction is empty or missing", "row 2: components is empty or missing"]
    with pytest.raises(samples.SampleDataError, match="row 3: image is missing or empty"):
        source.image_bytes(3)


def test_a_schema_problem_stops_the_run_with_one_usage_error(pytester: pytest.Pytester, tmp_path: Path, table: pa.Table, few: list[dict[str, Any]]) -> None:
    # No server: a usage error comes before any call.
    path = _write_table(tmp_path / "hub" / "data" / "test-00000-of-00001.parquet", table, {"instruction": pa.array(range(5))})
    result = pytester.runpytest("--mia-bench", "--mia-model=vlm", f"--mia-dataset={tmp_path / 'hub'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    named = [line for line in result.stderr.lines + result.stdout.lines if "instruction" in line]
    assert named == [f"ERROR: --mia-dataset: cannot load the MIA-Bench dataset: {path}: column 'instruction': expected string, found int64"]
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
