"""The reference scorers' rules, restated as plain executable statements for
the parity tests.  Written from the upstream sources (evalscope 1.5.2-1.10
``parse_mia_score`` and >= 1.11 ``OutputContract.parse``, lmms-eval's
``process_rawscore``, the Apple notebook / VLMEvalKit ``process_rawscore``,
pydantic-core's ``str_as_float``, VLMEvalKit's xlsx storage), never from
the plugin's code: nothing here imports ``pytest_miabench``.

Each function returns what the reference computes for one judge reply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

# ---------------------------------------------------------------- think blocks


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def _attribute(text: str, at: int, name: str, value: str | None) -> int | None:
    """Position after ``<ws>+name="value"`` at ``at`` (any value without a
    quote when ``value`` is None), or None."""
    after_space = _skip_space(text, at)
    if after_space == at or not text.startswith(f'{name}="', after_space):
        return None
    start = after_space + len(name) + 2
    end = text.find('"', start)
    if end < 0 or (value is not None and text[start:end] != value):
        return None
    return end + 1


def evalscope_visible(reply: str) -> str:
    """evalscope's ``parse_content_with_reasoning`` on the judge's content:
    the leftmost ``<think[ signature="…"][ redacted="true"] *>`` that has a
    ``</think>`` after it is cut out with everything up to that first
    ``</think>``, and the rest is stripped; with no such block the text is
    returned unchanged."""
    at = reply.find("<think")
    while at >= 0:
        pos: int | None = at + len("<think")
        pos = _attribute(reply, pos, "signature", None) or pos
        pos = _attribute(reply, pos, "redacted", "true") or pos
        pos = _skip_space(reply, pos)
        if pos < len(reply) and reply[pos] == ">":
            close = reply.find("</think>", pos + 1)
            if close >= 0:
                return (reply[:at] + reply[close + len("</think>") :]).strip()
        at = reply.find("<think", at + 1)
    return reply


# ---------------------------------------------------- lmms-eval / evalscope text

_COMPONENT = r"(?:score\s+of\s+)?component\s+(\d+)\s*:\s*(\d+)\s*/\s*(\d+)"
_TOTAL = r"total\s+score\s*:\s*(\d+)\s*/\s*(\d+)"
CPYTHON_DEFAULT_INT_MAX_STR_DIGITS = 4300


def reference_int(digits: str) -> int:
    """``int()`` under CPython's default limit, computed without ``int(str)``
    so that this process's own limit plays no part."""
    if len(digits) > CPYTHON_DEFAULT_INT_MAX_STR_DIGITS:
        raise ValueError("Exceeds the limit (4300 digits) for integer string conversion")
    return int(Decimal(digits))


INT_SPACE = {c for c in map(chr, range(0x3001)) if c.isspace()} - set("\x1c\x1d\x1e\x1f")


def python_int(text: str) -> int:
    """``int(text)`` under CPython's default limit: optional whitespace
    around an optionally signed run of decimal digits with single
    underscores between them; the digits (leading zeros and all) count.
    The whitespace is Unicode White_Space: str.isspace() but U+001C-U+001F."""
    body = text
    while body and body[0] in INT_SPACE:
        body = body[1:]
    while body and body[-1] in INT_SPACE:
        body = body[:-1]
    unsigned = body[1:] if body[:1] in ("+", "-") else body
    parts = unsigned.split("_")
    if not all(part and all(c.isdecimal() for c in part) for part in parts):
        raise ValueError(f"invalid literal for int() with base 10: {text!r}")
    value = reference_int("".join(parts))
    return -value if body.startswith("-") else value


def regex_reference(raw: str | None, keys: Sequence[str]) -> dict[str, float]:
    """``process_rawscore`` / ``parse_mia_score`` with its try blocks."""
    if not raw:
        return {**dict.fromkeys(keys, 0.0), "total_score": 0.0}
    scores: dict[str, float] = {}
    try:
        for match in re.findall(_COMPONENT, raw, re.IGNORECASE):
            try:
                index = reference_int(match[0]) - 1
                if 0 <= index < len(keys):
                    numerator, denominator = reference_int(match[1]), reference_int(match[2])
                    score = numerator / denominator if denominator != 0 else 0.0
                    scores[keys[index]] = max(0.0, min(1.0, score))
            except (ValueError, IndexError):
                continue
    except Exception:  # noqa: BLE001 - the reference's
        pass
    try:
        total = re.search(_TOTAL, raw, re.IGNORECASE)
        if total:
            numerator, denominator = reference_int(total.group(1)), reference_int(total.group(2))
            score = numerator / denominator if denominator != 0 else 0.0
            scores["total_score"] = max(0.0, min(1.0, score))
        else:
            scores["total_score"] = sum(scores.values()) / len(scores) if scores else 0.0
    except Exception:  # noqa: BLE001 - the reference's
        scores["total_score"] = 0.0
    for key in keys:
        scores.setdefault(key, 0.0)
    return {key: value if 0 <= value <= 1 else 0.0 for key, value in scores.items()}


