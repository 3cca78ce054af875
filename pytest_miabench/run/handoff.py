"""The handoff: how finished records reach the process that reports them.

The one module that knows what a worker writes and what the controller
reads, and under which keys.  Three channels, each for a case the others
miss:

* A sample's record rides on its item's call report (``report.mia_result``):
  xdist sends report attributes to the controller like user_properties.
  From a worker it travels as ASCII JSON (``wire``), decoded once on arrival.
* Records of samples called ahead whose items never ran (look-ahead cut
  short by -x) are left in ``config.stash[UNCLAIMED_KEY]`` by the runtime
  in one process, and sent in xdist's ``workeroutput`` at a worker's end.
* A Ctrl-C or SIGTERM ends xdist workers before they send what they hold,
  so each worker also writes every finished record to a SQLite store shared
  with the controller (the response cache, or without one a temporary
  directory of the session), under ``<session>:<index>`` in the ``handoff``
  layer; an interrupted controller reads them back (``Handoff.recover``).
  The workers share their budget spend through the same store (budget.py).

The storage itself is ``calls.cache.ResponseCache``; only this module reads
or writes the handoff's layer.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from ..calls import budget as budget_mod
from ..calls.cache import AsyncCache, CacheError, ResponseCache
from ..result import SampleRecord, is_finished

#: The cache layer where workers leave finished records, under "<session>:<index>".
LAYER = "handoff"
#: How an xdist worker is told where to leave them (``workerinput``).
WORKERINPUT = "mia_handoff"
#: How an xdist worker sends its unclaimed records at its end (``workeroutput``).
UNCLAIMED_OUTPUT = "mia_unclaimed"
#: Records of samples whose calls were made but whose items never ran
#: (look-ahead cut short by -x): left by the runtime, counted by the aggregator.
UNCLAIMED_KEY: pytest.StashKey[list[SampleRecord]] = pytest.StashKey()


def wire(value: object) -> str:
    """Records as ASCII JSON for xdist's channel, which refuses text UTF-8
    cannot encode (a lone surrogate a server sent); the controller decodes."""
    return json.dumps(value, ensure_ascii=True)


# -- on the item's report --------------------------------------------------------


def attach_record(report: pytest.TestReport, record: SampleRecord, is_worker: bool) -> None:
    """Attach a sample's full record to its call report: report attributes
    travel to the xdist controller, without bloating JUnit XML with responses."""
    report.mia_result = wire(record) if is_worker else record  # type: ignore[attr-defined]


def report_record(report: pytest.TestReport) -> SampleRecord | None:
    """The record a report carries (None: it carries none)."""
    result = getattr(report, "mia_result", None)
    if isinstance(result, str):  # from an xdist worker, as ASCII JSON
        # Decoded once, in place: later readers (pytest-html's rows) get the record.
        result = json.loads(result)
        setattr(report, "mia_result", result)  # noqa: B010 - a report attribute of this plugin
    return cast(SampleRecord, result) if isinstance(result, dict) else None


# -- unclaimed records -------------------------------------------------------------


def leave_unclaimed(config: pytest.Config, records: list[SampleRecord]) -> None:
    """The runtime's unclaimed records, for the aggregator of this process or,
    on an xdist worker, sent to the controller at the worker's end."""
    config.stash[UNCLAIMED_KEY] = records
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        # xdist's own channel back to the controller, sent at the worker's end.
        workeroutput[UNCLAIMED_OUTPUT] = wire(records)


def take_unclaimed(config: pytest.Config) -> list[SampleRecord]:
    """What this process's runtime left (taken once)."""
    records = config.stash.get(UNCLAIMED_KEY, None)
    if not records:
        return []
    config.stash[UNCLAIMED_KEY] = []
    return records


def received_unclaimed(node: Any) -> list[SampleRecord]:
    """What an xdist worker sent at its end (its node on the controller)."""
    output = getattr(node, "workeroutput", None) or {}
    unclaimed = output.get(UNCLAIMED_OUTPUT) or []
    return cast(list[SampleRecord], json.loads(unclaimed) if isinstance(unclaimed, str) else unclaimed)


