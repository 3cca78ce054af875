"""``<think>…</think>`` blocks in model text.

Reasoning models served by vLLM or SGLang often put their thinking in the
answer itself.  The report keeps it (``samples[].reasoning``); whether the
judge sees it is the protocol's rule (evalscope takes the first block out of
the model's answer and of the judge's reply; the other references pass the
text unchanged).
"""

from __future__ import annotations

import re

# evalscope's ``parse_content_with_reasoning`` (evalscope/api/messages/utils.py,
# unchanged from 1.0 to at least 1.14): only ``<think>``, ``<think >``,
# ``<think signature="...">`` and ``<think redacted="true">`` (in that order,
# double quotes, case-sensitive) open a block, which must be closed.
_EVALSCOPE_BLOCK = re.compile(r'<think(?:\s+signature="([^"]*)")?(?:\s+redacted="(true)")?\s*>(.*?)</think>', re.DOTALL)

# For the report's ``reasoning`` only (display, never scoring): any
# ``<think …>`` opener, so an answer whose block evalscope would not
# recognise still shows its thinking apart.
_ANY_BLOCK = re.compile(r"<think(?:\s[^>]*)?>(.*?)</think>", re.DOTALL)


def first_block(text: str) -> str | None:
    """The content of the first thinking block, or None."""
    found = _ANY_BLOCK.search(text)
    return found.group(1) if found else None


def strip_first_block(text: str) -> str:
    """The text as evalscope's message model leaves it: the first block it
    recognises cut out and what is left ``.strip()``-ed; a text without
    such a block is returned untouched (not stripped)."""
    found = _EVALSCOPE_BLOCK.search(text)
    if found is None:
        return text
    return (text[: found.start()] + text[found.end() :]).strip()