# ------------------------------------------------------------- evalscope JSON

# Unicode White_Space, what Rust's str::trim removes (the same set).
_RUST_SPACE = INT_SPACE


def _rust_parses(text: str) -> bool:
    """Rust's ``f64::from_str``: Python's ``float`` grammar without
    underscores, whitespace or non-ASCII digits."""
    if not text.isascii() or "_" in text or any(c.isspace() for c in text):
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def pydantic_float(value: Any) -> float | None:
    """pydantic v2 lax ``float`` of a ``json.loads`` value (None: refused)."""
    if isinstance(value, float):
        return value
    if isinstance(value, (bool, int)):
        try:
            return float(value)
        except OverflowError:
            return None
    if not isinstance(value, str):
        return None
    trimmed = value
    while trimmed and trimmed[0] in _RUST_SPACE:
        trimmed = trimmed[1:]
    while trimmed and trimmed[-1] in _RUST_SPACE:
        trimmed = trimmed[:-1]
    if _rust_parses(trimmed):
        return float(trimmed)
    if "_" not in value or "__" in value or value[0] == "_" or value[-1] == "_":
        return None
    joined = value.replace("_", "")
    return float(joined) if _rust_parses(joined) else None


def payloads(text: str) -> list[str]:
    """evalscope's ``_payloads`` brace scan."""
    found, depth, start, in_string, escaped = [], 0, 0, False, False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            start = index if depth == 0 else start
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                found.append(text[start : index + 1])
    return found


def json_reference(reply: str, weights: Sequence[int]) -> tuple[float, ...] | None:
    """evalscope >= 1.11: component values, or None for a parse_error."""
    text = evalscope_visible(reply)
    if not text:
        return None
    objects = payloads(text)
    if len(objects) != 1:
        return None
    try:
        data = json.loads(objects[0])
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("reasoning", ""), str):
        return None
    values = []
    for i, weight in enumerate(weights, start=1):
        value = pydantic_float(data[f"component_{i}"]) if f"component_{i}" in data else None
        if value is None or not 0.0 <= value <= weight:
            return None
        values.append(value)
    return tuple(values)


# ------------------------------------------------------ Apple / VLMEvalKit


def split_reference(raw: Any, component_types: Sequence[str]) -> dict[str, float] | None:
    """The notebook's ``process_rawscore``; None where it raises (the caller's
    bare except drops the sample)."""
    try:
        first_sentence = raw.split(".")[0].split(",")
        score_dict = {}
        for i in range(len(first_sentence) - 1):
            score_ = first_sentence[i].split(":")[1][1:].split("/")
            score_dict[component_types[i]] = python_int(score_[0]) / python_int(score_[1])
        total_ = first_sentence[i + 1].split(":")[1][1:].split("/")  # NameError after an empty loop
        score_dict["total_score"] = python_int(total_[0]) / python_int(total_[1])
    except Exception:  # noqa: BLE001 - the reference's bare except
        return None
    return score_dict


PANDAS_DEFAULT_NA = {
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
}  # fmt: skip


def xlsx_round_trip(text: str) -> str | float:
    """A string cell written by xlsxwriter and read by openpyxl + pandas."""
    units, cut = 0, len(text)
    for index, char in enumerate(text):
        units += len(char.encode("utf-16-le")) // 2
        if units > 32767:
            cut = index
            break
    text = text[:cut]
    out, free_from = [], 0
    for index, char in enumerate(text):
        # xlsxwriter escapes the underscore of each literal "_xHHHH_" (matches do not overlap)
        if index >= free_from and re.match(r"_x[0-9A-Fa-f]{4}_", text[index : index + 7]):
            out.append("_x005F")
            free_from = index + 7
        out.append(f"_x{ord(char):04X}_" if ord(char) < 0x20 and char not in "\t\n" else char)
    read = "".join(out).replace("x005F_", "")  # openpyxl's read_string_table
    return float("nan") if read in PANDAS_DEFAULT_NA else read


def vlmevalkit_reference(reply: str, component_types: Sequence[str]) -> dict[str, float] | None:
    """VLMEvalKit: the API wrapper strips the judge's text (empty: its failure
    message), the reply goes through the judge's xlsx file, then the split parser."""
    stripped = reply.strip() or "Failed to obtain answer via API."
    return split_reference(xlsx_round_trip(stripped), component_types)
