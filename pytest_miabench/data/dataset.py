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

import json
from pathlib import Path

from .parquet import _ParquetSource
from .samples import DatasetError, Source
from .schema import TEXT_COLUMNS, _check_arrow_schema, _check_json_rows
from .sources import IMAGE_ROOT_OPTION, _ImageFiles, _JsonSource, _TableSource

#: Former hub ids and where the data lives now.  lmms-eval moved MIA-Bench on
#: 2026-07-30 (its PR #1416); the old id still redirects, but that should not
#: be relied on, so it is loaded under its new name.
HUB_ALIASES = {"lmms-lab/MIA-Bench": "lmms-lab-encoder/MIA-Bench"}
#: Seconds the hub may take to answer one request before it counts as
#: unreachable.  Without this check ``datasets`` retries for 25 s (connection
#: refused) to 80 s (no answer) before it gives up.
HUB_PROBE_TIMEOUT = 5.0


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
