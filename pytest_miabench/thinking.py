"""``<think>…</think>`` blocks in model text.

Reasoning models served by vLLM or SGLang often put their thinking in the
answer itself.  The report keeps it (``samples[].reasoning``); whether the
judge sees it is the protocol's rule (evalscope removes the first block and
trims the rest, the other references pass the text unchanged).
"""

from __future__ import annotations

import re

# ``<think>``, ``<think >`` and ``<think attr=…>`` open a block.
_FIRST_BLOCK = re.compile(r"<think(?:\s[^>]*)?>(.*?)</think>", re.DOTALL)


def first_block(text: str) -> str | None:
    """The content of the first thinking block, or None."""
    found = _FIRST_BLOCK.search(text)
    return found.group(1) if found else None


def strip_first_block(text: str) -> str:
    """The text without its first thinking block, trimmed (evalscope's rule)."""
    return _FIRST_BLOCK.sub("", text, count=1).strip()
