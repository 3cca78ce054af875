"""The size rules of ARCHITECTURE.md, checked: no module over 500 lines, no
class over 200, no function over 60.  A part that outgrows them is split
where its concerns part, not trimmed to pass."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_miabench"
LIMITS = {"module": 500, "class": 200, "function": 60}


def sizes(path: Path) -> list[tuple[str, str, int]]:
    """(kind, name, lines) of the module and of every class and function in it."""
    source = path.read_text(encoding="utf-8")
    found = [("module", path.name, len(source.splitlines()))]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            assert node.end_lineno is not None
            found.append((kind, node.name, node.end_lineno - node.lineno + 1))
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_part_outgrows_its_limit(path: Path) -> None:
    over = [f"{kind} {name}: {lines} lines (limit {LIMITS[kind]})" for kind, name, lines in sizes(path) if lines > LIMITS[kind]]
    assert not over, over


def test_the_measure_counts_what_it_claims(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    body = "\n".join(f"        x{i} = {i}" for i in range(61))
    module.write_text(f"class C:\n    def f(self):\n{body}\n", encoding="utf-8")
    found = {(kind, name): lines for kind, name, lines in sizes(module)}
    assert found == {("module", "m.py"): 63, ("class", "C"): 63, ("function", "f"): 62}
