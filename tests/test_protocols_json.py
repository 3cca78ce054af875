"""evalscope-json details (§5.3): the object scanner and the schema, checked
against the behaviour of evalscope's own pieces (its ``_payloads`` scan and a
pydantic model built as its ``_build_grade_schema`` builds it)."""

from __future__ import annotations

import json
import math

import pytest

from pytest_miabench.protocols import EXCLUDED, SCORED, SampleSpec
from pytest_miabench.protocols.evalscope_json import EvalscopeJsonProtocol, json_objects, lax_float, validate

SPEC = SampleSpec(0, "x", "advanced", ("a", "b", "c"), (4, 3, 3), ("describe", "length_limit", "linguistics"))
OK = '"component_1":4,"component_2":3,"component_3":3'


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("no braces at all", 0),
        ("{}", 1),
        ('{"a": "} {"}', 1),  # braces inside strings do not count
        ('{"a": "\\"}"}', 1),  # an escaped quote does not end the string
        ('[{"a":1}]', 1),  # brackets are not tracked
        ('{"a":1} and {"b":2}', 2),
        ("<think>{draft}</think>{}", 2),
        ("} {}", 1),  # a stray closing brace at depth 0 is ignored
        ("{unclosed", 0),
    ],
)
def test_scanner(text: str, count: int) -> None:
    assert len(json_objects(text)) == count


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        ("{" + OK + "}", SCORED),
        ('[{' + OK + '}]', SCORED),
        ('{"reasoning":"uses {braces} and \\"quotes\\"",' + OK + "}", SCORED),
        ('```json\n{"reasoning":"ok",' + OK + '}\n```\nThat is my grade.', SCORED),
        ('{"reasoning":"a",' + OK + ',"component_1":5}', EXCLUDED),  # duplicate key: the last one wins
        ('{"reasoning":5,' + OK + "}", EXCLUDED),  # reasoning must be a string
        ('{"reasoning":null,' + OK + "}", EXCLUDED),
        ('{"component_1":NaN,"component_2":3,"component_3":3}', EXCLUDED),
        ('{"component_1":null,"component_2":3,"component_3":3}', EXCLUDED),
        ("{component_1: 4}", EXCLUDED),  # not JSON
        ("<think>{draft}</think>{" + OK + "}", SCORED),  # evalscope removes the think block first
        ("<think draft>{draft}</think>{" + OK + "}", EXCLUDED),  # not a form it removes: two objects
        ("", EXCLUDED),
        (None, EXCLUDED),
        ("   ", EXCLUDED),
    ],
    ids=lambda v: repr(v)[:40] if isinstance(v, (str, type(None))) else v,
)
def test_reply_statuses(reply: str | None, status: str) -> None:
    assert EvalscopeJsonProtocol().parse(SPEC, reply).status == status


def test_bounds_are_inclusive() -> None:
    verdict = EvalscopeJsonProtocol().parse(SPEC, '{"component_1":0,"component_2":3.0,"component_3":"0"}')
    assert (verdict.status, verdict.score, verdict.components) == (SCORED, pytest.approx(0.3), (0.0, 1.0, 0.0))


# Values as json.loads can produce them, for a component weighing 4.
VALUES = [
    4, 0, 3.5, -0.0, 4.0000001, -1, 5, True, False, None, [], {}, [4],
    "4", " 4 ", "4.0", "1e0", "+4", "-0", ".5", "3.", "\u00a02", "2\u3000", "\t2\n",
    "0x4", "4/4", "", " ", "\u0664", "\uff14", "inf", "nan", "-inf", "Infinity", "1e400", "2 .0", "4_0", "0_1",
    float("nan"), float("inf"), 10**400, 2**53 + 1,
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_schema_matches_pydantic(value: object) -> None:
    pydantic = pytest.importorskip("pydantic")
    model = pydantic.create_model(
        "MiaGrade",
        reasoning=(str, pydantic.Field(default="")),
        component_1=(float, pydantic.Field(ge=0.0, le=4.0)),
    )
    try:
        expected: float | None = model.model_validate({"component_1": value}).component_1
    except pydantic.ValidationError:
        expected = None
    try:
        actual: float | None = validate({"component_1": value}, (4,))[0]
    except ValueError:
        actual = None
    assert actual == expected or (actual is not None and expected is not None and math.isclose(actual, expected))


def test_lax_float_refuses_fractions_and_non_ascii_digits() -> None:
    assert lax_float("3") == 3.0
    for bad in ("4/4", "\u0664", None, [1]):
        with pytest.raises(ValueError):
            lax_float(bad)


def test_judge_total_is_ignored() -> None:
    reply = json.dumps({"reasoning": "r", "component_1": 2, "component_2": 3, "component_3": 3, "total_score": 10})
    assert EvalscopeJsonProtocol().parse(SPEC, reply).score == pytest.approx(0.8)
