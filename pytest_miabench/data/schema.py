"""The columns a dataset needs, checked once per file: an arrow schema
(parquet, ``datasets``) or a JSON file's rows.  Every problem is one
``DatasetError`` naming each missing or mistyped column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .samples import DatasetError

TEXT_COLUMNS = ("instruction", "type", "num_of_component", "components", "component_weight", "component_type")


# The columns a row needs, checked once per file (arrow schema) or per JSON
# file (every row's values): a wrong type is the dataset's problem, one usage
# error, not one misleading failure per row.  A null or empty value in a
# column of the right type stays the row's own problem (see make_sample).
@dataclass(frozen=True)
class _Column:
    expected: str  # as the error message says it
    accepted: frozenset[str]  # value kinds, as _arrow_kind and _json_kind name them
    required: bool = True


_COLUMNS = {
    "instruction": _Column("string", frozenset({"string", "null"})),
    "type": _Column("string", frozenset({"string", "null"})),
    # pandas stores an integer column with gaps as float64; whole numbers are checked per row.
    "num_of_component": _Column("integer", frozenset({"integer", "float", "null"}), required=False),
    "components": _Column("list of strings", frozenset({"list of string", "list of null", "null"})),
    # Weights are integers in the benchmark: a float column (4.0, NaN) is
    # the dataset's problem, one error, not one guess or failure per row.
    "component_weight": _Column("list of integers", frozenset({"list of integer", "list of null", "null"})),
    "component_type": _Column("list of strings", frozenset({"list of string", "list of null", "null"})),
}
_IMAGE_ARROW = "an image: struct {bytes: binary, path: string} as datasets writes it, binary, or a string path"
_IMAGE_JSON = _Column("string (the image file's path)", frozenset({"string", "null"}))


def _arrow_kind(type_: Any) -> str:
    import pyarrow as pa

    types = pa.types
    if types.is_dictionary(type_):
        type_ = type_.value_type
    if types.is_null(type_):
        return "null"
    # string_view and binary_view are newer than some supported pyarrow releases
    if any(getattr(types, f"is_{name}", lambda _: False)(type_) for name in ("string", "large_string", "string_view")):
        return "string"
    if any(getattr(types, f"is_{name}", lambda _: False)(type_) for name in ("binary", "large_binary", "binary_view", "fixed_size_binary")):
        return "binary"
    if types.is_boolean(type_):
        return "boolean"
    if types.is_integer(type_):
        return "integer"
    if types.is_floating(type_):
        return "float"
    if not types.is_map(type_) and hasattr(type_, "value_type"):  # list, large_list, fixed_size_list, list_view
        return f"list of {_arrow_kind(type_.value_type)}"
    return str(type_)


def _arrow_image_ok(type_: Any) -> bool:
    import pyarrow as pa

    if _arrow_kind(type_) in ("binary", "string", "null"):
        return True
    if not pa.types.is_struct(type_):
        return False
    fields = {type_.field(i).name: _arrow_kind(type_.field(i).type) for i in range(type_.num_fields)}
    return (
        ("bytes" in fields or "path" in fields)
        and fields.get("bytes", "null") in ("binary", "null")
        and fields.get("path", "null") in ("string", "null")
    )


def _check_arrow_schema(where: str, schema: Any) -> None:
    """Raise DatasetError naming every missing or mistyped column."""
    types = {schema.field(i).name: schema.field(i).type for i in range(len(schema))}
    missing, wrong = [], []
    for name, column in _COLUMNS.items():
        if name not in types:
            if column.required:
                missing.append((name, column.expected))
        elif _arrow_kind(types[name]) not in column.accepted:
            wrong.append(f"column {name!r}: expected {column.expected}, found {types[name]}")
    if "image" not in types:
        missing.append(("image", _IMAGE_ARROW))
    elif not _arrow_image_ok(types["image"]):
        wrong.append(f"column 'image': expected {_IMAGE_ARROW}, found {types['image']}")
    _raise_schema_problems(where, missing, wrong, set(types))


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        inner = sorted({_json_kind(item) for item in value} - {"null"})
        return "list of " + (" and ".join(inner) or "null")
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_json_rows(where: str, rows: list[dict[str, Any]]) -> None:
    """JSON has no schema: a column is what its rows hold.  A key no row has
    is a missing column; a value of the wrong type in any row is a mistyped
    column (pyarrow and ``datasets`` refuse such a file outright too)."""
    if not rows:
        return
    missing, wrong = [], []
    for name, column in [*_COLUMNS.items(), ("image", _IMAGE_JSON)]:
        present = [i for i, row in enumerate(rows) if name in row]
        if not present:
            if column.required:
                missing.append((name, column.expected))
            continue
        bad = [(i, kind) for i in present if (kind := _json_kind(rows[i][name])) not in column.accepted]
        if bad:
            first, kind = bad[0]
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            wrong.append(f"column {name!r}: expected {column.expected}, found {kind} (row {first}{more})")
    _raise_schema_problems(where, missing, wrong, {key for row in rows for key in row})


def _raise_schema_problems(where: str, missing: list[tuple[str, str]], wrong: list[str], columns: set[str]) -> None:
    """One error, one line, every problem in it: fixing them one run at a time is slow."""
    problems = [f"column {name!r} is missing (expected {expected})" for name, expected in missing] + wrong
    if problems:
        listing = f" (columns: {', '.join(sorted(columns))})" if missing else ""
        raise DatasetError(f"{where}: {'; '.join(problems)}{listing}")
