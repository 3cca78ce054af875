"""evalscope >= 1.11.0 (1.14.1 latest): ``evalscope/benchmarks/mia_bench/``
with the framework's JSON output contract ``evalscope/api/judge/contracts.py``.

The original prompt body with the range 0 to sum(weights), no format
sentence, then the contract suffix listing one bounded key per component.
Text-only judge, temperature 0, ``max_tokens`` 4096.  The score is
sum(component_i) / sum(W_i) (the judge's own total is ignored); a reply
that breaks the contract is a parse_error and the sample is excluded.
The reply is read without its first think block, as evalscope's message
model removes it before the contract sees the text.
Metrics: ``judge_score`` and ``component_{i}_{type}`` means.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from ..config.text import clip
from . import common
from .base import EXCLUDED, SCORED, Protocol, SampleSpec, Verdict

_CONTRACT_HEAD = (
    "\n\nReply with a single JSON object and no other text, containing these required keys "
    "(additional keys are allowed):\n"
)


def json_objects(text: str) -> list[str]:
    """Every top-level ``{...}`` in ``text``, as evalscope's ``_payloads``.

    Brace depth counting; quotes toggle a string state *at any depth*, with
    backslash escapes, so braces inside strings do not count.  Brackets are
    not tracked: ``[{...}]`` yields the inner object.
    """
    found: list[str] = []
    depth = start = 0
    in_string = escaped = False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char == "{":
            if depth == 0:
                start = index
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                found.append(text[start : index + 1])
    return found


# What Rust's ``str::trim`` removes: Unicode White_Space, which is Python's
# ``str.isspace`` without U+001C..U+001F.
_RUST_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
# Rust's ``f64::from_str`` grammar: ASCII digits only, no underscores, no
# whitespace; "1.", ".5", exponents, and inf/infinity/nan in any case.
_RUST_F64 = re.compile(r"[+-]?(?:inf|infinity|nan|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)", re.IGNORECASE)


def _rust_f64(text: str) -> float | None:
    # Both parsers round correctly, so Python's float gives Rust's value.
    return float(text) if _RUST_F64.fullmatch(text) else None


def lax_float(value: Any) -> float:
    """Pydantic v2 lax ``float`` coercion of a JSON value (ValueError if refused).

    bool and int are accepted (an int too large for a float is not).  A
    string goes through pydantic-core's ``str_as_float`` (unchanged since
    pydantic-core 2.17, pydantic 2.7): Rust's float parser on the string
    trimmed of Unicode White_Space; failing that, when the *untrimmed*
    string has underscores but none leading, trailing or doubled, the same
    parser on it with every underscore removed.  So "1_.5", "1._5",
    "1_e1", "1_." and "+_1" are numbers, " 1_0 " and "\\x1c4" are not;
    nor are "4/4", "", non-ASCII digits or null.
    """
    if isinstance(value, (bool, int)):
        try:
            return float(value)
        except OverflowError:
            raise ValueError("integer too large for a float") from None
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        parsed = _rust_f64(value.strip(_RUST_WHITESPACE))
        if parsed is None and "_" in value and "__" not in value and not value.startswith("_") and not value.endswith("_"):
            parsed = _rust_f64(value.replace("_", ""))
        if parsed is None:
            raise ValueError(f"{clip(value)} is not a number")
        return parsed
    raise ValueError(f"{type(value).__name__} is not a number")


def validate(data: Any, weights: tuple[int, ...]) -> tuple[float, ...]:
    """The per-sample schema ``MiaGrade``: ``reasoning: str = ''`` and
    ``component_i: float`` with ``0 <= v <= W_i``; extra keys allowed."""
    if not isinstance(data, dict):
        raise ValueError(f"reply is a {type(data).__name__}, not a JSON object")
    if "reasoning" in data and not isinstance(data["reasoning"], str):
        raise ValueError("reasoning is not a string")
    values = []
    for i, weight in enumerate(weights, start=1):
        key = f"component_{i}"
        if key not in data:
            raise ValueError(f"{key} is missing")
        value = lax_float(data[key])
        # Written so that NaN fails, as it does in pydantic.
        if not (value >= 0.0 and value <= float(weight)):
            raise ValueError(f"{key} = {value} is outside [0, {float(weight)}]")
        values.append(value)
    return tuple(values)


class EvalscopeJsonProtocol(Protocol):
    """evalscope's JSON-contract protocol (versions >= 1.11.0), text-only judge."""

    name: ClassVar[str] = "evalscope-json"
    prompt_version: ClassVar[str] = "evalscope-1.11-json"
    judge_sees_image: ClassVar[bool] = False
    image_detail: ClassVar[str | None] = None
    temperature: ClassVar[float | None] = 0.0
    max_tokens: ClassVar[int | None] = 4096
    headline: ClassVar[str] = "judge_score"
    strips_answer_thinking: ClassVar[bool] = True

    def build_prompt(self, sample: SampleSpec, response: str) -> str:
        # Field descriptions as the contract prints them: bounds are floats
        # ("<= 4.0"), "reasoning" has a default and no bounds.
        lines = ['- "reasoning": a string']
        lines += [
            f'- "component_{i}": a number >= 0.0 and <= {float(w)}'
            for i, w in enumerate(sample.weights, start=1)
        ]
        body = common.original_body(sample, response, score_range=str(sum(sample.weights)))
        return body + _CONTRACT_HEAD + "\n".join(lines)

    def parse(self, sample: SampleSpec, reply: str | None) -> Verdict:
        nothing = (None,) * len(sample.components)
        # The brace scan runs on what is left: a "{" or an unbalanced quote
        # inside the block never reaches it.
        reply = common.evalscope_reply_text(reply)
        if not reply:
            return Verdict(EXCLUDED, None, nothing, {}, "parse_error: empty response")
        payloads = json_objects(reply)
        if len(payloads) != 1:
            why = "no JSON object found" if not payloads else f"{len(payloads)} JSON objects where one is required"
            return Verdict(EXCLUDED, None, nothing, {}, f"parse_error: {why}")
        try:
            values = validate(json.loads(payloads[0]), sample.weights)
        except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError
            return Verdict(EXCLUDED, None, nothing, {}, f"parse_error: {exc}")
        per_position = tuple(v / w if w else 0.0 for v, w in zip(values, sample.weights))
        metrics = {
            f"component_{i}_{ctype}": value
            for i, (ctype, value) in enumerate(zip(sample.component_types, per_position), start=1)
        }
        # Summed in order, as evalscope's reduce does.
        raw_sum = 0.0
        for value in values:
            raw_sum += value
        total_weight = sum(sample.weights)
        metrics["judge_score"] = raw_sum / total_weight if total_weight else 0.0
        return Verdict(SCORED, metrics["judge_score"], per_position, metrics)
