"""The pytest side of a sample: one collector for the benchmark, one item per row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .dataset import Sample

RESULT_KEY = pytest.StashKey[dict[str, Any]]()
COLLECTOR_NAME = "mia-bench"


def compact_properties(result: dict[str, Any]) -> list[tuple[str, object]]:
    """The per-sample properties that go into JUnit XML: small and JSON-safe."""
    return [
        ("mia_score", result["score"]),
        ("mia_type", result["type"]),
        ("mia_status", result["status"]),
        ("mia_components", [c["score"] for c in result["components"]]),
        ("mia_cached", bool(result["cached"]["model"] and result["cached"]["judge"])),
    ]


class BenchCollector(pytest.Collector):
    """Yields one item per sample; holds no state beyond the sample list."""

    def __init__(self, *, samples: list[Sample], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.samples = samples

    def collect(self) -> Iterator[MiaItem]:
        for sample in self.samples:
            yield MiaItem.from_parent(self, name=sample.name, sample=sample)


class MiaItem(pytest.Item):
    """One MIA-Bench sample.  Passes when the judge gave a verdict; fails with
    a one-paragraph message when the sample could not be run."""

    def __init__(self, *, sample: Sample, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sample = sample
        # ``-k advanced`` selects by instruction type.
        self.extra_keyword_matches.add(sample.type)

    def runtest(self) -> None:
        from .engine import SampleFailure
        from .runtime import RUNTIME_KEY

        runtime = self.config.stash[RUNTIME_KEY]
        try:
            result = runtime.result_for(self)
        except SampleFailure as failure:
            self._record(failure.result)
            raise
        self._record(result)

    def _record(self, result: dict[str, Any]) -> None:
        self.stash[RESULT_KEY] = result
        self.user_properties.extend(compact_properties(result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        from .engine import SampleFailure

        if isinstance(excinfo.value, SampleFailure):
            return f"mia-bench sample {self.name} [{self.sample.type}]: {excinfo.value.message}"
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[str, int | None, str]:
        return COLLECTOR_NAME, None, f"mia-bench sample {self.name} [{self.sample.type}]"
