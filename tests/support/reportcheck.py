"""Every JSON report a test run wrote, checked against the published schema.

A report is recognised by its top-level fields (``schema_version``,
``plugin_version``, ``samples``) and by being the plugin's own writing: the
file is exactly what ``dumps_report`` writes for its content.  The reports
tests edit by hand to feed ``--mia-baseline`` broken input (written with
``json.dumps``) are left alone: they are meant to be invalid.

The plugin's modules are imported only when the check runs, at the session's
end: imported at conftest time they would outlive pytester's in-process runs,
which re-import the rest of the plugin, and the run's modules would no longer
share one copy of each (records in flight went missing from reports so).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

REPORT_KEYS = frozenset({"schema_version", "plugin_version", "samples"})


@cache
def _validator() -> jsonschema.protocols.Validator:
    from pytest_miabench.reporting.schema import SCHEMA_FILE

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _regular_json_files(root: Path) -> Iterator[Path]:
    """*.json regular files under ``root``: no link is followed and no FIFO
    or device opened (tests make them to write reports through)."""
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            if name.endswith(".json") and stat.S_ISREG(os.lstat(path).st_mode):
                yield path


def _written_report(path: Path) -> dict[str, Any] | None:
    """The report in ``path`` when the plugin wrote it, else None."""
    from pytest_miabench.reporting.report import dumps_report

    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, ValueError):
        return None
    if not (isinstance(data, dict) and REPORT_KEYS <= data.keys()):
        return None
    return data if dumps_report(data) == text else None  # type: ignore[arg-type]


def report_errors(root: Path) -> list[str]:
    """One line per written report under ``root`` that the schema rejects: its path and the error."""
    problems = []
    for path in _regular_json_files(root):
        data = _written_report(path)
        if data is None:
            continue
        error = jsonschema.exceptions.best_match(_validator().iter_errors(data))
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
            problems.append(f"{path}: {where}: {error.message}")
    return problems
