"""Which model answers a session may reuse: model identity across runs.

A model answer in the cache is keyed by the request that asked for it (URL,
model name, messages, sampling: request.py) and by the identity of the
weights behind the name:

* ``--mia-model-revision REV`` names the weights (a checkpoint hash, a tag,
  an immutable snapshot name).  Answers are reused by every run under the
  same revision.
* Without a revision nothing says the weights behind a name are the ones
  of the last run (a redeploy keeps name and URL).  Answers then belong to a
  *run*: the next session resumes it while it is open (interrupted, killed,
  stopped by ``-x`` or the breaker) and ``--mia-rejudge`` reuses the latest
  run; once a session finishes, the next one asks the model again.

Judge verdicts are keyed by the judge prompt, which holds the answer, so a
re-asked model that answers byte for byte as before costs no judge call.

The journal lives in the response cache's database (table ``mia_runs``);
the xdist controller (or the single process) keeps it and hands the run to
the workers through ``workerinput``.
"""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path
from typing import Any

import pytest

from ..calls.cache import CacheError, ResponseCache
from ..config.settings import Settings
from .keys import MODEL_RUN_KEY, WORKERINPUT_MODEL_RUN
from .pipeline import lineage

__all__ = ["ModelRuns", "lineage"]


class ModelRuns:
    """Begins (or resumes) the run at configure time, ends it when the
    session finished whole.  Registered only where the session is steered:
    one process, or the xdist controller."""

    def __init__(self, config: pytest.Config, settings: Settings, directory: Path) -> None:
        self.config = config
        self.directory = directory
        self.lineage = lineage(settings)
        self.run: str | None = None
        if settings.model_revision:
            return  # the revision is the identity: no journal needed
        try:
            cache = ResponseCache(directory)
            try:
                self.run = cache.begin_run(self.lineage, reuse_latest=settings.rejudge)
            finally:
                cache.close()
        except (CacheError, sqlite3.Error) as exc:
            # Without the journal every answer is asked for again: costly but right.
            warnings.warn(pytest.PytestWarning(f"mia-bench: run journal unusable ({exc}); model answers are not reused"), stacklevel=2)
        if self.run is not None:
            config.stash[MODEL_RUN_KEY] = self.run

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist: every worker keys answers by the controller's run."""
        if self.run is not None:
            node.workerinput[WORKERINPUT_MODEL_RUN] = self.run

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.run is None or self.config.option.collectonly:
            return
        # Stopped early (Ctrl-C, SIGTERM, -x, --maxfail, a tripped breaker):
        # left open, so the next session resumes and asks only what is missing.
        if exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED) or session.shouldstop or session.shouldfail:
            return
        try:
            cache = ResponseCache(self.directory)
            try:
                cache.finish_run(self.lineage, self.run)
            finally:
                cache.close()
        except (CacheError, sqlite3.Error):
            pass  # left open: the next session reuses this run's answers, as after an interruption

