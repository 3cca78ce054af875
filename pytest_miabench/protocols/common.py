"""Pieces shared by several protocols: the original prompt body (Apple
notebook ``generate_prompt``, reused by lmms-eval and both evalscope
variants), the split parser of Apple / VLMEvalKit and the regex parser of
lmms-eval / evalscope 1.5.2-1.10, with the think-block rule evalscope
applies to every judge reply."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .base import DROPPED, SCORED, SampleSpec, Verdict
from .thinking import strip_first_block

ORDINALS = ("first", "second", "third", "fourth", "fifth")

#: The original format sentence.  The example is fixed (two components,
#: x/2 and y/8, z/10) whatever the sample's component count and weights.
ORIGINAL_FORMAT_LINE = (
    " List scores of each component, and the total score in one sentence in this format: "
    "score of component 1: x/2, score of component 2: y/8, total score: z/10. Then explain your reasons."
)


def check_component_count(sample: SampleSpec) -> int:
    """Every reference builder has branches for 1-5 components only."""
    n = len(sample.components)
    if not 1 <= n <= len(ORDINALS) or len(sample.weights) != n:
        raise ValueError(
            f"row {sample.index}: {n} components / {len(sample.weights)} weights; "
            "the reference prompts support 1 to 5 components with one weight each"
        )
    return n


def original_components(sample: SampleSpec) -> str:
    """``The first component is:' C1', and the second component is:' C2'``."""
    parts = [f"The first component is:' {sample.components[0]}'"]
    for ordinal, text in zip(ORDINALS[1:], sample.components[1:]):
        parts.append(f", and the {ordinal} component is:' {text}'")
    return "".join(parts)


def original_score_sentence(weights: Sequence[int]) -> str:
    """The weights sentence, verbatim: note the missing comma after "first"
    for three or more components and no Oxford comma for five."""
    w = [str(x) for x in weights]
    heads = {
        1: "The first component is worth {} scores.",
        2: "The first and second component is each worth {} and {} scores.",
        3: "The first second, and third component is each worth {}, {} and {} scores.",
        4: "The first second, third, and fourth component is each worth {}, {}, {} and {} scores.",
        5: "The first second, third, fourth and fifth component is each worth {}, {}, {}, {} and {} scores.",
    }
    return heads[len(w)].format(*w)


def original_body(sample: SampleSpec, response: str, score_range: str = "10") -> str:
    """The original prompt up to and including the weights sentence.

    The quote opened before the instruction is never closed (verbatim).
    ``score_range`` is "10" in the original (even when the weights sum to 8);
    evalscope substitutes the sum of the weights.
    """
    check_component_count(sample)
    return (
        f"Here is an instruction for a multimodal LLM: ' {sample.instruction} You need to grade if the "
        "response from the model follows each component of the instruction. "
        f"{original_components(sample)} The response is:' {response}' You need to score the response "
        f"and be strict. The total score ranges from 0 to {score_range}, depending on if the response "
        f"follows the instruction. {original_score_sentence(sample.weights)}"
    )


def split_parse(reply: str | None, component_types: Sequence[str]) -> tuple[dict[str, float] | None, str]:
    """Apple notebook / VLMEvalKit ``process_rawscore``, step for step.

    Returns ``({type: ratio, ..., "total_score": ratio}, "")``, or
    ``(None, why)`` where the reference raises (its caller's bare ``except``
    then leaves the sample out of every mean).  Deliberately *not* robust:
    the fragility is the protocol.
    """
    if not isinstance(reply, str):
        return None, "no judge text (the reference fails with AttributeError)"
    segments = reply.split(".")[0].split(",")
    if len(segments) < 2:
        # The reference reads its loop variable after an empty loop.
        return None, "no comma before the first '.' (the reference fails with NameError)"
    try:
        scores: dict[str, float] = {}
        for i, segment in enumerate(segments[:-1]):
            # After the first colon, drop one character (assumed a space).
            # The judge's own "component k" number is ignored: keys go by
            # position, so a duplicated type keeps the last value.
            piece = segment.split(":")[1][1:].split("/")
            scores[component_types[i]] = reference_int_text(piece[0]) / reference_int_text(piece[1])  # IndexError past the last type
        piece = segments[-1].split(":")[1][1:].split("/")
        scores["total_score"] = reference_int_text(piece[0]) / reference_int_text(piece[1])  # no clamp: 11/10 -> 1.1
    except Exception as exc:  # noqa: BLE001 - the reference's bare except
        return None, f"first sentence not in the expected format ({type(exc).__name__}: {exc})"
    return scores, ""


def split_verdict(sample: SampleSpec, reply: str | None) -> Verdict:
    """The Apple / VLMEvalKit verdict: scored with the judge's own total, or
    dropped from every mean.  ``metrics`` are keyed by component type (after
    the duplicate overwrite) plus ``total_score``; a component the judge's
    sentence did not reach gets no value (its type is not averaged).  Per
    position, ``components`` reports its type's value, so both positions of
    a duplicated type show the last-written one."""
    scores, why = split_parse(reply, sample.component_types)
    if scores is None:
        return Verdict(DROPPED, None, (None,) * len(sample.components), {}, why)
    per_position = tuple(scores.get(ctype) for ctype in sample.component_types)
    return Verdict(SCORED, scores["total_score"], per_position, scores)


def evalscope_reply_text(reply: str | None) -> str | None:
    """The judge reply as evalscope's parsers see it.

    evalscope builds every assistant message from the raw content, and its
    validator moves the first complete think block out of the text; what
    is left is ``.strip()``-ed.  Without a block the text is untouched
    (not stripped).  (A server that also returns a non-empty
    ``reasoning_content`` field skips this step in evalscope; this plugin
    parses the content text alone.)
    """
    return reply if not isinstance(reply, str) else strip_first_block(reply)


_COMPONENT_RE = re.compile(r"(?:score\s+of\s+)?component\s+(\d+)\s*:\s*(\d+)\s*/\s*(\d+)", re.IGNORECASE)
_TOTAL_RE = re.compile(r"total\s+score\s*:\s*(\d+)\s*/\s*(\d+)", re.IGNORECASE)

#: CPython's default ``sys.int_max_str_digits``, under which the references
#: run: ``int()`` of a longer numeral raises ValueError.
REFERENCE_INT_MAX_STR_DIGITS = 4300
# The smallest limit a host can set (0 aside): chunks this long always parse.
_SAFE_CHUNK = 640


def reference_int(digits: str) -> int:
    """``int(digits)`` as the reference computes it, whatever this process's
    own ``sys.get_int_max_str_digits()`` is: ValueError past 4300 digits
    (leading zeros count), otherwise the exact value.  ``digits`` is a
    ``\\d+`` match, so Unicode decimal digits are allowed, as in ``int()``."""
    if len(digits) > REFERENCE_INT_MAX_STR_DIGITS:
        raise ValueError(f"numeral of {len(digits)} digits exceeds the limit of {REFERENCE_INT_MAX_STR_DIGITS}")
    value = 0
    for at in range(0, len(digits), _SAFE_CHUNK):
        chunk = digits[at : at + _SAFE_CHUNK]
        value = value * 10 ** len(chunk) + int(chunk)
    return value


# int()'s base-10 grammar: whitespace (str.isspace() but U+001C-U+001F), a
# sign, decimal digits with single underscores between them.
_INT_SPACE = r"[^\S\x1c-\x1f]*"
_INT_TEXT = re.compile(_INT_SPACE + r"[+-]?\d+(?:_\d+)*" + _INT_SPACE)


def reference_int_text(text: str) -> int:
    """``int(text)`` for any text, under the reference's digit limit (as
    ``reference_int``), whatever this process's own limit is."""
    if len(text) <= _SAFE_CHUNK:
        return int(text)
    if not _INT_TEXT.fullmatch(text):
        raise ValueError(f"invalid literal for int() with base 10: {text[:20]!r}...")
    body = text.strip()  # the match above leaves no U+001C-U+001F at either end
    value = reference_int(body.lstrip("+-").replace("_", ""))
    return -value if body.startswith("-") else value


