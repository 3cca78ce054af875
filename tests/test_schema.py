"""The JSON report's published schema (pytest_miabench/reporting/report.schema.json):
generated from the models, current, and strict enough to reject a wrong report."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError
from support.reportcheck import report_errors

from conftest import Bench
from pytest_miabench.reporting.baseline import shape_problem
from pytest_miabench.reporting.report import dumps_report
from pytest_miabench.reporting.schema import SCHEMA_FILE, SCHEMA_ID, Report, main, report_schema, schema_text


def test_the_committed_schema_is_the_one_the_models_generate() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), "stale: run `python -m pytest_miabench.reporting.schema`"


def test_the_regeneration_command_writes_the_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "out.json")]) == 0
    assert (tmp_path / "out.json").read_text(encoding="utf-8") == schema_text()
    assert capsys.readouterr().out.strip() == str(tmp_path / "out.json")


def _properties(schema: Any) -> list[tuple[str, Any]]:
    """Every (name, subschema) of an object's properties, anywhere in the schema."""
    found: list[tuple[str, Any]] = []
    if isinstance(schema, dict):
        found += list((schema.get("properties") or {}).items())
        for value in schema.values():
            found += _properties(value)
    elif isinstance(schema, list):
        for value in schema:
            found += _properties(value)
    return found


def test_the_schema_is_valid_identified_and_documents_every_field() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema" and schema["$id"] == SCHEMA_ID
    assert schema["title"] == "pytest-miabench JSON report" and schema["properties"]["schema_version"]["const"] == 1
    undocumented = [name for name, sub in _properties(schema) if not sub.get("description")]
    assert not undocumented
    assert schema["additionalProperties"] is False and set(schema["required"]) == set(schema["properties"])


def test_the_reading_check_names_the_field_and_what_is_wrong() -> None:
    assert shape_problem({"total_score": "0.8"}) == "total_score is '0.8', not a number"
    assert shape_problem({"by_type": {"advanced": "x"}}) == "by_type.advanced is 'x', not a number"
    assert shape_problem({"samples": "oops"}) == "samples is 'oops', not a list"
    assert shape_problem({"samples": [{"index": "0", "score": 1}]}) == "samples.0.index is '0', not an integer"
    assert shape_problem({"samples": [{"score": 1}]}) == "samples.0.index is missing"
    assert shape_problem({"samples": [{"index": 7, "image": {"sha256": 5}}]}) == "sample 7: image.sha256 is 5, not text"
    assert shape_problem({"model": {"api": "soap"}}) == "model.api is 'soap', not 'chat' or 'responses'"
    # Keys an older report lacks, or a newer one adds, are let be.
    assert shape_problem({"schema_version": 1, "total_score": 0.5, "added_later": True, "samples": [{"index": 1}]}) is None


def _schema_errors(report: dict[str, Any]) -> list[str]:
    return [error.message for error in jsonschema.Draft202012Validator(report_schema()).iter_errors(report)]


def test_a_report_with_a_field_of_the_wrong_type_is_rejected_by_the_schema_and_the_models(bench: Bench, tmp_path: Path) -> None:
    assert bench.run("--mia-limit=2", "--mia-protocol=evalscope,apple").ret == 0
    good = bench.report()
    assert _schema_errors(good) == []
    Report.model_validate(good)
    index = good["samples"][1]["index"]
    for edit, message in (
        (lambda r: r["samples"][1]["protocols"]["apple"].update(score="0.5"), f"sample {index}: protocols.apple.score is '0.5', not a number"),
        (lambda r: r["model"].update(max_tokens=1.5), "model.max_tokens is 1.5, not an integer"),
        (lambda r: r.update(passed="yes"), "passed is 'yes', not true or false"),
    ):
        bad = copy.deepcopy(good)
        edit(bad)
        assert len(_schema_errors(bad)) == 1
        with pytest.raises(ValidationError):
            Report.model_validate(bad)
        assert shape_problem(bad) == message
    # The written report lacks no key and adds none: both are schema errors.
    for bad in ({k: v for k, v in good.items() if k != "usage"}, {**good, "extra": 1}):
        assert len(_schema_errors(bad)) == 1
        with pytest.raises(ValidationError):
            Report.model_validate(bad)


def test_the_session_check_finds_a_written_report_the_schema_rejects(bench: Bench, tmp_path: Path) -> None:
    assert bench.run("--mia-limit=1").ret == 0
    good = bench.report()
    assert report_errors(bench.pytester.path) == []
    broken = {**good, "n_samples": "1"}
    (tmp_path / "written.json").write_text(dumps_report(broken), encoding="utf-8")  # type: ignore[arg-type]
    # A test's hand-edited baseline (json.dumps) is meant to be broken: left alone.
    (tmp_path / "edited.json").write_text(json.dumps(broken), encoding="utf-8")
    try:
        (problem,) = report_errors(tmp_path)
    finally:
        (tmp_path / "written.json").unlink()  # or the session's own check fails on it
    assert problem.startswith(f"{tmp_path / 'written.json'}: n_samples: ") and "'1' is not of type 'integer'" in problem
