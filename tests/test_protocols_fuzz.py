"""Each protocol's parser against an executable statement of its reference's
rule (tests/support/reference_rules.py), on judge replies generated from a
grammar that reaches the hard cases: think blocks of every form in every
position (quotes and braces inside, unclosed, nested), numerals of any
length (past the float range and the 4300-digit ``int()`` limit), Unicode
digits, underscores, every Unicode whitespace kind, fenced and truncated
JSON.  Derandomized, so every run checks the same replies."""

from __future__ import annotations

import json
import math
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import reference_rules as ref

from pytest_miabench.protocols import DROPPED, EXCLUDED, SCORED, ZERO, SampleSpec, builtin_protocols

PROTOCOLS = builtin_protocols()

SPECS = [
    SampleSpec(0, "x", "advanced", ("Explain", "two sentences", "one metaphor"), (4, 3, 3), ("describe", "length_limit", "linguistics")),
    # Duplicated types: evalscope and the split parser key by type, lmms-eval by text.
    SampleSpec(11, "x", "complex", ("Critique", "three improvements", "no visible"), (4, 3, 3), ("describe", "mention", "mention")),
    SampleSpec(241, "x", "basic", ("Describe",), (8,), ("describe",)),
]

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# Every character str.isspace() knows (Rust's trim and \s differ on U+001C-U+001F),
# plus look-alikes that are not whitespace.
SPACES = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()] + ["\u200b", "\u180e", "\ufeff"]
space = st.sampled_from(SPACES)
gap = st.lists(st.one_of(st.just(" "), space), max_size=3).map("".join)
gap1 = st.lists(st.one_of(st.just(" "), space), min_size=1, max_size=3).map("".join)

# Lengths around the float overflow (309 digits) and the int() limit (4300).
HUGE_LENGTHS = st.sampled_from([308, 309, 310, 400, 4299, 4300, 4301, 4302])
UNICODE_DIGITS = "\u0660\u0669\u06f3\u0967\uff14\U0001d7ce"


@st.composite
def huge(draw: st.DrawFn) -> str:
    length = draw(HUGE_LENGTHS)
    first = draw(st.sampled_from("01123456789"))  # "0": leading zeros count towards the limit
    return first + draw(st.sampled_from("0123456789")) * (length - 1)


small = st.one_of(st.integers(0, 12).map(str), st.text(alphabet="0123456789" + UNICODE_DIGITS, min_size=1, max_size=3))
number = st.one_of(small, small, small, huge())
label = st.sampled_from(["score of component", "Score Of Component", "component", "COMPONENT", "score of  component"])
total_label = st.sampled_from(["total score", "Total Score", "total\u017fcore", "total \u017fcore", "TOTAL SCORE"])


@st.composite
def component_sentence(draw: st.DrawFn) -> str:
    k = draw(st.one_of(st.sampled_from(["1", "2", "3", "1", "2", "3", "4", "0", "\u0662"]), huge()))
    return f"{draw(label)}{draw(gap1)}{k}{draw(gap)}:{draw(gap)}{draw(number)}{draw(gap)}/{draw(gap)}{draw(number)}"


@st.composite
def total_sentence(draw: st.DrawFn) -> str:
    return f"{draw(total_label)}{draw(gap)}:{draw(gap)}{draw(number)}{draw(gap)}/{draw(gap)}{draw(number)}"


@st.composite
def split_sentence(draw: st.DrawFn) -> str:
    """The notebook's format: "score of component 1: x/W, ..., total score: z/10"."""
    parts = [f"score of component {i}:{draw(gap)}{draw(number)}/{draw(number)}" for i in range(1, draw(st.integers(0, 4)) + 1)]
    parts.append(f"total score:{draw(gap)}{draw(number)}/{draw(number)}{draw(gap)}")
    return ",".join(parts) + draw(st.sampled_from([".", "", ". Reasons.", "\r.", " and more"]))


# Values json.loads can produce; mostly ones inside the bounds (weights >= 3),
# so that the coercion rule, not a missing key, decides.
NUMERIC_TEXT = st.builds(
    lambda a, b, c: a + b + c,
    st.sampled_from(["", "", " ", "\u00a0", "\x1c", "\u3000", "\t", "\u200b"]),
    st.sampled_from(["0", "1", "2.5", "3", "1e0", "1_0", "1_.5", "1._5", "1_e0", "2_.", "+_1", "-_0", "_1", "1_", "1__0",
                     "in_f", "nan", "\u0663", "3.", ".5", "0x1", "1 0", "0_0.5"]),
    st.sampled_from(["", "", " ", "\u2028", "\x1f", "\u200b"]),
)  # fmt: skip
JSON_VALUES = st.one_of(
    st.integers(0, 3), st.floats(0, 3), NUMERIC_TEXT, NUMERIC_TEXT, NUMERIC_TEXT,
    st.one_of(st.integers(-2, 12), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
              st.sampled_from([10**400, [], {}, "x"])),
)  # fmt: skip


@st.composite
def json_object(draw: st.DrawFn) -> str:
    count = draw(st.sampled_from([1, 3, 3, 3, 4]))
    data: dict[str, object] = {f"component_{i}": draw(JSON_VALUES) for i in range(1, count + 1)}
    if draw(st.booleans()):
        data["reasoning"] = draw(st.one_of(st.text(alphabet='ab {}"\\<>/', max_size=8), st.text(max_size=3), st.sampled_from([0, None])))
    text = json.dumps(data, ensure_ascii=draw(st.booleans()), allow_nan=True)
    if draw(st.integers(0, 5)) == 0:
        text = text[: max(0, len(text) - draw(st.integers(1, 12)))]  # cut off near the end (max_tokens)
    fence = draw(st.sampled_from(["", "```json\n", "```\n"]))
    return fence + text + ("\n```" if fence else "")


