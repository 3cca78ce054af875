"""Make real MIA-Bench datasets for tests: the real instruction rows (copied
from the benchmark's release, see data/instruction_benchmark_all.LICENSE.md)
with real images made by Pillow, written as parquet in the hub layout by the
real ``datasets`` library, or as the original JSON rows with image files."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "data"
TEXT_KEYS = ("instruction", "type", "num_of_component", "components", "component_weight", "component_type")


def instruction_rows() -> list[dict[str, Any]]:
    """The benchmark's 400 real instruction rows (image URLs, no images)."""
    rows = json.loads((DATA / "instruction_benchmark_all.json").read_text(encoding="utf-8"))
    return [{key: row[key] for key in TEXT_KEYS} for row in rows]


def image_bytes(fmt: str = "jpeg", width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    """A small real image: a seeded colour gradient plus noise, in ``fmt``
    (jpeg, png, webp, mpo, gif, bmp)."""
    from PIL import Image

    rng = random.Random(seed)
    base = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    image = Image.new("RGB", (width, height), base)
    overlay = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (overlay, image.getchannel(1), image.getchannel(2)))
    buffer = io.BytesIO()
    if fmt == "mpo":
        second = Image.new("RGB", (width, height), (255 - base[0], 0, 0))
        image.save(buffer, "MPO", save_all=True, append_images=[second])
    else:
        image.save(buffer, {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP"}[fmt])
    return buffer.getvalue()


def write_hub_dataset(root: Path, rows: Sequence[dict[str, Any]], images: Sequence[bytes], split: str = "test") -> Path:
    """Write ``root/data/<split>-00000-of-00001.parquet`` as the hub does."""
    import datasets

    datasets.disable_progress_bars()
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "instruction": datasets.Value("string"),
            "type": datasets.Value("string"),
            "num_of_component": datasets.Value("int32"),
            "components": datasets.Sequence(datasets.Value("string")),
            "component_weight": datasets.Sequence(datasets.Value("int32")),
            "component_type": datasets.Sequence(datasets.Value("string")),
        }
    )
    columns: dict[str, list[Any]] = {key: [row.get(key) for row in rows] for key in TEXT_KEYS}
    columns["image"] = [{"bytes": data, "path": None} for data in images]
    ds = datasets.Dataset.from_dict(columns, features=features)
    target = root / "data" / f"{split}-00000-of-00001.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(target))
    return root


def write_parquet(path: Path, rows: Sequence[dict[str, Any]], images: Sequence[bytes]) -> Path:
    """A single parquet file with the same schema (no hub layout)."""
    tmp = write_hub_dataset(path.parent / (path.stem + "-hub"), rows, images)
    source = next((tmp / "data").glob("*.parquet"))
    path.write_bytes(source.read_bytes())
    return path


def write_json_dataset(root: Path, rows: Sequence[dict[str, Any]], images: Sequence[bytes | None], name: str = "bench.json") -> Path:
    """The original release's JSON rows, ``image`` pointing at local files."""
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (row, data) in enumerate(zip(rows, images)):
        record = dict(row)
        if data is not None:
            (root / "images").mkdir(exist_ok=True)
            (root / "images" / f"{i}.img").write_bytes(data)
            record["image"] = f"images/{i}.img"
        out.append(record)
    path = root / name
    path.write_text(json.dumps(out), encoding="utf-8")
    return path


def write_parquet_pyarrow(
    path: Path, rows: Sequence[dict[str, Any]], images: Sequence[bytes | dict[str, Any] | None], row_group_size: int | None = None
) -> Path:
    """A parquet file written by pyarrow itself, with the schema ``datasets``
    writes: any row group size, and image cells given as bytes or as
    ``{bytes, path}`` structs (a path with no bytes, say)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("instruction", pa.string()),
            ("type", pa.string()),
            ("num_of_component", pa.int32()),
            ("components", pa.list_(pa.string())),
            ("component_weight", pa.list_(pa.int32())),
            ("component_type", pa.list_(pa.string())),
        ]
    )
    columns: dict[str, list[Any]] = {key: [row.get(key) for row in rows] for key in TEXT_KEYS}
    columns["image"] = [{"bytes": cell, "path": None} if isinstance(cell, bytes) else cell for cell in images]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), path, row_group_size=row_group_size)
    return path
