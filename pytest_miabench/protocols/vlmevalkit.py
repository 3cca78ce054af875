"""VLMEvalKit's ``MIA-Bench``: ``vlmeval/dataset/miabench.py`` of
open-compass/VLMEvalKit (unchanged since #597/#602, Nov 2024).

Its own prompt wording (closed quotes, different punctuation), the judge
sees the text and then the image at ``detail: low``, temperature 0,
``max_tokens`` 2048.  The parser and the failure policy (drop) are the
Apple notebook's; so are the metrics (``total_score`` + per type means).

VLMEvalKit's default pipeline stores the predictions, and later the judge
replies, in ``.xlsx`` files (``PRED_FORMAT`` unset: ``vlmeval/smp/file.py``
``get_pred_file_format``) written by xlsxwriter and read back with
``pd.read_excel``; both texts pass through that round trip (``xlsx_cell``)
before the prompt is built and the reply parsed.
"""

from __future__ import annotations

import re
from typing import ClassVar

from . import common
from .base import DROPPED, Protocol, SampleSpec, Verdict

# Weights sentence per component count.  Unlike the original, n >= 3 has no
# trailing space, so the prompt reads "... scores.List scores ..." (verbatim).
_SCORE = {
    1: "The first component is worth: {} scores. ",
    2: "The first and second component is each worth {} and {} scores. ",
    3: "The first, second, and third component is each worth {}, {}, and {} scores.",
    4: "The first, second, third, and fourth component is each worth {}, {}, {}, and {} scores.",
    5: "The first, second, third, fourth, and fifth component is each worth {}, {}, {}, {}, and {} scores.",
}


# pandas' default ``na_values`` (``pandas._libs.parsers.STR_NA_VALUES``, the
# same list from pandas 2.0 to 3.x): a cell whose whole text is one of these
# reads back as NaN, which the prompt's f-string prints as "nan".
PANDAS_NA_STRINGS = frozenset(
    {
        "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
        "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
    }
)  # fmt: skip
# vlmeval/api/base.py ``fail_msg``: what an empty judge reply becomes.
_API_FAILURE = "Failed to obtain answer via API."
_EXCEL_MAX_UTF16 = 32767  # Excel's cell limit, in UTF-16 code units
_ESCAPE_LIKE = re.compile(r"(_x[0-9a-fA-F]{4}_)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f]")


def xlsx_cell(text: str) -> str | None:
    """A text cell after VLMEvalKit's xlsx round trip (None: it reads as NaN).

    Written by xlsxwriter (3.3): cut to 32767 UTF-16 units without
    splitting a pair; a literal ``_xHHHH_`` gets its underscore escaped
    (``_x005F_xHHHH_``) and control characters other than tab and newline
    become ``_xHHHH_``.  Read by openpyxl (3.1), which drops every
    ``x005F_`` and keeps the other escapes as text.  Then pandas turns a
    default NA string into NaN, which f-strings print "nan".  (Older xlsxwriter releases
    cut at 32767 code points instead.)
    """
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > _EXCEL_MAX_UTF16:
            text = text[:index]
            break
    text = _ESCAPE_LIKE.sub(r"_x005F\1", text)
    text = _CONTROL.sub(lambda found: f"_x{ord(found.group(0)):04X}_", text)
    text = text.replace("x005F_", "")
    return None if text in PANDAS_NA_STRINGS else text


def _printed(text: str) -> str:
    cell = xlsx_cell(text)
    return "nan" if cell is None else cell


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
        # The question and the prediction are xlsx cells by the time the
        # prompt is built: an empty answer or "NA" reads "nan".  (The
        # components are the repr of a list, eval()-ed: unaffected.)
        return (
            f"Here is an instruction for a multimodal LLM: '{_printed(sample.instruction)}'. You need to grade if the "
            "response from the model follows each component of the instruction. "
            f"{_components(sample.components)}The response is: '{_printed(response)}'. You need to score the response "
            "and be strict. The total score ranges from 0 to 10, depending on if the response follows the "
            f"instruction. {_SCORE[n].format(*sample.weights)}List scores of each component, and the total "
            "score in one sentence in this format: score of component 1: x/2, score of component 2: y/8, "
            "total score: z/10. Then explain your reasons."
        )

    def parse(self, sample: SampleSpec, reply: str | None) -> Verdict:
        # Same split parser as the notebook.  VLMEvalKit's API wrapper
        # strips the reply (vlmeval/api/gpt.py) and an empty one becomes its
        # failure message, which the parser cannot read: dropped.  The reply
        # is then stored in the judge's xlsx file and read back before
        # parsing, so a control character such as "\r" turns into the text
        # "_x000D_" and an "NA" reply into NaN.
        if not isinstance(reply, str):
            return common.split_verdict(sample, reply)
        cell = xlsx_cell(reply.strip() or _API_FAILURE)
        if cell is None:
            why = "the reply reads back from the xlsx file as NaN (the reference fails with AttributeError)"
            return Verdict(DROPPED, None, (None,) * len(sample.components), {}, why)
        return common.split_verdict(sample, cell)
