"""The built-in demo set of ``--mia-demo``: 20 real MIA-Bench instruction rows
(``demo_data/instructions.json``, licence in ``demo_data/LICENSE.md``) whose
images are drawn at run time with Pillow, in the formats the real set has:
JPEG, WEBP and MPO (two frames, as phone cameras write them).

The rows cover every sample type and component type, 2 to 5 components,
duplicated component types and weights that sum to 8, so every protocol's
prompt and parser branches run.  Drawing is seeded by the row, so the same
row always gets the same bytes (for a given Pillow) and the cache hits.
"""

from __future__ import annotations

import io
import json
import random
from importlib import resources
from typing import Any

from ..config.settings import DEMO_DATASET
from .samples import Source

FORMATS = ("JPEG", "WEBP", "MPO")
_SKIES = ((120, 180, 230), (250, 190, 120), (60, 70, 120), (200, 210, 220))
_GROUNDS = ((70, 140, 60), (200, 180, 120), (90, 90, 100), (40, 90, 140))
_THINGS = ((200, 40, 40), (240, 220, 60), (250, 250, 250), (130, 60, 160), (230, 130, 40), (30, 30, 30))


def rows() -> list[dict[str, Any]]:
    """The demo's instruction rows, as packaged."""
    text = resources.files("pytest_miabench.data.demo_data").joinpath("instructions.json").read_text(encoding="utf-8")
    data = json.loads(text)
    assert isinstance(data, list)
    return data


def licence() -> str:
    return resources.files("pytest_miabench.data.demo_data").joinpath("LICENSE.md").read_text(encoding="utf-8")


def draw(index: int) -> bytes:
    """Row ``index``'s image: a small landscape (sky, ground, sun, shapes),
    encoded as JPEG, WEBP or MPO in turn."""
    from PIL import Image, ImageDraw

    rng = random.Random(f"mia-bench-demo-{index}")
    width, height = rng.choice(((640, 480), (480, 640), (800, 450), (512, 512)))
    image = Image.new("RGB", (width, height), rng.choice(_SKIES))
    pen = ImageDraw.Draw(image)
    horizon = int(height * rng.uniform(0.5, 0.75))
    pen.rectangle((0, horizon, width, height), fill=rng.choice(_GROUNDS))
    sun = rng.randint(20, 60)
    sx, sy = rng.randint(sun, width - sun), rng.randint(sun, max(sun + 1, horizon - sun))
    pen.ellipse((sx - sun, sy - sun, sx + sun, sy + sun), fill=(250, 220, 90))
    for _ in range(rng.randint(3, 7)):
        w, h = rng.randint(20, width // 4), rng.randint(20, height // 4)
        x, y = rng.randint(0, width - w), rng.randint(horizon - h, height - h)
        shape = pen.rectangle if rng.random() < 0.5 else pen.ellipse
        shape((x, y, x + w, y + h), fill=rng.choice(_THINGS), outline=(20, 20, 20))
    fmt = FORMATS[index % len(FORMATS)]
    buffer = io.BytesIO()
    if fmt == "MPO":
        # The second frame is the other eye's view: the same scene, shifted.
        second = image.transform(image.size, Image.Transform.AFFINE, (1, 0, 12, 0, 1, 0))
        image.save(buffer, "MPO", save_all=True, append_images=[second], quality=85)
    else:
        image.save(buffer, fmt, quality=85)
    return buffer.getvalue()


class DemoSource(Source):
    """The demo rows with their drawn images."""

    def __init__(self) -> None:
        super().__init__(DEMO_DATASET, rows())

    def image_bytes(self, index: int) -> bytes:
        return draw(index)


def load() -> Source:
    return DemoSource()
