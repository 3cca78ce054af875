"""evalscope 1.5-1.10: the original prompt body with the range 0 to sum(weights),
a per-sample EXACT format line, the regex parser, unparseable replies = 0."""

from __future__ import annotations

from typing import ClassVar

from . import common
from .base import SCORED, ZERO, Protocol, SampleSpec, Verdict


class EvalscopeProtocol(Protocol):
    """evalscope's text protocol (versions 1.5.2-1.10.0), text-only judge."""

    name: ClassVar[str] = "evalscope"
    prompt_version: ClassVar[str] = "evalscope-1.10"
    judge_sees_image: ClassVar[bool] = False
    temperature: ClassVar[float | None] = 0.0
    max_tokens: ClassVar[int | None] = 4096
    failure_status: ClassVar[str] = ZERO

    def build_prompt(self, sample: SampleSpec, response: str) -> str:
        total = sum(sample.weights)
        parts = ", ".join(
            f"score of component {k}: x{k}/{w}" for k, w in enumerate(sample.weights, start=1)
        )
        format_line = (
            " List scores of each component, and the total score in one sentence in this EXACT format: "
            f"{parts}, total score: z/{total}. Use only numbers for score values. "
            "Do not use markdown formatting or asterisks. Then explain your reasons."
        )
        return common.original_body(sample, response, score_range=str(total)) + format_line

    def parse(self, sample: SampleSpec, reply: str | None) -> Verdict:
        # Keys are component *types*: duplicated types collapse (last write wins).
        keys = list(sample.component_types)
        result = common.regex_parse(reply, keys)
        per_position = tuple(result.by_key[key] for key in keys)
        metrics = {"total_score": result.total}
        for i, (ctype, value) in enumerate(zip(keys, per_position), start=1):
            metrics[f"component_{i}_{ctype}"] = value
        status = SCORED if result.matched else ZERO
        reason = "" if result.matched else "no score found in the judge reply; counted as 0"
        return Verdict(status, result.total, per_position, metrics, reason)
