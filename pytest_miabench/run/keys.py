"""The ``config.stash`` keys the plugin's parts share, below all of them
(the handoff's own keys are in handoff.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..config.settings import Settings
    from ..data.samples import Source
    from ..result import SampleRecord
    from .engine import Engine

SETTINGS_KEY: pytest.StashKey[Settings] = pytest.StashKey()
SOURCE_KEY: pytest.StashKey[Source] = pytest.StashKey()
# The run model answers are keyed by when no --mia-model-revision is given (journal.py).
MODEL_RUN_KEY: pytest.StashKey[str] = pytest.StashKey()
WORKERINPUT_MODEL_RUN = "mia_model_run"  # ... and how an xdist worker is told it
# The engine of this process, set by the runtime when it starts one.
ENGINE_KEY: pytest.StashKey[Engine] = pytest.StashKey()
# Per item: its sample's record, and the timeout pytest-timeout asked for.
RESULT_KEY: pytest.StashKey[SampleRecord] = pytest.StashKey()
TIMEOUT_KEY: pytest.StashKey[float] = pytest.StashKey()
# Per item: why the budget refused its sample a call (``report.mia_budget`` on its reports).
BUDGET_KEY: pytest.StashKey[str] = pytest.StashKey()
