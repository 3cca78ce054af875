"""Persistent response cache: model answers and judge verdicts, in SQLite.

SQLite in WAL mode gives what a benchmark run needs: every answer is
committed as soon as it arrives (a SIGKILL loses at most the requests in
flight), many xdist workers can write at once, and a crash never leaves the
file unreadable.  Keys are content hashes of the request as it is sent
(run/request.py); errors are never stored.

The cache is worth less than the answers it holds: an entry that fails its
checksum is a miss, a database that cannot be opened or written is a warning
and the run goes on without it.  ``AsyncCache`` runs every SQLite call on one
thread of its own, so a busy database never stalls the event loop that drives
the requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

# Part of every key (run/request.py): an entry written under another
# version has another key, so it is never read (a miss, asked again).
# 3: keys are the request as sent (messages, not the prompt's parts).
SCHEMA_VERSION = 3
MODEL = "model"
JUDGE = "judge"
TABLE = "mia_responses"
RUNS = "mia_runs"  # the run journal: see ``ResponseCache.begin_run``
# Writers queue on SQLite's lock; a few seconds is plenty for the short
# transactions here, and on the cache thread a wait blocks no request.
BUSY_TIMEOUT_MS = 5000


class CacheError(Exception):
    """The cache cannot be used; the message says why."""


def cache_key(parts: dict[str, Any]) -> str:
    """A stable content hash of a request description (canonical JSON)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _refuse_links(path: Path, suffixes: tuple[str, ...]) -> None:
    """SQLite follows a symbolic link in place of the database or its side
    files, and creates a dangling one's target: a poisoned CI cache could
    have it write anywhere.  Such a cache is refused (and run without)."""
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in suffixes)):
        if candidate.is_symlink():
            raise CacheError(f"{candidate} is a symbolic link; refusing to follow it")


