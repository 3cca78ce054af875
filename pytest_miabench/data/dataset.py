"""Load MIA-Bench rows: a hub id (via ``datasets``, whose cache makes reruns
work offline), a local directory in the hub layout (``data/<split>-*.parquet``
read in place with pyarrow; other layouts go through ``datasets``), a parquet
file (read in place), or a JSON/JSONL file in the original release's row format.

Loading reads the text columns only; image bytes are fetched per sample when
the sample runs, so collection (which every xdist worker repeats) stays cheap.
A column that is missing or of the wrong type is one ``DatasetError`` naming
it; a broken row does not stop the load: it becomes a sample with a
``problem`` that its test item reports.  Images given as file paths are read
from inside the dataset's folder (or ``--mia-image-root``) only.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import re
import stat
import tempfile
import threading
import urllib.parse
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..config.text import clip
from ..protocols.base import SampleSpec

#: Former hub ids and where the data lives now.  lmms-eval moved MIA-Bench on
#: 2026-07-30 (its PR #1416); the old id still redirects, but that should not
#: be relied on, so it is loaded under its new name.
HUB_ALIASES = {"lmms-lab/MIA-Bench": "lmms-lab-encoder/MIA-Bench"}
#: Seconds the hub may take to answer one request before it counts as
#: unreachable.  Without this check ``datasets`` retries for 25 s (connection
#: refused) to 80 s (no answer) before it gives up.
HUB_PROBE_TIMEOUT = 5.0
TEXT_COLUMNS = ("instruction", "type", "num_of_component", "components", "component_weight", "component_type")
IMAGE_ROOT_OPTION = "--mia-image-root"


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


# The columns a row needs, checked once per file (arrow schema) or per JSON
# file (every row's values): a wrong type is the dataset's problem, one usage
# error, not one misleading failure per row.  A null or empty value in a
# column of the right type stays the row's own problem (see make_sample).
@dataclass(frozen=True)
class _Column:
    expected: str  # as the error message says it
    accepted: frozenset[str]  # value kinds, as _arrow_kind and _json_kind name them
    required: bool = True


_COLUMNS = {
    "instruction": _Column("string", frozenset({"string", "null"})),
    "type": _Column("string", frozenset({"string", "null"})),
    # pandas stores an integer column with gaps as float64; whole numbers are checked per row.
    "num_of_component": _Column("integer", frozenset({"integer", "float", "null"}), required=False),
    "components": _Column("list of strings", frozenset({"list of string", "list of null", "null"})),
    # Weights are integers in the benchmark: a float column (4.0, NaN) is
    # the dataset's problem, one error, not one guess or failure per row.
    "component_weight": _Column("list of integers", frozenset({"list of integer", "list of null", "null"})),
    "component_type": _Column("list of strings", frozenset({"list of string", "list of null", "null"})),
}
_IMAGE_ARROW = "an image: struct {bytes: binary, path: string} as datasets writes it, binary, or a string path"
_IMAGE_JSON = _Column("string (the image file's path)", frozenset({"string", "null"}))


def _arrow_kind(type_: Any) -> str:
    import pyarrow as pa

    types = pa.types
    if types.is_dictionary(type_):
        type_ = type_.value_type
    if types.is_null(type_):
        return "null"
    # string_view and binary_view are newer than some supported pyarrow releases
    if any(getattr(types, f"is_{name}", lambda _: False)(type_) for name in ("string", "large_string", "string_view")):
        return "string"
    if any(getattr(types, f"is_{name}", lambda _: False)(type_) for name in ("binary", "large_binary", "binary_view", "fixed_size_binary")):
        return "binary"
    if types.is_boolean(type_):
        return "boolean"
    if types.is_integer(type_):
        return "integer"
    if types.is_floating(type_):
        return "float"
    if not types.is_map(type_) and hasattr(type_, "value_type"):  # list, large_list, fixed_size_list, list_view
        return f"list of {_arrow_kind(type_.value_type)}"
    return str(type_)


def _arrow_image_ok(type_: Any) -> bool:
    import pyarrow as pa

    if _arrow_kind(type_) in ("binary", "string", "null"):
        return True
    if not pa.types.is_struct(type_):
        return False
    fields = {type_.field(i).name: _arrow_kind(type_.field(i).type) for i in range(type_.num_fields)}
    return (
        ("bytes" in fields or "path" in fields)
        and fields.get("bytes", "null") in ("binary", "null")
        and fields.get("path", "null") in ("string", "null")
    )


def _check_arrow_schema(where: str, schema: Any) -> None:
    """Raise DatasetError naming every missing or mistyped column."""
    types = {schema.field(i).name: schema.field(i).type for i in range(len(schema))}
    missing, wrong = [], []
    for name, column in _COLUMNS.items():
        if name not in types:
            if column.required:
                missing.append((name, column.expected))
        elif _arrow_kind(types[name]) not in column.accepted:
            wrong.append(f"column {name!r}: expected {column.expected}, found {types[name]}")
    if "image" not in types:
        missing.append(("image", _IMAGE_ARROW))
    elif not _arrow_image_ok(types["image"]):
        wrong.append(f"column 'image': expected {_IMAGE_ARROW}, found {types['image']}")
    _raise_schema_problems(where, missing, wrong, set(types))


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        inner = sorted({_json_kind(item) for item in value} - {"null"})
        return "list of " + (" and ".join(inner) or "null")
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_json_rows(where: str, rows: list[dict[str, Any]]) -> None:
    """JSON has no schema: a column is what its rows hold.  A key no row has
    is a missing column; a value of the wrong type in any row is a mistyped
    column (pyarrow and ``datasets`` refuse such a file outright too)."""
    if not rows:
        return
    missing, wrong = [], []
    for name, column in [*_COLUMNS.items(), ("image", _IMAGE_JSON)]:
        present = [i for i, row in enumerate(rows) if name in row]
        if not present:
            if column.required:
                missing.append((name, column.expected))
            continue
        bad = [(i, kind) for i in present if (kind := _json_kind(rows[i][name])) not in column.accepted]
        if bad:
            first, kind = bad[0]
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            wrong.append(f"column {name!r}: expected {column.expected}, found {kind} (row {first}{more})")
    _raise_schema_problems(where, missing, wrong, {key for row in rows for key in row})


def _raise_schema_problems(where: str, missing: list[tuple[str, str]], wrong: list[str], columns: set[str]) -> None:
    """One error, one line, every problem in it: fixing them one run at a time is slow."""
    problems = [f"column {name!r} is missing (expected {expected})" for name, expected in missing] + wrong
    if problems:
        listing = f" (columns: {', '.join(sorted(columns))})" if missing else ""
        raise DatasetError(f"{where}: {'; '.join(problems)}{listing}")


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


class _ImageFiles:
    """Reads images that rows give as file paths, from inside the dataset's
    folder or the one extra root the user allowed, nowhere else: a path that
    leads out (absolute, ``..``, a symlink) would send any file the user can
    read to the model, and from there into reports."""

    def __init__(self, folder: Path | None, extra_root: Path | None) -> None:
        # Relative paths are relative to the dataset's folder; a hub id has
        # none, so then to the extra root.
        self._base = folder if folder is not None else extra_root
        self._roots = [root.resolve() for root in (folder, extra_root) if root is not None]

    def value_bytes(self, index: int, value: Any) -> bytes:
        """Bytes of an image cell: a ``{bytes, path}`` struct, bytes, or a
        string: a path, a data URI or base64 image bytes."""
        if isinstance(value, dict):
            data = value.get("bytes")
            if data:
                return bytes(data)
            value = value.get("path")
        if isinstance(value, (bytes, bytearray)) and value:
            return bytes(value)
        if isinstance(value, str) and value:
            return self.text_bytes(index, value)
        raise SampleDataError(f"row {index}: image is missing or empty")

    def text_bytes(self, index: int, text: str) -> bytes:
        """An image given as text: inline (a data URI, base64), else a path."""
        inline = inline_image(index, text)
        return inline if inline is not None else self.read(index, text)

    def read(self, index: int, ref: str) -> bytes:
        path = Path(ref)
        if not path.is_absolute():
            if self._base is None:
                raise SampleDataError(f"row {index}: image path {clip(ref)} is relative and the dataset has no local folder; pass {IMAGE_ROOT_OPTION}=DIR to read images from DIR")
            path = self._base / path
        try:
            real = path.resolve()  # follows symlinks and '..': what would really be opened
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop (RuntimeError before 3.13), a NUL byte
            raise SampleDataError(f"row {index}: image path {clip(ref)} cannot be resolved: {clip(exc)}") from None
        if not any(real.is_relative_to(root) for root in self._roots):
            inside = " or ".join(str(root) for root in self._roots) or "a folder (a hub dataset has none)"
            raise SampleDataError(
                f"row {index}: image path {clip(ref)} leads outside the dataset folder: it is {clip(real)}, not inside {inside}; "
                f"pass {IMAGE_ROOT_OPTION}=DIR to allow images from DIR"
            )
        try:
            # Only regular files: a FIFO would block the read, /dev/zero never end.
            if not stat.S_ISREG(real.stat().st_mode):
                raise SampleDataError(f"row {index}: image path {clip(ref)} is not a regular file")
            return real.read_bytes()
        except OSError as exc:
            # strerror alone: an OSError's text repeats the (maybe huge) file name.
            raise SampleDataError(f"row {index}: image file {clip(path)} cannot be read: {exc.strerror or type(exc).__name__}") from None


_BASE64 = re.compile(r"[A-Za-z0-9+/\s]+={0,2}\s*")
#: Longer than any path a system accepts (PATH_MAX): base64 text of that
#: length is image data even when it does not start as a known image.
_LONGEST_PATH = 4096


def inline_image(index: int, text: str) -> bytes | None:
    """The bytes of an image given inline as text, or None for a path.

    A ``data:`` URI is decoded (base64 or percent-encoded); so is base64
    text that decodes to an image file's first bytes, or is too long for a
    path.  Such cells are what a dataset exported with inline images holds:
    read as paths, they fail every row and quote the whole cell."""
    if text[:5].lower() == "data:":
        header, comma, payload = text.partition(",")
        if not comma:
            raise SampleDataError(f"row {index}: image is a data URI without a ',' before its data: {clip(text)}")
        try:
            if header.lower().endswith(";base64"):
                return base64.b64decode("".join(payload.split()), validate=True)
            return urllib.parse.unquote_to_bytes(payload)
        except (binascii.Error, ValueError) as exc:
            raise SampleDataError(f"row {index}: image is a data URI whose base64 cannot be decoded ({exc}): {clip(text)}") from None
    if len(text) < 64 or not _BASE64.fullmatch(text):
        return None
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    from .images import looks_like_image

    return data if looks_like_image(data) or len(text) > _LONGEST_PATH else None


class _TableSource(Source):
    """Images from a pyarrow Table column of ``{bytes, path}`` structs."""

    def __init__(self, description: str, rows: Sequence[dict[str, Any]], images: Any, files: _ImageFiles) -> None:
        super().__init__(description, rows)
        self._images = images
        self._files = files
        self._lock = threading.Lock()

    def image_bytes(self, index: int) -> bytes:
        with self._lock:
            value = self._images[index].as_py()
        return self._files.value_bytes(index, value)


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


class _JsonSource(Source):
    """The original release's rows; ``image`` is a path relative to the file."""

    def __init__(self, path: Path, rows: list[dict[str, Any]], files: _ImageFiles) -> None:
        super().__init__(str(path), rows)
        self._files = files
        self._paths = [row.get("image") for row in rows]

    def image_bytes(self, index: int) -> bytes:
        ref = self._paths[index]
        if not isinstance(ref, str) or not ref.strip():
            raise SampleDataError(f"row {index}: image is missing or empty")
        if "://" in ref or ref.startswith(("live.staticflickr", "www.")):
            raise SampleDataError(
                f"row {index}: image is a URL ({clip(ref)}); download the images and point 'image' at local files"
            )
        return self._files.text_bytes(index, ref)


