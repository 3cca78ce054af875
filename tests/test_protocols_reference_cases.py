"""Explicit parity cases for the last disagreements with the reference
scorers (issue 14): evalscope's think-block strip of the judge reply, huge
numerals in the regex parsers, pydantic's underscore floats, VLMEvalKit's
xlsx round trip.  Expected values are what the reference code computes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

from pytest_miabench.protocols import DROPPED, EXCLUDED, SCORED, ZERO, SampleSpec, builtin_protocols

PROTOCOLS = builtin_protocols()
ONE = SampleSpec(0, "x", "basic", ("Describe",), (10,), ("describe",))
THREE = SampleSpec(0, "x", "advanced", ("a", "b", "c"), (4, 3, 3), ("describe", "length_limit", "linguistics"))
OK = '"component_1": 4, "component_2": 3, "component_3": 3'


# ------------------------------------------------------------------ think blocks


# The model's answer as each reference puts it into the judge prompt.
# evalscope's message model cuts out the first block it recognises and
# strips what is left; an answer without such a block goes in untouched,
# surrounding whitespace included.  The other references never touch it.
ANSWERS = [
    ("<think>plan</think>\n  A dog runs.  ", "A dog runs."),
    ("  A dog runs.\n", "  A dog runs.\n"),  # no block: not trimmed
    ('<think signature="s">p</think> A dog. ', "A dog."),
    ('<think redacted="true">p</think>A dog.', "A dog."),
    ("<think >p</think> A dog.", "A dog."),
    ('<think foo="1">p</think> A dog. ', '<think foo="1">p</think> A dog. '),  # not an evalscope opener
    ("<think signature='s'>p</think> A dog.", "<think signature='s'>p</think> A dog."),
    ("<think>unclosed A dog. ", "<think>unclosed A dog. "),
    ("A <think>p</think> dog <think>q</think> ", "A  dog <think>q</think>"),  # only the first block
]


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
@pytest.mark.parametrize(("answer", "evalscope_sees"), ANSWERS)
def test_the_answer_reaches_the_judge_prompt_as_each_reference_puts_it(protocol: str, answer: str, evalscope_sees: str) -> None:
    expected = evalscope_sees if protocol.startswith("evalscope") else answer
    assert PROTOCOLS[protocol]().judge_answer(answer) == expected



@pytest.mark.parametrize(
    ("reply", "evalscope", "lmms"),
    [
        ("<think>total score:1/10</think>total score: 9/10", 0.9, 0.1),
        ("<think>total score:1/1</think>", 0.0, 1.0),
        ('<think signature="s1g">total score: 1/10</think> total score: 7/10', 0.7, 0.1),
        ('<think redacted="true">total score: 1/10</think>total score: 7/10', 0.7, 0.1),
        ('<think signature="s" redacted="true">total score: 1/10</think>total score: 7/10', 0.7, 0.1),
        ("<think >total score: 1/10</think>total score: 7/10", 0.7, 0.1),
        ("<think\n>total score: 1/10</think>total score: 7/10", 0.7, 0.1),
        # Forms evalscope's regex does not take: the whole text is read.
        ('<think redacted="false">total score: 1/10</think>total score: 7/10', 0.1, 0.1),
        ("<think foo=bar>total score: 1/10</think>total score: 7/10", 0.1, 0.1),
        ("<think signature='s'>total score: 1/10</think>total score: 7/10", 0.1, 0.1),
        ("<THINK>total score: 1/10</THINK>total score: 7/10", 0.1, 0.1),
        # An unclosed block is not removed.
        ("<think>total score: 1/10 total score: 7/10", 0.1, 0.1),
        # Only the first block goes; the second is read.
        ("<think>a</think><think>total score: 2/10</think>total score: 7/10", 0.2, 0.2),
        # The block ends at the first </think>; a later opener further on is skipped over.
        ("<think foo>x</think><think>total score: 1/10</think>total score: 8/10", 0.8, 0.1),
    ],
)
def test_evalscope_reads_the_reply_without_its_first_think_block(reply: str, evalscope: float, lmms: float) -> None:
    assert PROTOCOLS["evalscope"]().parse(ONE, reply).score == pytest.approx(evalscope)
    assert PROTOCOLS["lmms-eval"]().parse(ONE, reply).score == pytest.approx(lmms)


@pytest.mark.parametrize(
    ("reply", "status", "score"),
    [
        ("<think>{" + OK + "}</think>", EXCLUDED, None),  # empty after the strip
        ('<think>{"component_1": 1}</think>{' + OK + "}", SCORED, 1.0),
        ('<think>a "quote" and an odd " one</think>{' + OK + "}", SCORED, 1.0),
        ('<think>{"</think>{' + OK + "}", SCORED, 1.0),
        ('<think signature="x">{}</think>\n```json\n{' + OK + "}\n```", SCORED, 1.0),
        ("<think foo>{}</think>{" + OK + "}", EXCLUDED, None),  # not removed: two objects
        ('<think>{"component_1": 1}{' + OK + "}", EXCLUDED, None),  # unclosed: not removed
    ],
)
def test_evalscope_json_reads_the_reply_without_its_first_think_block(reply: str, status: str, score: float | None) -> None:
    verdict = PROTOCOLS["evalscope-json"]().parse(THREE, reply)
    assert (verdict.status, verdict.score) == (status, score)


def test_evalscope_json_one_component_case_of_the_issue() -> None:
    spec = SampleSpec(0, "x", "basic", ("a",), (10,), ("describe",))
    parse = PROTOCOLS["evalscope-json"]().parse
    assert parse(spec, '<think>{"component_1": 1}</think>{"component_1": 9}').score == pytest.approx(0.9)
    assert parse(spec, '<think>{"component_1": 9}</think>').status == EXCLUDED


# ------------------------------------------------------------------ huge numerals

BIG = "9" * 4301  # one digit past int()'s default limit
OVER = "1" + "0" * 309  # fits int(), not a float quotient


@pytest.mark.parametrize("protocol", ["evalscope", "lmms-eval"])
def test_a_numeral_past_the_digit_limit_skips_that_match_only(protocol: str) -> None:
    reply = f"component 1: {BIG}/4, component 2: 3/3, component 3: 1/3, total score: 7/10"
    verdict = PROTOCOLS[protocol]().parse(THREE, reply)
    assert verdict.status == SCORED
    assert verdict.components == (0.0, 1.0, pytest.approx(1 / 3))
    assert verdict.score == pytest.approx(0.7)
    # An earlier good match of the same component stays.
    reply = f"component 1: 2/4, component 1: 1/{BIG}, total score: 7/10"
    assert PROTOCOLS[protocol]().parse(THREE, reply).components[0] == 0.5
    # 4300 digits (leading zeros count) still parse.
    reply = f"component 1: {'0' * 4299}2/4, total score: 7/10"
    assert PROTOCOLS[protocol]().parse(THREE, reply).components[0] == 0.5


@pytest.mark.parametrize("protocol", ["evalscope", "lmms-eval"])
def test_a_float_overflow_ends_the_component_phase_but_keeps_earlier_ones(protocol: str) -> None:
    reply = f"component 1: 2/4, component 2: {OVER}/3, component 3: 3/3, total score: 9/10"
    verdict = PROTOCOLS[protocol]().parse(THREE, reply)
    assert verdict.components == (0.5, 0.0, 0.0)  # component 3 is never read
    assert verdict.score == pytest.approx(0.9)  # the total still is
    # Without a total, the mean covers what was read before the overflow.
    verdict = PROTOCOLS[protocol]().parse(THREE, f"component 1: 2/4, component 2: {OVER}/3, component 3: 3/3")
    assert verdict.score == pytest.approx(0.5)
    # A huge quotient that is not a float overflow is clamped, not an error.
    assert PROTOCOLS[protocol]().parse(THREE, f"component 1: {'9' * 300}/1, total score: 1/2").components[0] == 1.0


@pytest.mark.parametrize("protocol", ["evalscope", "lmms-eval"])
@pytest.mark.parametrize("total", [f"{OVER}/1", f"{BIG}/10", f"1/{BIG}"])
def test_a_huge_total_is_zero_and_keeps_the_components(protocol: str, total: str) -> None:
    verdict = PROTOCOLS[protocol]().parse(THREE, f"component 1: 4/4, component 2: 3/3, total score: {total}")
    assert verdict.score == 0.0  # not the component mean
    assert verdict.components[:2] == (1.0, 1.0)
    assert verdict.status == SCORED
    only_total = PROTOCOLS[protocol]().parse(THREE, f"total score: {total}")
    assert (only_total.status, only_total.score) == (ZERO, 0.0)


@pytest.mark.parametrize("limit", ["640", "0", "5000"])
def test_the_digit_limit_is_the_references_not_this_processs(limit: str) -> None:
    """The host's own limit (PYTHONINTMAXSTRDIGITS) changes nothing: 4300
    digits parse, 4301 do not, in every parser that calls int()."""
    script = textwrap.dedent(
        """
        from pytest_miabench.protocols import SampleSpec, builtin_protocols
        p = builtin_protocols()
        spec = SampleSpec(0, "x", "basic", ("a", "b"), (5, 5), ("describe", "mention"))
        ok, bad = "0" * 4299 + "3", "0" * 4300 + "3"
        out = []
        for name in ("evalscope", "lmms-eval"):
            for n in (ok, bad):
                out.append(p[name]().parse(spec, f"component 1: {n}/5, component 2: {n}/5").score)
        for name in ("apple", "vlmevalkit"):
            for n in (ok, bad):
                out.append(p[name]().parse(spec, f"score of component 1: {n}/5, total score: {n}/10.").status)
        print(out)
        """
    )
    env = {**os.environ, "PYTHONINTMAXSTRDIGITS": limit}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str([0.6, 0.0, 0.6, 0.0, SCORED, DROPPED, SCORED, DROPPED])


def test_the_regex_parsers_do_not_zero_everything_on_an_error() -> None:
    # The old rule: any int()/float error scored the whole sample 0.
    reply = f"component 1: 4/4, component 2: {BIG}/3, component 3: 3/3, total score: 9/10"
    assert PROTOCOLS["evalscope"]().parse(THREE, reply).metrics == {
        "total_score": pytest.approx(0.9),
        "component_1_describe": 1.0,
        "component_2_length_limit": 0.0,
        "component_3_linguistics": 1.0,
    }


# ------------------------------------------------------------ underscore numerals


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1_.5", 1.5), ("1._5", 1.5), ("1_e1", 10.0), ("1_.", 1.0), ("+_1", 1.0), ("._5", 0.5), ("1e_0", 1.0),
        ("1_0", 10.0), ("\u00a02", 2.0), ("2\u3000", 2.0), ("\u20282", 2.0),
        (" 1_0 ", None), ("1_0 ", None), ("_1", None), ("1_", None), ("1__0", None),
        ("\x1c2", None), ("2\x1f", None), ("\u200b2", None), ("\u0663", None), ("1 0", None),
    ],
)  # fmt: skip
def test_evalscope_json_coerces_strings_as_pydantic_core(text: str, value: float | None) -> None:
    reply = json.dumps({"component_1": text, "component_2": 0, "component_3": 0})
    verdict = PROTOCOLS["evalscope-json"]().parse(SampleSpec(0, "x", "a", ("a", "b", "c"), (10, 3, 3), ("d", "l", "m")), reply)
    if value is None:
        assert verdict.status == EXCLUDED
    else:
        assert verdict.status == SCORED and verdict.components[0] == pytest.approx(value / 10)


def test_string_coercion_matches_the_installed_pydantic() -> None:
    """The same rule against pydantic itself (a dependency of openai) on every
    string of up to three characters over a numeric alphabet."""
    pydantic = pytest.importorskip("pydantic")
    if int(pydantic.VERSION.split(".")[0]) < 2:
        pytest.skip("pydantic v1 coerces differently; evalscope >= 1.11 needs v2")
    from itertools import product

    from pytest_miabench.protocols.evalscope_json import lax_float

    model = pydantic.create_model("M", x=(float, ...))
    alphabet = ["1", "_", ".", "e", "+", " ", "\x1c", "\u3000", "n", "i"]
    checked = 0
    for size in range(1, 4):
        for chars in product(alphabet, repeat=size):
            text = "".join(chars)
            try:
                expected: float | None = model(x=text).x
            except pydantic.ValidationError:
                expected = None
            try:
                actual: float | None = lax_float(text)
            except ValueError:
                actual = None
            assert actual == expected or (actual is not None and expected is not None and math.isnan(actual) and math.isnan(expected)), text
            checked += 1
    assert checked == 10 + 100 + 1000


# --------------------------------------------------------- VLMEvalKit xlsx round trip

VLM = SampleSpec(0, "Describe the image.", "basic", ("Describe",), (10,), ("describe",))


@pytest.mark.parametrize(
    ("answer", "printed"),
    [
        # Outputs of a real round trip: xlsxwriter 3.3.1 -> openpyxl 3.1.5 + pandas 3.1.1.
        ("", "nan"), ("NA", "nan"), ("N/A", "nan"), ("None", "nan"), ("null", "nan"), ("#N/A", "nan"), ("<NA>", "nan"),
        ("-nan", "nan"), ("1.#IND", "nan"),
        (" NA", " NA"), ("NA ", "NA "), ("na", "na"), ("nan", "nan"), ("N/a", "N/a"),
        ("line\r\nbreak", "line_x000D_\nbreak"), ("\x01ctrl", "_x0001_ctrl"), ("a\x0bb", "a_x000B_b"), ("tab\tx", "tab\tx"),
        ("_x0041_", "_x0041_"), ("ax005F_b", "ab"),
        ("x" * 40000, "x" * 32767), ("x" * 32766 + "\U0001f600", "x" * 32766),
    ],
    ids=lambda v: repr(v)[:24],
)  # fmt: skip
def test_vlmevalkit_prompt_prints_the_answer_as_read_back_from_xlsx(answer: str, printed: str) -> None:
    prompt = PROTOCOLS["vlmevalkit"]().build_prompt(VLM, answer)
    assert f"The response is: '{printed}'. You need" in prompt


@pytest.mark.parametrize(
    ("reply", "status", "score"),
    [
        ("score of component 1: 8/10, total score: 8/10.", SCORED, 0.8),
        ("  score of component 1: 8/10, total score: 8/10\r", SCORED, 0.8),  # the API wrapper strips
        ("score of component 1: 8/10, total score: 8/10\r.", DROPPED, None),  # "\r" comes back as "_x000D_"
        ("NA", DROPPED, None),
        ("   ", DROPPED, None),
    ],
)
def test_vlmevalkit_parses_the_reply_as_read_back_from_xlsx(reply: str, status: str, score: float | None) -> None:
    verdict = PROTOCOLS["vlmevalkit"]().parse(VLM, reply)
    assert (verdict.status, verdict.score) == (status, score)
    if status == SCORED:
        # The notebook does not go through xlsx: "\r" is whitespace to its int().
        assert PROTOCOLS["apple"]().parse(VLM, "score of component 1: 8/10, total score: 8/10\r.").status == SCORED
