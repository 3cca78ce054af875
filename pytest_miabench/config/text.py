"""Text a server sent, made safe for the formats that cannot carry all of it.

A server may send any JSON string, a lone UTF-16 surrogate (``"\\ud83d"``)
included.  Records and the cache keep the text exactly as sent.  UTF-8
cannot encode a lone surrogate, so where text leaves the process: the JSON
report carries it as a ``\\uXXXX`` escape (valid JSON that reads back the
same text); the judge's prompt, HTML, JUnit XML and the terminal get U+FFFD.
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def escape_surrogates_in_json(text: str) -> str:
    """JSON text (``ensure_ascii=False``) with each surrogate as ``\\uXXXX``.
    Surrogates can stand only inside JSON strings, where the escape is valid."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


#: The most of one input value (a path, a cell, a judge's field) a reason quotes.
QUOTE_LIMIT = 80


def clip(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``value`` quoted (as ``repr`` does) for a reason, cut to its first
    ``limit`` characters: a 100 KB cell in a reason is 100 KB in every
    report, once per row."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