def load(source: str, split: str, image_root: str | None = None) -> Source:
    """Open a dataset; raise ``DatasetError`` with what to try when it can't.

    Images given as file paths are read from inside the dataset's folder
    only, or also from ``image_root`` (``--mia-image-root``) when given.
    """
    extra = None
    if image_root is not None:
        extra = Path(image_root).expanduser()
        if not extra.is_dir():
            raise DatasetError(f"{IMAGE_ROOT_OPTION} {image_root}: not a directory")
    path = Path(source).expanduser()
    if path.is_dir():
        shards = sorted((path / "data").glob(f"{split}-*.parquet"))
        if shards:
            # The hub's own layout: read the shards in place, as a parquet
            # file is.  Through ``datasets`` they would be copied into its
            # cache first, and importing it costs 0.6 s and ~70 MB per process.
            return _ParquetSource(str(path), shards, _ImageFiles(path, extra))
        return _load_with_datasets(str(path), split, _ImageFiles(path, extra), local=True)
    if path.is_file():
        if split != "test":
            raise DatasetError(f"{path} is a single file with no splits; --mia-split applies to hub ids and hub-layout directories")
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            return _ParquetSource(str(path), [path], _ImageFiles(path.parent, extra))
        if suffix in (".json", ".jsonl"):
            return _load_json(path, _ImageFiles(path.parent, extra))
        raise DatasetError(f"{path}: expected a directory, a .parquet, .json or .jsonl file")
    if source.startswith((".", "/", "~")) or source.endswith((".parquet", ".json", ".jsonl")) or source.count("/") > 1:
        raise DatasetError(f"{source}: no such file or directory")
    repo_id = HUB_ALIASES.get(source, source)
    if not _hub_offline():
        _probe_hub(repo_id, source)
    return _load_with_datasets(repo_id, split, _ImageFiles(None, extra), local=False)