OPENERS = st.sampled_from(
    [
        "<think>", "<think >", "<think\n\t>", "<think\u3000>", '<think signature="abc">', '<think signature="">',
        '<think  signature="a}b{" redacted="true" >', '<think redacted="true">', '<think redacted="false">',
        "<think signature='abc'>", '<think signature="abc>', "<think foo=bar>", "<THINK>", "<thinking>", "<think",
    ]
)  # fmt: skip
CLOSERS = st.sampled_from(["</think>", "</think>", "</THINK>", "</think", ""])
NOISE = st.sampled_from(['"', "{", "}", '\\"', "{}", '{"', ". ", ", ", ":", "/", "\n", "reasons", "the total score is", "10/10"])


@st.composite
def think_block(draw: st.DrawFn, inner: st.SearchStrategy[str]) -> str:
    content = "".join(draw(st.lists(st.one_of(inner, NOISE, space), max_size=4)))
    return draw(OPENERS) + content + draw(CLOSERS)


def reply_strategy(piece: st.SearchStrategy[str], parts: int) -> st.SearchStrategy[str]:
    """Replies made of score pieces, noise, whitespace and think blocks (which
    hold the same pieces) in any order."""
    part = st.one_of(piece, piece, NOISE, space, think_block(piece))
    return st.lists(part, max_size=parts).map("".join)


regex_piece = st.one_of(component_sentence(), total_sentence())
regex_replies = reply_strategy(regex_piece, 8)


@st.composite
def json_reply(draw: st.DrawFn) -> str:
    """Mostly one object outside think blocks, with blocks (holding objects,
    quotes, braces) and prose around it, so the coercion rule decides."""
    prose = st.sampled_from([". ", "Here is my grade:\n", "\n", "total score: 9/10 ", "\u3000"])
    around = st.one_of(think_block(json_object()), think_block(json_object()), prose)
    parts = draw(st.lists(around, max_size=2))
    if draw(st.integers(0, 9)) < 8:
        parts.append(draw(json_object()))
    parts += draw(st.lists(st.one_of(around, st.just("\nThat is my grade.")), max_size=2))
    return "".join(parts)


json_replies = json_reply()
split_replies = st.one_of(reply_strategy(split_sentence(), 4), split_sentence())


@FUZZ
@given(reply=regex_replies, spec=st.sampled_from(SPECS))
def test_evalscope_matches_reference(reply: str, spec: SampleSpec) -> None:
    expected = ref.regex_reference(ref.evalscope_visible(reply), spec.component_types)
    verdict = PROTOCOLS["evalscope"]().parse(spec, reply)
    assert verdict.status in (SCORED, ZERO)
    want = {"total_score": expected["total_score"]}
    want.update({f"component_{i}_{t}": expected[t] for i, t in enumerate(spec.component_types, start=1)})
    assert verdict.metrics == want
    assert verdict.score == expected["total_score"]


@FUZZ
@given(reply=regex_replies, spec=st.sampled_from(SPECS))
def test_lmms_eval_matches_reference(reply: str, spec: SampleSpec) -> None:
    # No think strip: lmms-eval reads the whole reply.
    expected = ref.regex_reference(reply, spec.components)
    verdict = PROTOCOLS["lmms-eval"]().parse(spec, reply)
    assert verdict.metrics == {"total_score": expected["total_score"]}
    assert verdict.components == tuple(expected[text] for text in spec.components)


@FUZZ
@given(reply=json_replies, spec=st.sampled_from(SPECS))
def test_evalscope_json_matches_reference(reply: str, spec: SampleSpec) -> None:
    expected = ref.json_reference(reply, spec.weights)
    verdict = PROTOCOLS["evalscope-json"]().parse(spec, reply)
    if expected is None:
        assert verdict.status == EXCLUDED, verdict
        return
    assert verdict.status == SCORED, verdict.reason
    assert verdict.components == tuple(v / w for v, w in zip(expected, spec.weights))
    assert verdict.score == pytest.approx(math.fsum(expected) / sum(spec.weights), rel=1e-12)


def _split_check(protocol: str, expected: dict[str, float] | None, reply: str, spec: SampleSpec) -> None:
    verdict = PROTOCOLS[protocol]().parse(spec, reply)
    if expected is None:
        assert verdict.status == DROPPED, verdict
    else:
        assert (verdict.status, verdict.metrics) == (SCORED, expected)


@FUZZ
@given(reply=split_replies, spec=st.sampled_from(SPECS))
def test_apple_matches_reference(reply: str, spec: SampleSpec) -> None:
    # The notebook stores content.strip() (the split parser reads it as is).
    _split_check("apple", ref.split_reference(reply.strip(), spec.component_types), reply, spec)


@FUZZ
@given(reply=split_replies, spec=st.sampled_from(SPECS))
def test_vlmevalkit_matches_reference(reply: str, spec: SampleSpec) -> None:
    _split_check("vlmevalkit", ref.vlmevalkit_reference(reply, spec.component_types), reply, spec)


@FUZZ
@given(text=st.lists(st.one_of(NOISE, space, OPENERS, CLOSERS, st.sampled_from(["_x0041_", "x005F_", "\x01", "\r", "NA", ""])), max_size=8).map("".join))
def test_vlmevalkit_prompt_prints_the_xlsx_cell(text: str) -> None:
    spec = SPECS[2]
    prompt = PROTOCOLS["vlmevalkit"]().build_prompt(spec, text)
    assert f"The response is: '{ref.xlsx_round_trip(text)}'. You need" in prompt
