"""Parquet files read in place: each row's image decoded once, on demand."""

from __future__ import annotations

import bisect
import tempfile
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .samples import DatasetError, SampleDataError, Source
from .schema import TEXT_COLUMNS, _check_arrow_schema
from .sources import _ImageFiles

_MISSING = object()


class _ParquetSource(Source):
    """Images read from parquet files in place, each row's image decoded once.

    A row group is read forward in batches of ``BATCH`` rows, with pyarrow's
    pre-buffering off: it would read a group's whole image column chunk (every
    image in it) at its first row, and a file written by ``datasets`` is ONE
    row group.  Every image the cursor passes, asked for or not, is appended
    to an anonymous temporary file and indexed (row -> offset, length), so a
    row asked for behind the cursor (the engine's look-ahead and two image
    threads ask slightly out of order, pytest-randomly in any order) or asked
    again (reruns) is one read of that file, never a re-decode from the
    group's first row, which made the cost quadratic in the group's size.
    Memory holds one batch and the index: keeping the images instead would
    be ~750 MB for 4000 rows, and so would a memory map of the file.  The
    temporary file grows to at most the image bytes passed (about the parquet
    file's size, in TMPDIR), has no name on POSIX and closes with the source.

    Only one cursor is open: entering another row group first runs the current
    one to its end, so no group is ever decoded twice and hundreds of small
    groups do not each hold pyarrow's read buffers.  ``batches_decoded``
    counts the cost: the sum over groups read of ceil(rows / BATCH).
    """

    BATCH = 8

    def __init__(self, description: str, paths: list[Path], files: _ImageFiles) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows: list[dict[str, Any]] = []
        self._groups: list[tuple[Any, int, int]] = []  # (file, row group, rows)
        self._starts: list[int] = []  # each group's first row, ascending
        for path in paths:
            try:
                pf = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
            except Exception as exc:  # pyarrow raises several types for "not parquet"
                hint = " (a Git LFS pointer? run 'git lfs pull')" if path.stat().st_size < 1024 else ""
                raise DatasetError(f"{path}: not a readable parquet file{hint}: {exc}") from None
            _check_arrow_schema(str(path), pf.schema_arrow)
            wanted = [c for c in TEXT_COLUMNS if c in pf.schema_arrow.names]
            first = len(rows)
            for group in range(pf.num_row_groups):
                size = pf.metadata.row_group(group).num_rows
                self._groups.append((pf, group, size))
                self._starts.append(first)
                first += size
            rows.extend(pf.read(columns=wanted).to_pylist())
        super().__init__(description, rows)
        self._files = files
        self._lock = threading.Lock()
        self._pool = pa.default_memory_pool()
        self._cursor: tuple[int, Iterator[Any], int] | None = None  # (group, batches, next row)
        self._entered: set[int] = set()
        self._spilled: dict[int, tuple[int, int]] = {}  # row -> (offset, length) in the spill file
        self._no_bytes: dict[int, Any] = {}  # rows whose cell holds no bytes: a path, or nothing
        self._spill: IO[bytes] | None = None
        self._spill_end = 0
        self.batches_decoded = 0

    def image_bytes(self, index: int) -> bytes:
        with self._lock:
            value = self._lookup(index)
        return self._files.value_bytes(index, value)

    def _lookup(self, index: int) -> Any:
        where = self._spilled.get(index)
        if where is not None:
            assert self._spill is not None
            self._spill.seek(where[0])
            return self._spill.read(where[1])
        if index in self._no_bytes:
            return self._no_bytes[index]
        pos = bisect.bisect_right(self._starts, index) - 1
        if self._cursor is not None and self._cursor[0] != pos:
            self._advance(None)  # leave no group half read: it would be decoded again
        if self._cursor is None and pos >= 0 and pos not in self._entered:
            pf, group, _ = self._groups[pos]
            self._entered.add(pos)
            batches = pf.iter_batches(batch_size=self.BATCH, row_groups=[group], columns=["image"])
            self._cursor = (pos, batches, self._starts[pos])
        # Every row the cursor passed is indexed, so the row is ahead of it or nowhere.
        if self._cursor is None or index < self._cursor[2]:
            raise SampleDataError(f"row {index}: not found in {self.description}")
        value = self._advance(index)
        if value is _MISSING:
            raise SampleDataError(f"row {index}: not found in {self.description}")
        return value

    def _advance(self, index: int | None) -> Any:
        """Decode batches until ``index`` is passed (None: to the group's end).
        At the group's end the cursor is dropped, and with it pyarrow's
        read buffers (~2 MB)."""
        assert self._cursor is not None
        pos, batches, start = self._cursor
        end = self._starts[pos] + self._groups[pos][2]
        found: Any = _MISSING
        for batch in batches:
            values = batch.column(0).to_pylist()
            del batch
            self.batches_decoded += 1
            # mimalloc keeps freed page buffers (~40 MB over a run); hand
            # them back, it costs ~0.2 ms a batch.
            self._pool.release_unused()
            for row, value in enumerate(values, start):
                self._keep(row, value)
            first, start = start, start + len(values)
            if index is not None and first <= index < start:
                found = values[index - first]
            if start >= end:
                break
            if found is not _MISSING:
                self._cursor = (pos, batches, start)
                return found
        self._cursor = None
        return found

    def _keep(self, row: int, value: Any) -> None:
        data = value.get("bytes") if isinstance(value, dict) else value
        if not isinstance(data, (bytes, bytearray)) or not data:
            self._no_bytes[row] = value
            return
        if self._spill is None:
            self._spill = tempfile.TemporaryFile(prefix="mia-bench-images-")
            weakref.finalize(self, self._spill.close)
        self._spill.seek(self._spill_end)
        self._spill.write(data)
        self._spilled[row] = (self._spill_end, len(data))
        self._spill_end += len(data)