class ResponseCache:
    """Two layers (``model``, ``judge``) of JSON values under content keys.

    Synchronous; ``AsyncCache`` is how the engine uses it.
    """

    FILENAME = "responses.sqlite3"
    #: SQLite's own files beside the database (WAL mode, and a rollback journal).
    SIDE_FILES = ("-wal", "-shm", "-journal")

    def __init__(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.path = directory / self.FILENAME
            _refuse_links(self.path, self.SIDE_FILES)
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
            self._setup()
        except (OSError, sqlite3.Error, CacheError) as exc:
            raise CacheError(f"response cache in {directory} unusable ({exc})") from None

    def _setup(self) -> None:
        """WAL mode and the table.  xdist workers start together and race on
        a new file; switching the journal mode does not wait on the busy
        timeout, so a worker that loses retries for a short while."""
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # NORMAL in WAL mode: a committed answer survives a process kill;
        # only a power cut can lose the last few, which are then re-asked.
        db.execute("PRAGMA synchronous = NORMAL")
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    db.execute("PRAGMA journal_mode = WAL")
                db.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                    " layer TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, digest TEXT NOT NULL,"
                    " created REAL NOT NULL, PRIMARY KEY (layer, key))"
                )
                db.execute(
                    f"CREATE TABLE IF NOT EXISTS {RUNS} ("
                    " lineage TEXT PRIMARY KEY, run TEXT NOT NULL, open INTEGER NOT NULL, updated REAL NOT NULL)"
                )
                break
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({TABLE})")}
        if not {"layer", "key", "value", "digest", "created"} <= columns:
            raise sqlite3.DatabaseError(f"table {TABLE} has foreign columns {sorted(columns)}")

    def get(self, layer: str, key: str) -> dict[str, Any] | None:
        """The stored value, or None when absent or failing its checksum."""
        # The row's own layer and key are read back (from the table, by
        # rowid: a lookup by key would take them from the index) and
        # compared: a corrupt index can point a key at another sample's row,
        # whose value passes its checksum.
        row = self._db.execute(
            f"SELECT value, digest, layer, key FROM {TABLE} WHERE rowid = (SELECT rowid FROM {TABLE} WHERE layer = ? AND key = ?)",
            (layer, key),
        ).fetchone()
        if row is None or not isinstance(row[0], str) or row[1] != _digest(row[0]) or (row[2], row[3]) != (layer, key):
            return None
        try:
            value = json.loads(row[0])
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    def put(self, layer: str, key: str, value: dict[str, Any]) -> None:
        # ASCII JSON: any text a server sent (a lone surrogate included) is stored.
        text = json.dumps(value, ensure_ascii=True)
        self._db.execute(
            f"INSERT OR REPLACE INTO {TABLE} (layer, key, value, digest, created) VALUES (?, ?, ?, ?, ?)",
            (layer, key, text, _digest(text), time.time()),
        )

    # -- the run journal ------------------------------------------------------

    def begin_run(self, lineage: str, reuse_latest: bool = False) -> str:
        """The run whose model answers this session may reuse.

        A lineage is one model identity without a revision (endpoint and
        name).  Its latest run is resumed while it is open (the session that
        began it did not finish: interrupted, killed, stopped early), or when
        ``reuse_latest`` (a re-judge of the answers already obtained); else a
        new run begins, and the model is asked again."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")  # two sessions may start at once
        try:
            row = db.execute(f"SELECT run, open FROM {RUNS} WHERE lineage = ?", (lineage,)).fetchone()
            if row is not None and (row[1] or reuse_latest) and isinstance(row[0], str):
                run = row[0]
            else:
                run = uuid.uuid4().hex
            db.execute(
                f"INSERT OR REPLACE INTO {RUNS} (lineage, run, open, updated) VALUES (?, ?, 1, ?)",
                (lineage, run, time.time()),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return run

    def finish_run(self, lineage: str, run: str) -> None:
        """The run completed: the next session asks the model again."""
        self._db.execute(f"UPDATE {RUNS} SET open = 0, updated = ? WHERE lineage = ? AND run = ?", (time.time(), lineage, run))

    def drop(self, layer: str, prefix: str) -> None:
        """Forget a layer's entries whose keys start with ``prefix``."""
        self._db.execute(f"DELETE FROM {TABLE} WHERE layer = ? AND substr(key, 1, ?) = ?", (layer, len(prefix), prefix))

    def values(self, layer: str, prefix: str) -> list[dict[str, Any]]:
        """Every intact value of a layer whose key starts with ``prefix``."""
        rows = self._db.execute(
            f"SELECT value, digest FROM {TABLE} WHERE layer = ? AND substr(key, 1, ?) = ?", (layer, len(prefix), prefix)
        ).fetchall()
        found = []
        for text, digest in rows:
            if isinstance(text, str) and digest == _digest(text):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    continue
                if isinstance(value, dict):
                    found.append(value)
        return found

    def peek_run(self, lineage: str, reuse_latest: bool = False) -> str | None:
        """The run ``begin_run`` would resume, without beginning anything
        (None: it would begin a new one, whose answers are not cached yet)."""
        row = self._db.execute(f"SELECT run, open FROM {RUNS} WHERE lineage = ?", (lineage,)).fetchone()
        if row is not None and (row[1] or reuse_latest) and isinstance(row[0], str):
            return row[0]
        return None

    def count(self, layer: str) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM {TABLE} WHERE layer = ?", (layer,)).fetchone()[0])

    def close(self) -> None:
        self._db.close()


class AsyncCache:
    """A ``ResponseCache`` used from an event loop: each call runs on the
    cache's own thread.  Failures become warnings (``problems``) and misses."""

    def __init__(self, cache: ResponseCache) -> None:
        self._cache = cache
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mia-cache")
        self.problems: list[str] = []
        # After one failed write, no more: each would wait out the busy
        # timeout (a locked or full database stays so) before the answer is used.
        self._writable = True

    async def get(self, layer: str, key: str) -> dict[str, Any] | None:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, self._cache.get, layer, key)
        except sqlite3.Error as exc:
            self._problem(f"reading the response cache failed ({exc}); asking the API instead")
            return None

    async def values(self, layer: str, prefix: str) -> list[dict[str, Any]]:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, self._cache.values, layer, prefix)
        except sqlite3.Error as exc:
            self._problem(f"reading the response cache failed ({exc})")
            return []

    async def put(self, layer: str, key: str, value: dict[str, Any]) -> None:
        if not self._writable:
            return
        await asyncio.get_running_loop().run_in_executor(self._thread, self._put, layer, key, value)

    def _put(self, layer: str, key: str, value: dict[str, Any]) -> None:
        # Checked again on the cache thread: writes queued behind the one
        # that failed are skipped, not each held for the busy timeout.
        if not self._writable:
            return
        try:
            self._cache.put(layer, key, value)
        except sqlite3.Error as exc:
            # The answer is used and reported all the same; a rerun asks again.
            self._writable = False
            self._problem(f"writing the response cache failed ({exc}); answers are kept in the reports only")

    def _problem(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self._cache.close()
