"""Rows into samples: a row's validation into a ``SampleSpec`` (or the
problem that makes it unusable), and the ``Source`` every reader is."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config.text import clip
from ..protocols.base import SampleSpec


class DatasetError(Exception):
    """The dataset as a whole cannot be loaded."""


class SampleDataError(Exception):
    """One sample's data is unusable; the message names the cause."""


@dataclass(frozen=True)
class Sample:
    """One benchmark row.  ``problem`` is set when the row is unusable."""

    index: int
    spec: SampleSpec | None
    type: str
    problem: str | None = None

    @property
    def name(self) -> str:
        return f"{self.index:04d}"


def _is_whole(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer()


def make_sample(index: int, row: dict[str, Any]) -> Sample:
    """Validate one row; an unusable row keeps its index and says why."""
    type_ = row.get("type")
    type_text = type_ if isinstance(type_, str) and type_ else "unknown"
    try:
        instruction = row.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise SampleDataError("instruction is empty or missing")
        if not isinstance(type_, str) or not type_:
            raise SampleDataError("type is empty or missing")
        components = row.get("components")
        weights = row.get("component_weight")
        ctypes = row.get("component_type")
        for key, value in (("components", components), ("component_weight", weights), ("component_type", ctypes)):
            if not isinstance(value, (list, tuple)) or not value:
                raise SampleDataError(f"{key} is empty or missing")
        assert isinstance(components, (list, tuple)) and isinstance(weights, (list, tuple))
        assert isinstance(ctypes, (list, tuple))
        if not len(components) == len(weights) == len(ctypes):
            raise SampleDataError(
                f"components ({len(components)}), component_weight ({len(weights)}) and "
                f"component_type ({len(ctypes)}) differ in length"
            )
        if len(components) > 5:
            raise SampleDataError(f"{len(components)} components; the benchmark defines at most 5")
        declared = row.get("num_of_component")
        if declared is not None and declared != len(components):
            raise SampleDataError(f"num_of_component is {clip(declared)} but there are {len(components)} components")
        for w in weights:
            if not _is_whole(w) or w <= 0:
                raise SampleDataError(f"component_weight {clip(w)} is not a positive whole number")
        for text in list(components) + list(ctypes):
            if not isinstance(text, str) or not text.strip():
                raise SampleDataError("a component or component_type is empty")
    except SampleDataError as exc:
        return Sample(index, None, type_text, f"row {index}: {exc}")
    spec = SampleSpec(
        index=index,
        instruction=instruction,
        type=type_,
        components=tuple(components),
        weights=tuple(int(w) for w in weights),
        component_types=tuple(ctypes),
    )
    return Sample(index, spec, type_)



class Source:
    """Rows plus lazy access to each row's image bytes."""

    description: str

    def __init__(self, description: str, rows: Sequence[dict[str, Any]]) -> None:
        self.description = description
        self.samples = [make_sample(i, row) for i, row in enumerate(rows)]

    def image_bytes(self, index: int) -> bytes:
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        """A hash of the rows' text (not images): the same benchmark under
        another path or name has the same fingerprint."""
        import hashlib

        parts = [
            [s.index, s.type, s.problem]
            + ([] if s.spec is None else [s.spec.instruction, s.spec.components, s.spec.weights, s.spec.component_types])
            for s in self.samples
        ]
        return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
