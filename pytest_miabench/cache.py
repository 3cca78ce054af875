"""Persistent response cache: model answers and judge verdicts, in SQLite.

SQLite in WAL mode gives what a benchmark run needs: every answer is
committed as soon as it arrives (a SIGKILL loses at most the requests in
flight), many xdist workers can write at once (writers queue on a lock, with
a generous busy timeout), and a crash never leaves the file unreadable.
Keys are content hashes of everything that changes the answer; errors are
never stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MODEL = "model"
JUDGE = "judge"


def cache_key(parts: dict[str, Any]) -> str:
    """A stable content hash of a request description (canonical JSON)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """Two layers (``model``, ``judge``) of JSON values under content keys."""

    FILENAME = "responses.sqlite3"

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / self.FILENAME
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 60000")
        # NORMAL in WAL mode: a committed answer survives a process kill;
        # only a power cut can lose the last few, which are then re-asked.
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._setup()

    def _setup(self) -> None:
        """Switch to WAL and create the table.  xdist workers start together
        and race here on a new file; switching the journal mode does not wait
        on the busy timeout, so a worker that loses retries for a while."""
        deadline = time.monotonic() + 60
        delay = 0.01
        while True:
            try:
                mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS responses ("
                    " layer TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, created REAL NOT NULL,"
                    " PRIMARY KEY (layer, key))"
                )
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def get(self, layer: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM responses WHERE layer = ? AND key = ?", (layer, key)).fetchone()
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    def put(self, layer: str, key: str, value: dict[str, Any]) -> None:
        text = json.dumps(value, ensure_ascii=False)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (layer, key, value, created) VALUES (?, ?, ?, ?)",
                (layer, key, text, time.time()),
            )

    def count(self, layer: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses WHERE layer = ?", (layer,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