# -- the store an interrupted controller reads -------------------------------------


@dataclass(frozen=True)
class Handoff:
    """Where xdist workers leave finished records under ``key``: the response
    cache's directory, or without a cache a temporary one of this session."""

    key: str
    directory: Path

    @classmethod
    def start(cls, config: pytest.Config, cache_directory: Path | None) -> Handoff:
        """The controller's handoff for this session; a temporary directory
        is removed when pytest cleans up."""
        directory = cache_directory
        if directory is None:
            temporary = Path(tempfile.mkdtemp(prefix="mia-handoff-"))
            config.add_cleanup(lambda: shutil.rmtree(temporary, ignore_errors=True))
            directory = temporary
        return cls(uuid.uuid4().hex, directory)

    def tell(self, node: Any) -> None:
        """xdist: tell a worker where to leave its finished records."""
        node.workerinput[WORKERINPUT] = {"key": self.key, "directory": str(self.directory)}

    def recover(self, indices: Sequence[int] | None) -> list[SampleRecord]:
        """The records workers left of samples ``indices`` (None: none is
        wanted); then the session's entries are dropped.  A store that fails
        gives nothing: the report goes out with what the controller received."""
        try:
            cache = ResponseCache(self.directory)
        except CacheError:
            return []  # the workers could not have written there either
        found: list[SampleRecord] = []
        try:
            for index in indices or ():
                value = cache.get(LAYER, f"{self.key}:{index}")
                if value is not None and value.get("index") == index:
                    found.append(cast(SampleRecord, value))
            cache.drop(LAYER, f"{self.key}:")
            cache.drop(budget_mod.LAYER, f"{self.key}:")
        except sqlite3.Error:
            pass
        finally:
            cache.close()
        return found


def worker_store(config: pytest.Config, cache: ResponseCache | None, warn: Callable[[str], None]) -> tuple[str, ResponseCache] | None:
    """xdist: the key and the store where this worker leaves finished records
    for the controller: the response cache when it is there.  None in one
    process, or when the store cannot be opened (said through ``warn``)."""
    given = getattr(config, "workerinput", {}).get(WORKERINPUT)
    if not isinstance(given, dict) or not isinstance(given.get("key"), str) or not isinstance(given.get("directory"), str):
        return None
    directory = Path(given["directory"])
    if cache is not None and cache.path.parent == directory:
        return given["key"], cache
    try:
        return given["key"], ResponseCache(directory)
    except CacheError as exc:
        warn(f"{exc}; an interrupted run's report will lack what this worker held")
        return None


class Outbox:
    """The worker's side of the store, used from the engine's event loop."""

    def __init__(self, key: str, store: AsyncCache, owned: bool) -> None:
        self.key = key
        self.store = store
        self._owned = owned  # a store of its own (not the engine's cache): closed here

    @classmethod
    def of(cls, given: tuple[str, ResponseCache] | None, cache: ResponseCache | None, shared: AsyncCache | None) -> Outbox | None:
        """The outbox of ``worker_store``'s answer; ``shared`` is the engine's
        own ``AsyncCache`` of ``cache``, reused when the store is the cache."""
        if given is None:
            return None
        key, store = given
        if shared is not None and store is cache:
            return cls(key, shared, owned=False)
        return cls(key, AsyncCache(store), owned=True)

    async def leave(self, index: int, record: SampleRecord) -> None:
        """Leave sample ``index``'s record for the controller once it is finished."""
        if is_finished(record):
            await self.store.put(LAYER, f"{self.key}:{index}", cast(dict[str, Any], record))

    def budget_share(self, worker: str) -> tuple[str, str, AsyncCache]:
        """Where this worker shares its budget spend (budget.py)."""
        return self.key, worker, self.store

    def close(self) -> None:
        if self._owned:
            self.store.close()
