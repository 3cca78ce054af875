"""Benchmark pytest_miabench.data.images.prepare per format and size class.

    python benchmarks/bench_images.py [--repeat N] [--max-side N] [--formats jpeg,webp,mpo,png] [--sizes tiny,1mp,huge]

Images are made in memory by tests/support/images.py (photo-like content, so
sizes are realistic); nothing is read from the network.  Prints one row per
format x size class; then, for each huge image, how much one prepare() raises
the peak RSS of a fresh interpreter (Linux only: /proc/self/status); then, for
the 3264x4928 JPEG, the cost of the reduced-size (Image.draft) decode that
prepare uses against a full decode + resize of the same image, and how far
apart their outputs are.  JPEG and MPO are decoded at reduced size; WebP and
PNG are decoded whole (Pillow offers no reduced decode for them), which the
peak column shows.
Timings are wall clock, single thread; the default run takes well under a minute.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from PIL import Image, ImageChops, ImageStat  # noqa: E402
from support import images as mk  # noqa: E402

from pytest_miabench.data.images import JPEG_QUALITY, prepare  # noqa: E402

SIZES = {"tiny": (135, 240), "1mp": (1152, 864), "huge": (3264, 4928)}
MAKERS = {"jpeg": mk.jpeg, "webp": mk.webp, "mpo": mk.mpo, "png": mk.png}


def timed(fn, repeat: int) -> tuple[float, object]:
    """Mean milliseconds of ``repeat`` calls (after one warm-up call) and the last result."""
    result = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.fmean(times) * 1000, result


def full_decode_resize(raw: bytes, target: tuple[int, int]) -> bytes:
    """What prepare would cost without draft(): decode every pixel, then resize."""
    with Image.open(io.BytesIO(raw)) as im:
        im = im.convert("RGB").resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        out = io.BytesIO()
        im.save(out, "JPEG", quality=JPEG_QUALITY)
        return out.getvalue()


# Run in a fresh interpreter: the parent's own peak (it made the images) would
# hide the child's, and ru_maxrss survives exec.  The peak is reset once the
# imports and a warm-up call are done, so the figure is prepare()'s alone.
PEAK_CODE = """
import sys
from pytest_miabench.data.images import prepare

def kib(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

raw, warm = (open(path, "rb").read() for path in sys.argv[1:3])
prepare(warm, 16)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = kib("VmRSS")
prepare(raw, int(sys.argv[3]))
print((kib("VmHWM") - before) / 1024)
"""


def peak_growth_mib(raw: bytes, warm: bytes, max_side: int) -> float | None:
    """How far one prepare(raw) lifts the peak RSS of a fresh interpreter; None off Linux."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp, "raw"), Path(tmp, "warm")]
        for path, data in zip(paths, (raw, warm)):
            path.write_bytes(data)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([sys.executable, "-c", PEAK_CODE, *map(str, paths), str(max_side)], capture_output=True, text=True, env=env, cwd=ROOT)
    return float(done.stdout) if done.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per image (default 10; huge images use max(1, N//2))")
    parser.add_argument("--max-side", type=int, default=2048, help="prepare's max_side (default 2048, the plugin default)")
    parser.add_argument("--formats", default=",".join(MAKERS), help=f"comma-separated subset of {','.join(MAKERS)}")
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated subset of {','.join(SIZES)}")
    args = parser.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = sorted(set(formats) - set(MAKERS)) + sorted(set(sizes) - set(SIZES))
    if unknown or args.repeat < 1:
        parser.error(f"unknown format/size {unknown}" if unknown else "--repeat must be >= 1")

    began = time.perf_counter()
    print(f"prepare(raw, max_side={args.max_side}); mean of {args.repeat} runs (huge: {max(1, args.repeat // 2)})\n")
    header = f"{'format':<6} {'size':<5} {'pixels':>9} {'in KB':>8} {'out KB':>8} {'re-enc':>6} {'out size':>9} {'ms/image':>9}"
    print(header)
    print("-" * len(header))
    huge: dict[str, bytes] = {}
    for fmt in formats:
        for size in sizes:
            w, h = SIZES[size]
            raw = MAKERS[fmt](w, h)
            if size == "huge":
                huge[fmt] = raw
            repeat = max(1, args.repeat // 2) if size == "huge" else args.repeat
            ms, p = timed(lambda raw=raw: prepare(raw, args.max_side), repeat)
            print(
                f"{fmt:<6} {size:<5} {f'{w}x{h}':>9} {len(raw) / 1024:8.1f} {len(p.data) / 1024:8.1f} "
                f"{'yes' if p.reencoded else 'no':>6} {f'{p.width}x{p.height}':>9} {ms:9.2f}"
            )

    if huge:
        w, h = SIZES["huge"]
        print(f"\npeak RSS growth of one prepare() of a {w}x{h} image, fresh interpreter:")
        for fmt, raw in huge.items():
            grown = peak_growth_mib(raw, MAKERS[fmt](64, 48), args.max_side)
            print(f"  {fmt:<6} " + ("n/a (needs Linux /proc)" if grown is None else f"+{grown:.0f} MiB"))

    huge_jpeg = huge.get("jpeg")
    if huge_jpeg is None and "jpeg" in formats:
        huge_jpeg = mk.jpeg(*SIZES["huge"])
    if huge_jpeg is not None:
        repeat = max(1, args.repeat // 2)
        draft_ms, p = timed(lambda: prepare(huge_jpeg, args.max_side), repeat)
        if p.reencoded:
            target = (p.width, p.height)
            full_ms, full = timed(lambda: full_decode_resize(huge_jpeg, target), repeat)
            a, b = Image.open(io.BytesIO(p.data)), Image.open(io.BytesIO(full))
            diff = sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3
            w, h = SIZES["huge"]
            print(f"\n{w}x{h} JPEG -> {target[0]}x{target[1]} (decode + resize + JPEG q{JPEG_QUALITY}):")
            print(f"  draft (libjpeg reduced-size decode): {draft_ms:8.1f} ms")
            print(f"  full decode + resize:                {full_ms:8.1f} ms")
            print(f"  full / draft: {full_ms / draft_ms:.2f}x; mean |pixel difference| between outputs: {diff:.2f} / 255")

    print(f"\n(total {time.perf_counter() - began:.1f} s including image generation)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
