"""The benchmark's datasets: the real 400 instruction rows with synthetic
photo-like images, generated once and cached under ``benchmarks/out/``.

Not named ``datasets.py``: ``python benchmarks/run.py`` puts this folder
first on ``sys.path``, where that name would shadow the library.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bump when the generated images change, so an old cache is not reused.
DATASET_VERSION = 1
BIG_SIZE = (3264, 4928)  # a 16 MP phone photo, portrait
BIG_COUNT = 4
ROW_GROUP = 400  # rows per row group of the repeated file (datasets writes 400 rows as one group too)


@dataclass(frozen=True)
class DatasetPaths:
    """One generated dataset in the forms the runs read."""

    rows: int
    hub_dir: Path  # hub layout, <dir>/data/test-00000-of-00001.parquet (the evalscope peer loads it)
    parquet: Path  # the same table as one file; the plugin and the floor read it in place
    total_bytes: int  # image bytes over all rows
    formats: dict[str, int]

    def describe(self) -> str:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.formats.items()))
        return f"{self.rows} rows in {self.parquet.name}, {self.total_bytes / 2**20:.1f} MiB of images ({kinds})"


def photo_bytes(width: int, height: int, fmt: str, seed: int) -> bytes:
    """A photo-like image: a smooth colour field, a few soft shapes, and
    seeded grain, so JPEG sizes are realistic (~150 KB per megapixel at q85,
    a few MB for 16 MP).  ``fmt`` is jpeg, webp or mpo (two frames)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    small = Image.new("RGB", (4, 4))
    small.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(16)])
    image = small.resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(width // 8, width // 2), y0 + rng.randrange(height // 8, height // 2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=max(1, width // 400)))
    grain = Image.effect_noise((max(1, width // 2), max(1, height // 2)), 40).resize((width, height), Image.Resampling.BILINEAR)
    image = Image.blend(image, Image.merge("RGB", (grain, grain, grain)), 0.25)
    buffer = io.BytesIO()
    if fmt == "mpo":
        second = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image.save(buffer, "MPO", save_all=True, append_images=[second], quality=85)
    elif fmt == "webp":
        image.save(buffer, "WEBP", quality=80)
    else:
        image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def image_plan(samples: int) -> list[tuple[str, int, int]]:
    """(format, width, height) per sample: ``BIG_COUNT`` 16 MP photos spread
    over the run, the rest around 1 MP in mixed orientations; ~60% JPEG,
    25% WebP, 15% MPO.  Deterministic."""
    rng = random.Random(20240)
    sizes = [(1024, 768), (1152, 864), (1280, 960), (1280, 720), (768, 1024), (864, 1152), (1000, 1000), (1200, 800)]
    big_formats = ("jpeg", "mpo", "webp", "jpeg")
    big_at = {min(samples - 1, i * samples // BIG_COUNT + 7): big_formats[i % len(big_formats)] for i in range(BIG_COUNT)}
    plan = []
    for index in range(samples):
        if index in big_at:
            plan.append((big_at[index], *BIG_SIZE))
            continue
        roll = rng.random()
        fmt = "jpeg" if roll < 0.6 else "webp" if roll < 0.85 else "mpo"
        plan.append((fmt, *rng.choice(sizes)))
    return plan


def instruction_rows_for(samples: int) -> list[dict[str, Any]]:
    """The real instruction rows, cycled when more than 400 are asked for."""
    from support.data import instruction_rows

    rows = instruction_rows()
    return [rows[i % len(rows)] for i in range(samples)]


def ensure_dataset(out: Path, samples: int) -> DatasetPaths:
    """Generate (once) and return a dataset of ``samples`` distinct rows; the
    cache directory is keyed by sample count and ``DATASET_VERSION``."""
    root = out / f"dataset-v{DATASET_VERSION}-n{samples}"
    hub_dir, parquet, meta_path = root / "hub", root / "mia-bench.parquet", root / "meta.json"
    if not meta_path.exists():
        from support.data import write_hub_dataset

        if root.exists():
            shutil.rmtree(root)  # a half-written cache from an interrupted run
        started = time.perf_counter()
        plan = image_plan(samples)
        print(f"generating {samples} images under {root} ...", flush=True)
        images = [photo_bytes(w, h, fmt, seed=i) for i, (fmt, w, h) in enumerate(plan)]
        write_hub_dataset(hub_dir, instruction_rows_for(samples), images)
        shutil.copyfile(next((hub_dir / "data").glob("*.parquet")), parquet)
        formats: dict[str, int] = {}
        for fmt, w, h in plan:
            key = f"{fmt} {w}x{h}" if (w, h) == BIG_SIZE else fmt
            formats[key] = formats.get(key, 0) + 1
        meta = {"samples": samples, "image_bytes": sum(map(len, images)), "formats": formats}
        meta_path.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        print(f"  done in {time.perf_counter() - started:.1f} s, {meta['image_bytes'] / 2**20:.1f} MiB of images", flush=True)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return DatasetPaths(samples, hub_dir, parquet, meta["image_bytes"], meta["formats"])


def ensure_repeated(base: DatasetPaths, times: int) -> DatasetPaths:
    """``base``'s rows ``times`` over in ONE parquet file with row groups of
    ``ROW_GROUP`` rows (the issue's 4000-sample case), plus a hub-layout dir
    whose only shard links to that file (for the evalscope peer).

    Written by ``datasets`` as the hub's files are (image bytes PLAIN and
    uncompressed, a page index, content-defined chunking).  ``pq.write_table``
    with its defaults would dictionary-encode and snappy-compress the image
    column instead, and pyarrow then holds about two row groups of images
    (~150 MiB) while streaming it: a different file, not the hub's.
    """
    import datasets

    root = base.parquet.parent / f"repeat-x{times}"
    parquet, hub_dir, marker = root / f"mia-bench-x{times}.parquet", root / "hub", root / "done"
    if not marker.exists():
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        datasets.disable_progress_bars()
        one = datasets.Dataset.from_parquet(str(base.parquet), cache_dir=str(root / "cache"))
        datasets.concatenate_datasets([one] * times).to_parquet(str(parquet), batch_size=ROW_GROUP)
        shutil.rmtree(root / "cache")
        shard = hub_dir / "data" / "test-00000-of-00001.parquet"
        shard.parent.mkdir(parents=True)
        os.symlink(parquet, shard)
        marker.write_text("ok", encoding="utf-8")
    formats = {k: v * times for k, v in base.formats.items()}
    return DatasetPaths(base.rows * times, hub_dir, parquet, base.total_bytes * times, formats)


def row_groups(path: Path) -> list[int]:
    """Rows per row group of a parquet file (printed with the results)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
