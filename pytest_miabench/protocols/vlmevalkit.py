"""VLMEvalKit's ``MIA-Bench``: ``vlmeval/dataset/miabench.py`` of
open-compass/VLMEvalKit (unchanged since #597/#602, Nov 2024).

Its own prompt wording (closed quotes, different punctuation), the judge
sees the text and then the image at ``detail: low``, temperature 0,
``max_tokens`` 2048.  The parser and the failure policy (drop) are the
Apple notebook's; so are the metrics (``total_score`` + per type means).
"""

from __future__ import annotations

from typing import ClassVar

from . import common
from .base import Protocol, SampleSpec, Verdict

# Weights sentence per component count.  Unlike the original, n >= 3 has no
# trailing space, so the prompt reads "... scores.List scores ..." (verbatim).
_SCORE = {
    1: "The first component is worth: {} scores. ",
    2: "The first and second component is each worth {} and {} scores. ",
    3: "The first, second, and third component is each worth {}, {}, and {} scores.",
    4: "The first, second, third, and fourth component is each worth {}, {}, {}, and {} scores.",
    5: "The first, second, third, fourth, and fifth component is each worth {}, {}, {}, {}, and {} scores.",
}


def _components(texts: tuple[str, ...]) -> str:
    # Only the first component gets "is:"; the others read "is '...'".
    if len(texts) == 1:
        return f"The first component is: '{texts[0]}'. "
    parts = [f"The first component is: '{texts[0]}'"]
    for ordinal, text in zip(common.ORDINALS[1:], texts[1:]):
        parts.append(f", and the {ordinal} component is '{text}'")
    return "".join(parts) + ". "


class VLMEvalKitProtocol(Protocol):
    """VLMEvalKit's protocol (judge sees the image at low detail, split parser, drops)."""

    name: ClassVar[str] = "vlmevalkit"
    prompt_version: ClassVar[str] = "vlmevalkit-2024-11"
    judge_sees_image: ClassVar[bool] = True
    image_detail: ClassVar[str | None] = "low"
    temperature: ClassVar[float | None] = 0.0
    max_tokens: ClassVar[int | None] = 2048
    headline: ClassVar[str] = "total_score"

    def build_prompt(self, sample: SampleSpec, response: str) -> str:
        n = common.check_component_count(sample)
        return (
            f"Here is an instruction for a multimodal LLM: '{sample.instruction}'. You need to grade if the "
            "response from the model follows each component of the instruction. "
            f"{_components(sample.components)}The response is: '{response}'. You need to score the response "
            "and be strict. The total score ranges from 0 to 10, depending on if the response follows the "
            f"instruction. {_SCORE[n].format(*sample.weights)}List scores of each component, and the total "
            "score in one sentence in this format: score of component 1: x/2, score of component 2: y/8, "
            "total score: z/10. Then explain your reasons."
        )

    def parse(self, sample: SampleSpec, reply: str | None) -> Verdict:
        # Same split parser as the notebook.  An API failure comes back as
        # "Failed to obtain answer via API. ", which it cannot read: dropped.
        return common.split_verdict(sample, reply)
