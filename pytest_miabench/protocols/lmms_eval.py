"""lmms-eval's ``mia_bench`` task at HEAD: ``lmms_eval/tasks/mia_bench/utils.py``
of EvolvingLMMs-Lab/lmms-eval since PR #774 (2025-07-30).

The original prompt body with a stricter format sentence, a text-only
judge at temperature 0 and ``max_tokens`` 1024, the regex parser keyed by
component *texts*, unreadable replies scored 0.  lmms-eval reports one
number (``gpt_eval_score``): the mean ``total_score`` over all samples.
"""

from __future__ import annotations

from typing import ClassVar

from . import common
from .base import SCORED, ZERO, Protocol, SampleSpec, Verdict

# Replaces the original final sentence.  The example stays the fixed
# x/2, y/8, z/10 one, and the body keeps "0 to 10".
_FORMAT_LINE = (
    " List scores of each component, and the total score in one sentence in this EXACT format: "
    "score of component 1: x/2, score of component 2: y/8, total score: z/10. "
    "Use only numbers for x, y, z. Do not use markdown formatting or asterisks. Then explain your reasons."
)


class LmmsEvalProtocol(Protocol):
    """lmms-eval's protocol (text-only judge, regex parser keyed by texts, failures = 0)."""

    name: ClassVar[str] = "lmms-eval"
    prompt_version: ClassVar[str] = "lmms-eval-pr774"
    judge_sees_image: ClassVar[bool] = False
    image_detail: ClassVar[str | None] = None
    temperature: ClassVar[float | None] = 0.0
    max_tokens: ClassVar[int | None] = 1024
    headline: ClassVar[str] = "total_score"

    def build_prompt(self, sample: SampleSpec, response: str) -> str:
        # lmms-eval judges ``results[0].strip()``, not the raw answer.
        return common.original_body(sample, response.strip(), score_range="10") + _FORMAT_LINE

    def parse(self, sample: SampleSpec, reply: str | None) -> Verdict:
        # lmms-eval passes ``doc["components"]`` where the parser expects
        # component types, so the keys are the component texts: duplicated
        # types never collide (it changes the no-total fallback mean).
        keys = list(sample.components)
        result = common.regex_parse(reply, keys)
        per_position = tuple(result.by_key[key] for key in keys)
        # Only the total is aggregated; a failure is a counted 0.
        metrics = {"total_score": result.total}
        if result.matched:
            return Verdict(SCORED, result.total, per_position, metrics)
        return Verdict(ZERO, 0.0, per_position, metrics, "no score found in the judge reply; counted as 0")
