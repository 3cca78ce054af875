"""Load MIA-Bench rows: a hub id (via ``datasets``, whose cache makes reruns
work offline), a local directory in the hub layout (``data/<split>-*.parquet``
read in place with pyarrow; other layouts go through ``datasets``), a parquet
file (read in place), or a JSON/JSONL file in the original release's row format.

Loading reads the text columns only; image bytes are fetched per sample when
the sample runs, so collection (which every xdist worker repeats) stays cheap.
A broken row does not stop the load: it becomes a sample with a ``problem``
that its test item reports.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .protocols.base import SampleSpec

TEXT_COLUMNS = ("instruction", "type", "num_of_component", "components", "component_weight", "component_type")


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
            raise SampleDataError(f"num_of_component is {declared} but there are {len(components)} components")
        for w in weights:
            if not _is_whole(w) or w <= 0:
                raise SampleDataError(f"component_weight {w!r} is not a positive whole number")
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


class _TableSource(Source):
    """Images from a pyarrow Table column of ``{bytes, path}`` structs."""

    def __init__(self, description: str, rows: Sequence[dict[str, Any]], images: Any) -> None:
        super().__init__(description, rows)
        self._images = images
        self._lock = threading.Lock()

    def image_bytes(self, index: int) -> bytes:
        with self._lock:
            value = self._images[index].as_py()
        return _struct_bytes(value, index)


class _ParquetSource(Source):
    """Images read row group by row group from parquet files, never whole."""

    def __init__(self, description: str, files: list[Path]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows: list[dict[str, Any]] = []
        self._groups: list[tuple[Any, int, int]] = []  # (file, row group, first row)
        self._files = []
        for path in files:
            try:
                # Stream pages: pyarrow's default pre-buffering reads a row
                # group's whole column chunk (every image in it) at the
                # first row, ~75 MB for a datasets-written file of 400 rows.
                pf = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
            except Exception as exc:  # pyarrow raises several types for "not parquet"
                hint = " (a Git LFS pointer? run 'git lfs pull')" if path.stat().st_size < 1024 else ""
                raise DatasetError(f"{path}: not a readable parquet file{hint}: {exc}") from None
            names = set(pf.schema_arrow.names)
            if "image" not in names:
                raise DatasetError(f"{path} has no 'image' column (columns: {sorted(names)})")
            wanted = [c for c in TEXT_COLUMNS if c in names]
            rows.extend(pf.read(columns=wanted).to_pylist())
            self._files.append(pf)
        super().__init__(description, rows)
        first = 0
        for pf in self._files:
            for group in range(pf.num_row_groups):
                self._groups.append((pf, group, first))
                first += pf.metadata.row_group(group).num_rows
        self._lock = threading.Lock()
        self._pool = pa.default_memory_pool()
        # A forward cursor over the current row group, plus the last two
        # small batches: samples are read in (nearly) increasing order, and
        # a whole row group of images (~100 x 1 MB) must not sit in memory.
        self._cursor: tuple[int, Any, int] | None = None  # (group pos, batch iterator, next row)
        self._batches: list[tuple[int, list[Any]]] = []  # (first row, images)

    def image_bytes(self, index: int) -> bytes:
        with self._lock:
            value = self._lookup(index)
        return _struct_bytes(value, index)

    def _lookup(self, index: int) -> Any:
        for first, values in self._batches:
            if first <= index < first + len(values):
                return values[index - first]
        pos = max(i for i, (_, _, first) in enumerate(self._groups) if first <= index)
        pf, group, first = self._groups[pos]
        if self._cursor is None or self._cursor[0] != pos or self._cursor[2] > index:
            batches = pf.iter_batches(batch_size=self.BATCH, row_groups=[group], columns=["image"])
            self._cursor = (pos, batches, first)
        _, batches, start = self._cursor
        for batch in batches:
            values = batch.column(0).to_pylist()
            del batch
            # mimalloc keeps freed page buffers (~40 MB over a run); hand
            # them back, it costs ~0.2 ms a batch.
            self._pool.release_unused()
            self._batches = [*self._batches[-1:], (start, values)]
            start += len(values)
            self._cursor = (pos, batches, start)
            if index < start:
                return values[index - (start - len(values))]
        raise SampleDataError(f"row {index}: not found in {self.description}")

    BATCH = 8


class _JsonSource(Source):
    """The original release's rows; ``image`` is a path relative to the file."""

    def __init__(self, path: Path, rows: list[dict[str, Any]]) -> None:
        super().__init__(str(path), rows)
        self._base = path.parent
        self._paths = [row.get("image") for row in rows]

    def image_bytes(self, index: int) -> bytes:
        ref = self._paths[index]
        if not isinstance(ref, str) or not ref.strip():
            raise SampleDataError(f"row {index}: image is missing or empty")
        if "://" in ref or ref.startswith(("live.staticflickr", "www.")):
            raise SampleDataError(
                f"row {index}: image is a URL ({ref}); download the images and point 'image' at local files"
            )
        path = self._base / ref
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SampleDataError(f"row {index}: image file {path} cannot be read: {exc.strerror or exc}") from None


