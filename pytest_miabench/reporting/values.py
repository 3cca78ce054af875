"""Values read back from a report, as the HTML page and the GitHub job
summary show them.

Both read the report as plain data (JSON), where any field may be missing
or of the wrong type.  The readers give a harmless default instead; the
formatters print ``n/a`` for what is not a finite number (a bool is not a
number here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def sequence(value: Any) -> Sequence[Any]:
    """``value`` when it is a list or tuple, else an empty one."""
    return value if isinstance(value, (list, tuple)) else ()


def text(value: Any) -> str:
    """A value shown as text; None is empty."""
    return "" if value is None else str(value)


def number(value: Any) -> float | None:
    """``value`` as a float when it is a finite int or float, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def integer(value: Any) -> int | None:
    """``value`` when it is an int (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def pair(value: Any) -> tuple[float, float] | None:
    """An interval ``[lo, hi]`` of two numbers, in order; else None."""
    seq = sequence(value)
    if len(seq) != 2:
        return None
    lo, hi = number(seq[0]), number(seq[1])
    if lo is None or hi is None:
        return None
    return (lo, hi) if lo <= hi else (hi, lo)


def fixed(value: Any, digits: int = 4) -> str:
    """``0.7312``: a number with ``digits`` decimals, or n/a."""
    v = number(value)
    return "n/a" if v is None else f"{v:.{digits}f}"


def signed(value: Any, digits: int = 4) -> str:
    """``+0.0400`` / ``-0.5000``: a change, always with its sign, or n/a.
    A negative zero prints as ``+0.0000`` (``+ 0.0`` makes it positive):
    no change is never shown as a drop."""
    v = number(value)
    return "n/a" if v is None else f"{v + 0.0:+.{digits}f}"


def count(value: Any) -> str:
    """An int as it is, or n/a."""
    v = integer(value)
    return "n/a" if v is None else str(v)
