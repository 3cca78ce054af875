"""Parity vectors of the protocol reference (§6), per protocol, plus
``aggregate`` on small hand-computed sets.

Judge texts are the reference's abridged vectors written out in full; the
continuation after the score sentence is free prose that contains no score
pattern (the regex parsers read the whole reply).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pytest_miabench.protocols import DROPPED, EXCLUDED, SCORED, ZERO, SampleSpec, builtin_protocols

PROTOCOLS = builtin_protocols()

# Row shapes of §6: weights [4,3,3]; component texts from rows 0 and 11 of the real file.
ROW_A = SampleSpec(
    0,
    "Explain the activity taking place in the image using exactly two sentences, including one metaphor.",
    "advanced",
    ("Explain the activity taking place in the image", "using exactly two sentences", "including one metaphor"),
    (4, 3, 3),
    ("describe", "length_limit", "linguistics"),
)
ROW_B = SampleSpec(
    11,
    "Provide a critique of the ergonomic setup visible in the image, suggesting three improvements ...",
    "complex",
    (
        "Provide a critique of the ergonomic setup visible in the image",
        "suggesting three improvements that could be made for better posture and work habits",
        "without directly stating anything that is visible in the picture",
    ),
    (4, 3, 3),
    ("describe", "mention", "mention"),
)
ROW_255 = SampleSpec(
    255,
    "Craft a sentence ...",
    "intermediate",
    (
        "Craft a sentence that starts with the word shown on the botton the user is clicking on",
        "contains only words of even number of characters. ",
    ),
    (5, 5),
    ("grammar", "grammar"),
)
ROW_286 = SampleSpec(
    286,
    "Imagine a backstory ...",
    "creative",
    ("Imagine a backstory", "including what led up", "in a fictional vignette", "three-sentence", "without bar"),
    (4, 2, 1, 2, 1),
    ("describe", "mention", "linguistics", "length_limit", "mention"),
)

THIRD = 1 / 3
TWO_THIRDS = 2 / 3
TAIL = " The response describes the scene well, but the metaphor is weak and only loosely connected to the image."


@dataclass(frozen=True)
class Vector:
    id: str
    row: SampleSpec
    text: str
    # Apple / VLMEvalKit: None = dropped, else the full metrics dict (types + total_score).
    original: dict[str, float] | None
    # lmms-eval and evalscope 1.5.2-1.10: per-sample score, per-position component values.
    lmms: float
    lmms_components: tuple[float, ...]
    evalscope: float
    evalscope_components: tuple[float, ...]
    regex_status: str = SCORED
    original_components: tuple[float | None, ...] = field(default=())


VECTORS = [
    Vector(
        "01-canonical",
        ROW_A,
        "score of component 1: 4/4, score of component 2: 3/3, score of component 3: 2/3, total score: 9/10." + TAIL,
        {"describe": 1.0, "length_limit": 1.0, "linguistics": TWO_THIRDS, "total_score": 0.9},
        0.9, (1.0, 1.0, TWO_THIRDS), 0.9, (1.0, 1.0, TWO_THIRDS),
        original_components=(1.0, 1.0, TWO_THIRDS),
    ),
    Vector(
        "02-markdown-bold",
        ROW_A,
        "**score of component 1: 4/4**, **score of component 2: 3/3**, **score of component 3: 2/3**, "
        "**total score: 9/10**." + TAIL,
        None, 0.9, (1.0, 1.0, TWO_THIRDS), 0.9, (1.0, 1.0, TWO_THIRDS),
    ),
    Vector(
        "03-no-space-after-colon",
        ROW_A,
        "score of component 1:4/4, score of component 2:3/3, score of component 3:2/3, total score:9/10." + TAIL,
        None, 0.9, (1.0, 1.0, TWO_THIRDS), 0.9, (1.0, 1.0, TWO_THIRDS),
    ),
    Vector(
        "04-decimals",
        ROW_A,
        "score of component 1: 3.5/4, score of component 2: 3/3, score of component 3: 3/3, total score: 9.5/10." + TAIL,
        None, 1.0, (0.0, 1.0, 1.0), 1.0, (0.0, 1.0, 1.0),
    ),
    Vector(
        "05-newline-separated",
        ROW_A,
        "Score of component 1: 4/4\nScore of component 2: 3/3\nScore of component 3: 0/3\nTotal score: 7/10",
        None, 0.7, (1.0, 1.0, 0.0), 0.7, (1.0, 1.0, 0.0),
    ),
    Vector(
        "06-preamble-sentence",
        ROW_A,
        "Here is my evaluation. score of component 1: 4/4, score of component 2: 3/3, score of component 3: 3/3, "
        "total score: 10/10." + TAIL,
        None, 1.0, (1.0, 1.0, 1.0), 1.0, (1.0, 1.0, 1.0),
    ),
    Vector(
        "07-no-total",
        ROW_A,
        "score of component 1: 4/4, score of component 2: 0/3, score of component 3: 3/3. Reasons: the answer uses "
        "three sentences instead of two.",
        {"describe": 1.0, "length_limit": 0.0, "total_score": 1.0},
        TWO_THIRDS, (1.0, 0.0, 1.0), TWO_THIRDS, (1.0, 0.0, 1.0),
        original_components=(1.0, 0.0, None),
    ),
    Vector(
        "08-inconsistent-total",
        ROW_A,
        "score of component 1: 4/4, score of component 2: 0/3, score of component 3: 3/3, total score: 9/10." + TAIL,
        {"describe": 1.0, "length_limit": 0.0, "linguistics": 1.0, "total_score": 0.9},
        0.9, (1.0, 0.0, 1.0), 0.9, (1.0, 0.0, 1.0),
        original_components=(1.0, 0.0, 1.0),
    ),
    Vector(
        "09-copied-example-denominators",
        ROW_A,
        "score of component 1: 2/2, score of component 2: 6/8, total score: 8/10." + TAIL,
        {"describe": 1.0, "length_limit": 0.75, "total_score": 0.8},
        0.8, (1.0, 0.75, 0.0), 0.8, (1.0, 0.75, 0.0),
        original_components=(1.0, 0.75, None),
    ),
    Vector(
        "10-total-over-max",
        ROW_A,
        "score of component 1: 4/4, score of component 2: 3/3, score of component 3: 3/3, total score: 11/10." + TAIL,
        {"describe": 1.0, "length_limit": 1.0, "linguistics": 1.0, "total_score": 1.1},
        1.0, (1.0, 1.0, 1.0), 1.0, (1.0, 1.0, 1.0),
        original_components=(1.0, 1.0, 1.0),
    ),
    Vector(
        "11-semicolons",
        ROW_A,
        "score of component 1: 4/4; score of component 2: 3/3; score of component 3: 3/3; total score: 10/10." + TAIL,
        None, 1.0, (1.0, 1.0, 1.0), 1.0, (1.0, 1.0, 1.0),
    ),
    Vector("12-empty", ROW_A, "", None, 0.0, (0.0, 0.0, 0.0), 0.0, (0.0, 0.0, 0.0), regex_status=ZERO),
    Vector(
        "13-trailing-clause",
        ROW_A,
        "score of component 1: 4/4, score of component 2: 3/3, score of component 3: 3/3, total score: 10/10, "
        "great job." + TAIL,
        None, 1.0, (1.0, 1.0, 1.0), 1.0, (1.0, 1.0, 1.0),
    ),
    Vector(
        "14-component-without-score-of",
        ROW_A,
        "component 1: 4/4, component 2: 3/3, component 3: 1/3, total score: 8/10." + TAIL,
        {"describe": 1.0, "length_limit": 1.0, "linguistics": THIRD, "total_score": 0.8},
        0.8, (1.0, 1.0, THIRD), 0.8, (1.0, 1.0, THIRD),
        original_components=(1.0, 1.0, THIRD),
    ),
    Vector(
        "15-quoted-component-first",
        ROW_A,
        "The response says 'score of component 1: 0/4'. score of component 1: 4/4, score of component 2: 3/3, "
        "score of component 3: 3/3, total score: 10/10." + TAIL,
        None, 1.0, (1.0, 1.0, 1.0), 1.0, (1.0, 1.0, 1.0),
    ),
    Vector(
        "16-quoted-total-first",
        ROW_A,
        "total score: 0/10 appears in quoted response. score of component 1: 4/4, score of component 2: 3/3, "
        "score of component 3: 3/3, total score: 10/10." + TAIL,
        None, 0.0, (1.0, 1.0, 1.0), 0.0, (1.0, 1.0, 1.0),
    ),
    Vector(
        "17-vlmevalkit-api-failure",
        ROW_A,
        "Failed to obtain answer via API. ",
        None, 0.0, (0.0, 0.0, 0.0), 0.0, (0.0, 0.0, 0.0), regex_status=ZERO,
    ),
    Vector(
        "18-duplicate-types",
        ROW_B,
        "score of component 1: 4/4, score of component 2: 0/3, score of component 3: 3/3, total score: 7/10." + TAIL,
        {"describe": 1.0, "mention": 1.0, "total_score": 0.7},
        0.7, (1.0, 0.0, 1.0), 0.7, (1.0, 1.0, 1.0),
        # Per position = the type's value after the overwrite.
        original_components=(1.0, 1.0, 1.0),
    ),
    Vector(
        "19-duplicate-types-no-total",
        ROW_B,
        "score of component 1: 4/4, score of component 2: 0/3, score of component 3: 3/3. Reasons: the critique "
        "names visible objects.",
        {"describe": 1.0, "mention": 0.0, "total_score": 1.0},
        TWO_THIRDS, (1.0, 0.0, 1.0), 1.0, (1.0, 1.0, 1.0),
        original_components=(1.0, 0.0, 0.0),
    ),
]
assert len(VECTORS) == 19


def _approx_tuple(values: tuple[float | None, ...]) -> tuple[object, ...]:
    return tuple(None if v is None else pytest.approx(v) for v in values)


@pytest.mark.parametrize("protocol_name", ["apple", "vlmevalkit"])
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.id)
def test_split_parser_protocols(protocol_name: str, vector: Vector) -> None:
    verdict = PROTOCOLS[protocol_name]().parse(vector.row, vector.text)
    if vector.original is None:
        assert verdict.status == DROPPED
        assert verdict.score is None
        assert verdict.metrics == {}
        assert verdict.components == (None, None, None)
        assert verdict.reason
    else:
        assert verdict.status == SCORED
        assert verdict.score == pytest.approx(vector.original["total_score"])
        assert verdict.metrics == pytest.approx(vector.original)
        assert verdict.components == _approx_tuple(vector.original_components)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.id)
def test_lmms_eval(vector: Vector) -> None:
    verdict = PROTOCOLS["lmms-eval"]().parse(vector.row, vector.text)
    assert verdict.status == vector.regex_status
    assert verdict.score == pytest.approx(vector.lmms)
    assert verdict.metrics == {"total_score": pytest.approx(vector.lmms)}
    assert verdict.components == _approx_tuple(vector.lmms_components)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.id)
def test_evalscope(vector: Vector) -> None:
    verdict = PROTOCOLS["evalscope"]().parse(vector.row, vector.text)
    assert verdict.status == vector.regex_status
    assert verdict.score == pytest.approx(vector.evalscope)
    expected = {"total_score": vector.evalscope}
    for i, (ctype, value) in enumerate(zip(vector.row.component_types, vector.evalscope_components), start=1):
        expected[f"component_{i}_{ctype}"] = value
    assert verdict.metrics == pytest.approx(expected)
    assert verdict.components == _approx_tuple(vector.evalscope_components)


def test_vector_18_evalscope_duplicate_positions_share_the_value() -> None:
    verdict = PROTOCOLS["evalscope"]().parse(ROW_B, VECTORS[17].text)
    assert verdict.metrics["component_2_mention"] == verdict.metrics["component_3_mention"] == 1.0


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.id)
def test_legacy_text_is_excluded_under_evalscope_json(vector: Vector) -> None:
    verdict = PROTOCOLS["evalscope-json"]().parse(vector.row, vector.text)
    assert verdict.status == EXCLUDED
    assert verdict.score is None
    assert verdict.metrics == {}
    assert verdict.reason.startswith("parse_error")


# evalscope >= 1.11 table of §6 (weights [4,3,3]), every row.
JSON_OK = [
    ("plain", '{"reasoning":"ok","component_1":4,"component_2":3,"component_3":2}', 0.9, (1.0, 1.0, TWO_THIRDS)),
    (
        "think-and-fence",
        '<think>hmm</think>\n```json\n{"reasoning": "half marks on length", "component_1": 4, '
        '"component_2": 1.5, "component_3": 3}\n```',
        0.85,
        (1.0, 0.5, 1.0),
    ),
    ("numeric-strings-no-reasoning", '{"component_1":"4","component_2":"3","component_3":"3"}', 1.0, (1.0, 1.0, 1.0)),
    (
        "extra-total-ignored",
        '{"reasoning":"r","component_1":4,"component_2":0,"component_3":3,"total_score":9}',
        0.7,
        (1.0, 0.0, 1.0),
    ),
    (
        "extra-nested-object-ignored",
        '{"reasoning":"r","component_1":4,"component_2":3,"component_3":2,"details":{"c1":"ok","c2":{"x":1}}}',
        0.9,
        (1.0, 1.0, TWO_THIRDS),
    ),
]

JSON_EXCLUDED = [
    ("over-weight", '{"reasoning":"r","component_1":5,"component_2":3,"component_3":3}'),
    ("negative", '{"reasoning":"r","component_1":-1,"component_2":3,"component_3":3}'),
    ("missing-key", '{"reasoning":"r","component_1":4,"component_2":3}'),
    ("fraction-string", '{"reasoning":"r","component_1":"4/4","component_2":3,"component_3":3}'),
    (
        "two-objects",
        '{"component_1":4,"component_2":3,"component_3":3}\n{"component_1":3,"component_2":3,"component_3":3}',
    ),
    ("legacy-text", VECTORS[0].text),
]


@pytest.mark.parametrize(("reply", "score", "components"), [r[1:] for r in JSON_OK], ids=[r[0] for r in JSON_OK])
def test_evalscope_json_scored(reply: str, score: float, components: tuple[float, ...]) -> None:
    verdict = PROTOCOLS["evalscope-json"]().parse(ROW_A, reply)
    assert verdict.status == SCORED
    assert verdict.score == pytest.approx(score)
    assert verdict.components == _approx_tuple(components)
    expected = {"judge_score": score}
    for i, (ctype, value) in enumerate(zip(ROW_A.component_types, components), start=1):
        expected[f"component_{i}_{ctype}"] = value
    assert verdict.metrics == pytest.approx(expected)


@pytest.mark.parametrize("reply", [r[1] for r in JSON_EXCLUDED], ids=[r[0] for r in JSON_EXCLUDED])
def test_evalscope_json_excluded(reply: str) -> None:
    verdict = PROTOCOLS["evalscope-json"]().parse(ROW_A, reply)
    assert (verdict.status, verdict.score, verdict.metrics) == (EXCLUDED, None, {})
    assert verdict.components == (None, None, None)


# --- aggregate --------------------------------------------------------------

FIVE = (
    "score of component 1: 2/4, score of component 2: 2/2, score of component 3: 1/1, score of component 4: 0/2, "
    "score of component 5: 0/1, total score: 5/10." + TAIL
)
GRAMMAR = "score of component 1: 5/5, score of component 2: 1/5, total score: 6/10." + TAIL

# S1..S7, shared by the text protocols.
TEXT_SET = [
    (ROW_A, VECTORS[0].text),  # S1 v1
    (ROW_B, VECTORS[17].text),  # S2 v18
    (ROW_255, GRAMMAR),  # S3 duplicate grammar
    (ROW_A, VECTORS[1].text),  # S4 v2 markdown: dropped by the split parser
    (ROW_286, FIVE),  # S5 five components, mention twice
    (ROW_B, VECTORS[18].text),  # S6 v19
    (ROW_A, ""),  # S7 empty
]

AGGREGATES = {
    # Totals over S1 S2 S3 S5 S6 (S4, S7 dropped); each type over the parsed samples having it.
    "apple": {
        "total_score": (0.9 + 0.7 + 0.6 + 0.5 + 1.0) / 5,
        "describe": (1 + 1 + 0.5 + 1) / 4,
        "length_limit": (1 + 0) / 2,
        "linguistics": (TWO_THIRDS + 1) / 2,
        "mention": (1 + 0 + 0) / 3,  # S2 1 (overwrite), S5 0 (overwrite), S6 0
        "grammar": 0.2,  # one sample, after the overwrite
    },
    # Everything counts, failures as 0; S6 (no total) averages three text keys.
    "lmms-eval": {"total_score": (0.9 + 0.7 + 0.6 + 0.9 + 0.5 + TWO_THIRDS + 0.0) / 7},
    "evalscope": {
        "total_score": (0.9 + 0.7 + 0.6 + 0.9 + 0.5 + 1.0 + 0.0) / 7,
        "component_1_describe": (1 + 1 + 1 + 0.5 + 1 + 0) / 6,
        "component_2_length_limit": (1 + 1 + 0) / 3,
        "component_3_linguistics": (TWO_THIRDS + TWO_THIRDS + 1 + 0) / 4,
        "component_2_mention": (1 + 0 + 1) / 3,  # S5's mention collapsed to component 5's 0
        "component_3_mention": (1 + 1) / 2,
        "component_1_grammar": 0.2,
        "component_2_grammar": 0.2,
        "component_4_length_limit": 0.0,
        "component_5_mention": 0.0,
    },
}
AGGREGATES["vlmevalkit"] = AGGREGATES["apple"]


@pytest.mark.parametrize("protocol_name", ["apple", "vlmevalkit", "lmms-eval", "evalscope"])
def test_aggregate_text_protocols(protocol_name: str) -> None:
    protocol = PROTOCOLS[protocol_name]()
    pairs = [(spec, protocol.parse(spec, text)) for spec, text in TEXT_SET]
    assert protocol.aggregate(pairs) == pytest.approx(AGGREGATES[protocol_name])
    assert protocol.headline in AGGREGATES[protocol_name]


def test_aggregate_evalscope_json() -> None:
    protocol = PROTOCOLS["evalscope-json"]()
    replies = [
        (ROW_A, '{"component_1":4,"component_2":3,"component_3":2}'),
        (ROW_B, '{"component_1":2,"component_2":0,"component_3":3}'),  # positions stay apart
        (ROW_255, '{"component_1":5,"component_2":1}'),
        (ROW_A, VECTORS[0].text),  # legacy text: excluded
        (ROW_286, '{"component_1":2,"component_2":2,"component_3":1,"component_4":0,"component_5":0}'),
        (ROW_A, '{"component_1":5,"component_2":3,"component_3":3}'),  # over weight: excluded
    ]
    pairs = [(spec, protocol.parse(spec, text)) for spec, text in replies]
    assert [v.status for _, v in pairs].count(EXCLUDED) == 2
    assert protocol.aggregate(pairs) == pytest.approx(
        {
            "judge_score": (0.9 + 0.5 + 0.6 + 0.5) / 4,
            "component_1_describe": (1 + 0.5 + 0.5) / 3,
            "component_2_length_limit": 1.0,
            "component_3_linguistics": (TWO_THIRDS + 1) / 2,
            "component_2_mention": (0 + 1) / 2,
            "component_3_mention": 1.0,
            "component_1_grammar": 1.0,
            "component_2_grammar": 0.2,
            "component_4_length_limit": 0.0,
            "component_5_mention": 0.0,
        }
    )
    assert protocol.headline == "judge_score"


def test_aggregate_of_only_failures_is_empty_for_dropping_protocols() -> None:
    for name in ("apple", "vlmevalkit", "evalscope-json"):
        protocol = PROTOCOLS[name]()
        assert protocol.aggregate([(ROW_A, protocol.parse(ROW_A, None))]) == {}
