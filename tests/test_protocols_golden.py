"""Golden judge prompts: rows 0, 2, 241, 247, 255 and 286 of the real
instruction file, response ``<RESPONSE>``, one file per protocol and row.

Each golden file holds the prompt followed by exactly one newline.  The
files were written from the reference texts (§4), not dumped from this
package; two spot checks below tie them to the reference document itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_miabench.protocols import SampleSpec, builtin_protocols

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
ROWS = (0, 2, 241, 247, 255, 286)
NAMES = ("apple", "evalscope", "evalscope-json", "lmms-eval", "vlmevalkit")
RESPONSE = "<RESPONSE>"


@pytest.fixture(scope="module")
def rows() -> list[dict[str, object]]:
    return json.loads((HERE / "data" / "instruction_benchmark_all.json").read_text(encoding="utf-8"))


def spec_of(rows: list[dict[str, object]], index: int) -> SampleSpec:
    row = rows[index]
    return SampleSpec(
        index=index,
        instruction=str(row["instruction"]),
        type=str(row["type"]),
        components=tuple(row["components"]),  # type: ignore[arg-type]
        weights=tuple(row["component_weight"]),  # type: ignore[arg-type]
        component_types=tuple(row["component_type"]),  # type: ignore[arg-type]
    )


def golden(name: str, index: int) -> str:
    raw = (GOLDEN / name / f"row{index}.txt").read_bytes().decode("utf-8")
    assert raw.endswith("\n") and not raw.endswith("\n\n"), "golden files end with exactly one newline"
    return raw[:-1]


def test_every_protocol_has_goldens() -> None:
    assert set(builtin_protocols()) == set(NAMES)
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(NAMES)


@pytest.mark.parametrize("index", ROWS, ids=[f"row{i}" for i in ROWS])
@pytest.mark.parametrize("name", NAMES)
def test_prompt_matches_golden(rows: list[dict[str, object]], name: str, index: int) -> None:
    protocol = builtin_protocols()[name]()
    assert protocol.build_prompt(spec_of(rows, index), RESPONSE) == golden(name, index)


# §4.1 "Rendered row 0", copied from the reference document.
REFERENCE_ROW0 = (
    "Here is an instruction for a multimodal LLM: ' Explain the activity taking place in the image using exactly "
    "two sentences, including one metaphor. You need to grade if the response from the model follows each "
    "component of the instruction. The first component is:' Explain the activity taking place in the image', and "
    "the second component is:' using exactly two sentences', and the third component is:' including one "
    "metaphor' The response is:' <RESPONSE>' You need to score the response and be strict. The total score "
    "ranges from 0 to 10, depending on if the response follows the instruction. The first second, and third "
    "component is each worth 4, 3 and 3 scores. List scores of each component, and the total score in one "
    "sentence in this format: score of component 1: x/2, score of component 2: y/8, total score: z/10. Then "
    "explain your reasons."
)


def test_apple_row0_golden_is_the_reference_rendering() -> None:
    assert golden("apple", 0) == REFERENCE_ROW0


def test_evalscope_row241_uses_the_weight_sum() -> None:
    text = golden("evalscope", 241)
    assert "The total score ranges from 0 to 8," in text
    assert "score of component 1: x1/4, score of component 2: x2/2, score of component 3: x3/2, total score: z/8." in text
    assert "0 to 10" not in text and "z/10" not in text
    # The original-body protocols keep the hard-coded 10 for the same row.
    for name in ("apple", "lmms-eval", "vlmevalkit"):
        assert "from 0 to 10," in golden(name, 241) and "z/10." in golden(name, 241)
    assert "from 0 to 8," in golden("evalscope-json", 241)


def test_quirks_are_kept(rows: list[dict[str, object]]) -> None:
    assert "The first second, and third component" in golden("apple", 0)
    assert "The first, second, third, fourth, and fifth component" in golden("vlmevalkit", 286)
    assert "1 scores.List scores" in golden("vlmevalkit", 286)  # no space for n >= 3
    assert "6 and 4 scores. List scores" in golden("vlmevalkit", 2)  # a space for n = 2
    # Texts are inserted verbatim, trailing spaces included (row 255's second component).
    assert "characters. '" in golden("apple", 255)
    assert golden("evalscope-json", 286).endswith('- "component_5": a number >= 0.0 and <= 1.0')
