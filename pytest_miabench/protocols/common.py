"""Pieces shared by several protocols: the original prompt body and the
regex parser of lmms-eval / evalscope 1.5-1.10."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .base import SampleSpec

ORDINALS = ("first", "second", "third", "fourth", "fifth")


def original_components(sample: SampleSpec) -> str:
    """``The first component is:' C1', and the second component is:' C2'``."""
    parts = [f"The first component is:' {sample.components[0]}'"]
    for ordinal, text in zip(ORDINALS[1:], sample.components[1:]):
        parts.append(f", and the {ordinal} component is:' {text}'")
    return "".join(parts)


def original_score_sentence(weights: tuple[int, ...]) -> str:
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
    """The original prompt up to and including the weights sentence."""
    return (
        f"Here is an instruction for a multimodal LLM: ' {sample.instruction} You need to grade if the "
        "response from the model follows each component of the instruction. "
        f"{original_components(sample)} The response is:' {response}' You need to score the response "
        f"and be strict. The total score ranges from 0 to {score_range}, depending on if the response "
        f"follows the instruction. {original_score_sentence(sample.weights)}"
    )


_COMPONENT_RE = re.compile(r"(?:score\s+of\s+)?component\s+(\d+)\s*:\s*(\d+)\s*/\s*(\d+)", re.IGNORECASE)
_TOTAL_RE = re.compile(r"total\s+score\s*:\s*(\d+)\s*/\s*(\d+)", re.IGNORECASE)


def _ratio(numerator: str, denominator: str) -> float:
    den = int(denominator)
    value = int(numerator) / den if den else 0.0
    return min(1.0, max(0.0, value))


@dataclass(frozen=True)
class RegexResult:
    by_key: dict[str, float]
    total: float
    matched: bool  # whether any score was found at all


def regex_parse(reply: str | None, keys: list[str]) -> RegexResult:
    """lmms-eval HEAD / evalscope 1.5-1.10 parser (see the protocol reference §5.2).

    Components: every match, in order, later ones overwrite earlier ones.
    Total: the *first* match.  Without a total, the unweighted mean of the
    ratios found so far, taken before missing components are zero-filled.
    """
    scores: dict[str, float] = {}
    matched = False
    total: float | None = None
    if isinstance(reply, str) and reply:
        for k, num, den in _COMPONENT_RE.findall(reply):
            k_int = int(k)
            if 1 <= k_int <= len(keys):
                scores[keys[k_int - 1]] = _ratio(num, den)
                matched = True
        found = _TOTAL_RE.search(reply)
        if found:
            total = _ratio(found.group(1), found.group(2))
            matched = True
    if total is None:
        total = sum(scores.values()) / len(scores) if scores else 0.0
    for key in keys:
        scores.setdefault(key, 0.0)
    scores = {key: (value if 0.0 <= value <= 1.0 else 0.0) for key, value in scores.items()}
    if not 0.0 <= total <= 1.0:
        total = 0.0
    return RegexResult(scores, total, matched)