def _struct_bytes(value: Any, index: int) -> bytes:
    if isinstance(value, dict):
        data = value.get("bytes")
        if data:
            return bytes(data)
        path = value.get("path")
        if path:
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise SampleDataError(f"row {index}: image file {path} cannot be read: {exc.strerror or exc}") from None
    elif isinstance(value, (bytes, bytearray)) and value:
        return bytes(value)
    raise SampleDataError(f"row {index}: image is missing or empty")


def load(source: str, split: str) -> Source:
    """Open a dataset; raise ``DatasetError`` with what to try when it can't."""
    path = Path(source).expanduser()
    if path.is_dir():
        shards = sorted((path / "data").glob(f"{split}-*.parquet"))
        if shards:
            # The hub's own layout: read the shards in place, as a parquet
            # file is.  Through ``datasets`` they would be copied into its
            # cache first, and importing it costs 0.6 s and ~70 MB per process.
            return _ParquetSource(str(path), shards)
        return _load_with_datasets(str(path), split, local=True)
    if path.is_file():
        if split != "test":
            raise DatasetError(f"{path} is a single file with no splits; --mia-split applies to hub ids and hub-layout directories")
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            return _ParquetSource(str(path), [path])
        if suffix in (".json", ".jsonl"):
            return _load_json(path)
        raise DatasetError(f"{path}: expected a directory, a .parquet, .json or .jsonl file")
    if source.startswith((".", "/", "~")) or source.endswith((".parquet", ".json", ".jsonl")) or source.count("/") > 1:
        raise DatasetError(f"{source}: no such file or directory")
    return _load_with_datasets(source, split, local=False)


def _load_json(path: Path) -> Source:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read JSON: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise DatasetError(f"{path}: expected a list of objects (one per sample)")
    return _JsonSource(path, rows)


def _load_with_datasets(source: str, split: str, local: bool) -> Source:
    """Hub ids and hub-layout directories go through ``datasets``: its cache
    makes reruns of a hub dataset work offline (HF_HUB_OFFLINE=1)."""
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(source, split=split)
    except ValueError as exc:
        if "split" in str(exc).lower() or "Unknown split" in str(exc):
            raise DatasetError(f"{source}: split {split!r} not found ({exc}); pass --mia-split") from None
        raise DatasetError(f"{source}: cannot load: {exc}") from None
    except Exception as exc:  # the hub client raises many types; all mean "not loadable"
        hint = (
            "check the directory holds data/<split>-*.parquet"
            if local
            else "check the id, your network, or run once online so the datasets cache can serve it offline "
            "(HF_HUB_OFFLINE=1); a local hub-layout directory or parquet file also works"
        )
        raise DatasetError(f"{source}: cannot load ({type(exc).__name__}: {exc}); {hint}") from None
    if "image" not in ds.column_names:
        raise DatasetError(f"{source}: no 'image' column (columns: {ds.column_names})")
    ds = ds.cast_column("image", datasets.Image(decode=False))
    text = ds.select_columns([c for c in TEXT_COLUMNS if c in ds.column_names]).to_list()
    table = ds.data.table
    return _TableSource(source, text, table.column("image"))
