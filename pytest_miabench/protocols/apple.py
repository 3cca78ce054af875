"""Apple's original protocol: ``evaluation.ipynb`` of apple/ml-mia-bench, the
benchmark's own definition.  The notebook is the same from the first commit
(89171af, 2024-08-12) to HEAD (5422852, 2025-03-09): later commits touch only
README.md and the data file.

The judge (gpt-4o in the notebook) sees the text and then the image, the
temperature is left to the API default and ``max_tokens`` is 2000.  The reply
is read by the split parser; a reply it cannot read is dropped from every
mean.  Metrics: ``total_score`` and one mean per component type.
"""

from __future__ import annotations

from typing import ClassVar

from . import common
from .base import Protocol, SampleSpec, Verdict


class AppleProtocol(Protocol):
    """The Apple notebook protocol (judge sees the image, split parser, drops)."""

    name: ClassVar[str] = "apple"
    prompt_version: ClassVar[str] = "apple-nb-89171af"
    judge_sees_image: ClassVar[bool] = True
    # The notebook sends the image part without a detail setting, and as a
    # bare URL string (``"image_url": url``); the base class sends the
    # ``{"url": ...}`` object today's API requires.
    image_detail: ClassVar[str | None] = None
    # The notebook never sets a temperature: the API default (1.0) applies.
    temperature: ClassVar[float | None] = None
    max_tokens: ClassVar[int | None] = 2000
    headline: ClassVar[str] = "total_score"

    def build_prompt(self, sample: SampleSpec, response: str) -> str:
        # "0 to 10" and the fixed x/2, y/8, z/10 example are hard-coded, even
        # for the two rows whose weights sum to 8 (every commit says "y/8").
        return common.original_body(sample, response, score_range="10") + common.ORIGINAL_FORMAT_LINE

    def parse(self, sample: SampleSpec, reply: str | None) -> Verdict:
        # The notebook stores ``content.strip()``; the split parser itself is
        # insensitive to outer whitespace, but strip for fidelity.
        # (A model answer of 'error' is never judged there: in this plugin a
        # failed model call fails the sample before any judging.)
        text = reply.strip() if isinstance(reply, str) else reply
        return common.split_verdict(sample, text)
