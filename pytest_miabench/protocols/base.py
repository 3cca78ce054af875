"""The interface every judge protocol implements.

A protocol decides four things, and only these: the judge prompt, the judge's
sampling settings (and whether it sees the image), how a reply becomes a
verdict, and how verdicts become the reference implementation's metrics.
Everything else (calling, caching, retries, our own breakdowns) is shared.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .thinking import strip_first_block

# Statuses a verdict can have.  "failed" (the sample could not be run at all)
# is not a verdict: it is decided outside the protocol.
SCORED = "scored"  # a usable verdict; counts in the mean
ZERO = "zero"  # unusable reply the protocol counts as 0 (lmms-eval, evalscope)
DROPPED = "dropped"  # unusable reply the protocol leaves out of every mean (apple, vlmevalkit)
EXCLUDED = "excluded"  # same, in evalscope-json's words (parse_error)
VERDICT_STATUSES = (SCORED, ZERO, DROPPED, EXCLUDED)


@dataclass(frozen=True)
class SampleSpec:
    """What a protocol may know about a sample: the instruction and its parts."""

    index: int
    instruction: str
    type: str
    components: tuple[str, ...]
    weights: tuple[int, ...]
    component_types: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    """One judge reply, read by one protocol.

    ``score`` is the sample's normalized score (None when the protocol leaves
    the sample out).  ``components`` holds, per component position, the
    normalized score the protocol assigns (None where it assigns none).
    ``metrics`` holds this sample's contribution to the reference metrics,
    e.g. ``{"describe": 1.0, "total_score": 0.9}``; ``aggregate`` averages
    each key over the samples that have it, as the references do.
    """

    status: str
    score: float | None
    components: tuple[float | None, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""


class Protocol(ABC):
    """A judge protocol.  Subclass it, set the class attributes, implement
    ``build_prompt`` and ``parse``; register it with the
    ``pytest_miabench_register_protocols`` hook."""

    name: ClassVar[str]
    #: Bump when the prompt text changes: the reports name it (the judge
    #: cache key is the request itself, so a new prompt is never served an old verdict).
    prompt_version: ClassVar[str] = "1"
    #: Whether the reference sends the image to the judge.
    judge_sees_image: ClassVar[bool] = False
    #: OpenAI image ``detail`` for the judge's image part (None: not sent).
    image_detail: ClassVar[str | None] = None
    #: The reference's sampling settings (None: leave to the server).
    temperature: ClassVar[float | None] = 0.0
    max_tokens: ClassVar[int | None] = 4096
    #: Name of the headline metric in the reference's own output.
    headline: ClassVar[str] = "total_score"
    #: Whether the reference removes the first ``<think>`` block of the
    #: model's answer (trimming what is left) before building the judge prompt.
    strips_answer_thinking: ClassVar[bool] = False

    def judge_answer(self, response: str) -> str:
        """The model's answer as the reference puts it into the judge prompt."""
        return strip_first_block(response) if self.strips_answer_thinking else response

    @abstractmethod
    def build_prompt(self, sample: SampleSpec, response: str) -> str:
        """The judge prompt text, byte for byte as the reference builds it."""

    @abstractmethod
    def parse(self, sample: SampleSpec, reply: str | None) -> Verdict:
        """Read a judge reply (None: no text came back) into a verdict."""

    def judge_content(self, prompt: str, image_uri: str | None) -> str | list[dict[str, Any]]:
        """The judge's user-message content: plain text, or text then image."""
        if image_uri is None:
            return prompt
        image: dict[str, Any] = {"url": image_uri}
        if self.image_detail:
            image["detail"] = self.image_detail
        return [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": image}]

    def aggregate(self, verdicts: Sequence[tuple[SampleSpec, Verdict]]) -> dict[str, float]:
        """The reference's metrics: each key of ``Verdict.metrics`` averaged
        over the samples that produced it (denominators differ per key)."""
        sums: dict[str, list[float]] = {}
        for _, verdict in sorted(verdicts, key=lambda pair: pair[0].index):
            for key, value in verdict.metrics.items():
                sums.setdefault(key, []).append(value)
        return {key: math.fsum(values) / len(values) for key, values in sorted(sums.items())}