def _hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``HF_DATASETS_OFFLINE``) as ``datasets`` reads
    it: then it serves its cache and makes no request, so nothing to probe."""
    import datasets.config

    return bool(datasets.config.HF_HUB_OFFLINE)


def _probe_hub(repo_id: str, named: str, timeout: float = HUB_PROBE_TIMEOUT) -> None:
    """One request to the hub (``HF_ENDPOINT``) with a short timeout: any HTTP
    answer, even an error status, means it is reachable and ``datasets`` goes
    on; no answer is one ``DatasetError`` at once, naming the ways forward.
    Proxies come from the environment, as for the hub client itself."""
    import urllib.error
    import urllib.request

    import datasets.config

    endpoint = str(datasets.config.HF_ENDPOINT).rstrip("/")
    url = f"{endpoint}/api/datasets/{repo_id}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # the hub answered; what it said is for datasets to report
    except OSError as exc:  # URLError, and a timeout reading the answer
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):  # socket.timeout is this since 3.10
            why = f"no answer within {timeout:g} s"
        else:
            why = str(reason) or type(reason).__name__
        raise DatasetError(
            f"{named}: the Hugging Face Hub at {endpoint} cannot be reached ({why}). Ways forward: "
            "pytest --mia-bench --mia-demo runs the built-in demo set with no network; "
            "--mia-dataset=PATH reads a local hub-layout directory (data/test-*.parquet), parquet or JSON file; "
            "HF_HUB_OFFLINE=1 uses the datasets cache of an earlier online run"
        ) from None


def _load_json(path: Path, files: _ImageFiles) -> Source:
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
    _check_json_rows(str(path), rows)
    return _JsonSource(path, rows, files)


def _load_with_datasets(source: str, split: str, files: _ImageFiles, local: bool) -> Source:
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
    _check_arrow_schema(source, ds.data.schema)
    ds = ds.cast_column("image", datasets.Image(decode=False))
    text = ds.select_columns([c for c in TEXT_COLUMNS if c in ds.column_names]).to_list()
    table = ds.data.table
    return _TableSource(source, text, table.column("image"), files)
