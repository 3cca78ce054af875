"""Runs of the small dataset with a score scripted per sample, and a
baseline report made from one (shared by the gate, compare and GitHub tests)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from support.server import Reply, Request

if TYPE_CHECKING:
    from conftest import Bench


def per_sample(bench: Bench, rows: list[dict[str, Any]], picked: Sequence[int], scores: Sequence[int], answer: str = "answer") -> None:
    """Judge sample ``i`` of the dataset made of ``rows[picked]`` ``scores[i]``/10;
    the model's answer names the score, so a changed score is a changed answer."""
    instructions = [rows[i]["instruction"] for i in picked]

    def script(request: Request) -> Reply:
        position = next(i for i, text in enumerate(instructions) if text in request.text)
        if request.role == "judge":
            return Reply(f"total score: {scores[position]}/10")
        return Reply(f"{answer} {scores[position]}")

    bench.server.script = script


def make_baseline(
    bench: Bench, rows: list[dict[str, Any]], picked: Sequence[int], scores: Sequence[int], *extra: str, name: str = "baseline.json", answer: str = "answer"
) -> Path:
    per_sample(bench, rows, picked, scores, answer)
    result = bench.run("-p", "no:cacheprovider", *extra)
    assert result.ret == 0, result.stdout.str()
    path = bench.pytester.path / name
    bench.report_path.replace(path)
    return path
