"""evalscope 1.5.2-1.10.0: ``evalscope/benchmarks/mia_bench/{utils.py,
mia_bench_adapter.py}``.

The original prompt body with the range 0 to sum(weights), a per-sample
EXACT format line, a text-only judge at temperature 0 and ``max_tokens``
4096, the regex parser keyed by component *types* reading the judge reply
without its first think block, unreadable replies (judge errors included)
scored 0.  Metrics: ``total_score`` and ``component_{i}_{type}`` means.
(``mia_bench`` first appears in 1.5.2; 1.5.0 and 1.5.1 lack it.)
"""

from __future__ import annotations

from typing import ClassVar

from . import common
from .base import SCORED, ZERO, Protocol, SampleSpec, Verdict


class EvalscopeProtocol(Protocol):
    """evalscope's text protocol (versions 1.5.2-1.10.0), text-only judge."""

    name: ClassVar[str] = "evalscope"
    prompt_version: ClassVar[str] = "evalscope-1.10"
    judge_sees_image: ClassVar[bool] = False
    image_detail: ClassVar[str | None] = None
    temperature: ClassVar[float | None] = 0.0
    max_tokens: ClassVar[int | None] = 4096
    headline: ClassVar[str] = "total_score"
    strips_answer_thinking: ClassVar[bool] = True

    def build_prompt(self, sample: SampleSpec, response: str) -> str:
        total = sum(sample.weights)
        # Unlike the original, the example follows the sample: one
        # "x{k}/{W_k}" per component and "z/{sum}" (row 241: "0 to 8", "z/8").
        parts = [f"score of component {k}: x{k}/{w}" for k, w in enumerate(sample.weights, start=1)]
        parts.append(f"total score: z/{total}")
        format_line = (
            f" List scores of each component, and the total score in one sentence in this EXACT format: "
            f"{', '.join(parts)}. Use only numbers for score values. "
            "Do not use markdown formatting or asterisks. Then explain your reasons."
        )
        return common.original_body(sample, response, score_range=str(total)) + format_line

    def parse(self, sample: SampleSpec, reply: str | None) -> Verdict:
        # Keys are component *types*: duplicated types collapse (last write
        # wins), so every position of a type reports the same value and the
        # no-total fallback averages over distinct types.
        keys = list(sample.component_types)
        # evalscope's message model takes the first <think> block out of
        # the judge's text before the parser sees it (lmms-eval does not).
        result = common.regex_parse(common.evalscope_reply_text(reply), keys)
        per_position = tuple(result.by_key[key] for key in keys)
        metrics = {"total_score": result.total}
        for i, (ctype, value) in enumerate(zip(keys, per_position), start=1):
            metrics[f"component_{i}_{ctype}"] = value
        if result.matched:
            return Verdict(SCORED, result.total, per_position, metrics)
        return Verdict(ZERO, 0.0, per_position, metrics, "no score found in the judge reply; counted as 0")