def _ratio(numerator: str, denominator: str) -> float:
    """The references' clamped ratio.  ValueError: a numeral over the digit
    limit; OverflowError: the quotient does not fit a float."""
    num, den = reference_int(numerator), reference_int(denominator)
    value = num / den if den else 0.0
    return min(1.0, max(0.0, value))


@dataclass(frozen=True)
class RegexResult:
    by_key: dict[str, float]
    total: float
    matched: bool  # whether any in-range score was read at all


def regex_parse(reply: str | None, keys: Sequence[str]) -> RegexResult:
    """lmms-eval HEAD / evalscope 1.5.2-1.10 parser.

    Components: every match, in order, later ones overwrite earlier ones.
    Total: the *first* match.  Without a total, the unweighted mean of the
    ratios found so far (over distinct keys), taken before missing
    components are zero-filled.

    Errors are caught where the references catch them.  A numeral over
    4300 digits (ValueError from ``int()``) skips that component match
    only (their per-match ``except (ValueError, IndexError)``).  A ratio
    too large for a float (OverflowError) escapes the per-match handler
    and ends the component phase: earlier components stay, later ones are
    never read, and the total is still read.  Either error in the total
    makes the total 0 (not the component mean); components stay.
    """
    scores: dict[str, float] = {}
    matched = False
    total: float | None = None
    if isinstance(reply, str) and reply:
        try:
            for k, num, den in _COMPONENT_RE.findall(reply):
                try:
                    index = reference_int(k) - 1
                    if 0 <= index < len(keys):
                        scores[keys[index]] = _ratio(num, den)
                        matched = True
                except ValueError:
                    continue
        except OverflowError:
            pass
        found = _TOTAL_RE.search(reply)
        if found:
            try:
                total = _ratio(found.group(1), found.group(2))
                matched = True
            except (ValueError, OverflowError):
                total = 0.0
    if total is None:
        total = sum(scores.values()) / len(scores) if scores else 0.0
    for key in keys:
        scores.setdefault(key, 0.0)
    # The references' final pass zeroes anything outside [0, 1]; after the
    # clamps above nothing can be, but keep the pass for fidelity.
    scores = {key: (value if 0.0 <= value <= 1.0 else 0.0) for key, value in scores.items()}
    if not 0.0 <= total <= 1.0:
        total = 0.0
    return RegexResult(scores, total, matched)
