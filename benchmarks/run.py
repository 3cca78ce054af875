"""Performance benchmark of pytest-miabench against a loopback OpenAI server.

Runs ``python -m pytest --mia-bench ...`` as a user would (a subprocess, no
response cache) against the test suite's threaded OpenAI-compatible server on
127.0.0.1, with a fixed per-call latency, over the real 400 instruction rows
and realistic synthetic photos (a few 16 MP ones, most around 1 MP, mixed
JPEG/WebP/MPO).  Per run it measures wall time, CPU and peak RSS of the
process tree, the time from process start to the first request reaching the
server, the server-side mean/max number of requests in flight and the API
calls per sample, and prints one table.

    python benchmarks/run.py --latency 0.5 --concurrency 32 --samples 400
    python benchmarks/run.py --workers 8                 # pytest-xdist -n 8
    python benchmarks/run.py --scenario all              # the issue's targets
    python benchmarks/run.py --scenario all --peer-evalscope \\
        --peer-python /tmp/venv-evalscope/bin/python     # + evalscope's MIA-Bench

Everything stays on this machine: the only network peer is the loopback
server the script starts and stops itself.  Every run has a time limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "out"
PEER_SCRIPT = Path(__file__).resolve().parent / "_peer_evalscope.py"
sys.path.insert(0, str(REPO / "tests"))

# Bump when the generated images change, so an old cache is not reused.
DATASET_VERSION = 1
BIG_SIZE = (3264, 4928)  # a 16 MP phone photo, portrait
BIG_COUNT = 4
MODEL = "vlm"
JUDGE = "judge"
MODEL_REPLY = "The image shows a quiet street at dusk. Two people walk past a red door, and a bicycle leans on the wall."
# A valid evalscope-protocol verdict; the plugin scores it 7/10 = 0.7.
JUDGE_REPLY = "score of component 1: 3/4, score of component 2: 2/3, total score: 7/10. The response is mostly on task."
# evalscope >= 1.11 asks its judge for one JSON object ("component_i" <= weight_i);
# 1 is within every weight, so every sample scores 1 * k / sum(weights).
PEER_JUDGE_REPLY = json.dumps({"reasoning": "mostly on task", **{f"component_{i}": 1 for i in range(1, 6)}})
PEER_JSON_MARKER = "Reply with a single JSON object"

# The targets.
TARGET_SINGLE_RATIO = 1.15
TARGET_XDIST_RATIO = 1.25
TARGET_FIRST_REQUEST_S = 1.0
TARGET_PEAK_RSS_MIB = 240.0


# --------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetPaths:
    """The two forms of one generated dataset."""

    hub_dir: Path  # hub layout: <dir>/data/test-00000-of-00001.parquet, read in place with pyarrow
    parquet: Path  # the same table as one file, read in place with pyarrow
    total_bytes: int
    formats: dict[str, int]


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
    """Generate (once) and return the dataset of ``samples`` rows; the cache
    directory is keyed by sample count and ``DATASET_VERSION``."""
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
    return DatasetPaths(hub_dir, parquet, meta["image_bytes"], meta["formats"])


# --------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One measured run."""

    name: str
    tool: str  # "plugin" or "evalscope"
    samples: int
    latency: float
    concurrency: int
    workers: int = 0  # pytest-xdist -n; 0 = one process
    form: str = "dir"  # "dir" (hub layout via datasets) or "parquet" (one file via pyarrow)
    hf_cache: str = "warm"  # "warm": datasets' arrow cache reused; "cold": a fresh HF_HOME

    @property
    def parallel(self) -> int:
        """How many samples can be in flight: xdist workers, else the concurrency."""
        return self.workers if self.workers else self.concurrency

    @property
    def ideal(self) -> float:
        """Wall time of a perfect client: every sample's two sequential calls,
        ``parallel`` samples at a time, zero overhead."""
        return self.samples * 2 * self.latency / self.parallel


@dataclass
class Measurement:
    """What one run produced."""

    spec: RunSpec
    exit_code: int
    wall: float
    cpu: float
    peak_rss_mib: float
    first_request: float | None
    busy: float | None  # first request reaching the server -> last reply sent
    tail: float | None  # last reply sent -> process exit (report, teardown)
    mean_in_flight: float
    max_in_flight: int
    model_calls: int
    judge_calls: int
    total_score: float | None
    note: str = ""
    walls: tuple[float, ...] = ()  # every repeat's wall, when --repeat > 1

    @property
    def ratio(self) -> float | None:
        return self.wall / self.spec.ideal if self.spec.ideal > 0 else None

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ideal"] = self.spec.ideal
        data["ratio"] = self.ratio
        return data


@dataclass(frozen=True)
class ProcessResult:
    """Exit code and resource use of one finished process tree."""

    exit_code: int
    started: float  # perf_counter just before the process was created
    wall: float
    cpu: float  # user + sys of the process and every descendant it reaped
    peak_rss_kib: int  # max over those processes (Linux reports KiB)
    timed_out: bool


# Runs each measured process.  Linux records, at exec, the high-water RSS
# of the memory the new program replaces, and for a child spawned with
# vfork (as subprocess does) that is the spawning process's memory: every
# child then reports ``ru_maxrss`` >= the peak RSS of whoever spawned it.
# This script holds a threaded server, the run history and once the
# generated dataset, so it spawns through this launcher, started while the
# script is still small (~10 MB).  ``time.perf_counter`` is CLOCK_MONOTONIC,
# shared with the server's timestamps in this process.
_LAUNCHER = r"""
import json, os, signal, subprocess, sys, threading, time
for line in sys.stdin:
    job = json.loads(line)
    with open(job["log"], "wb") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(job["cmd"], cwd=job["cwd"], env=job["env"], stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        expired = threading.Event()
        def kill(pid=proc.pid):
            expired.set()
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        timer = threading.Timer(job["timeout"], kill)
        timer.daemon = True
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
    print(json.dumps({"exit_code": os.waitstatus_to_exitcode(status), "started": started, "wall": wall,
                      "cpu": usage.ru_utime + usage.ru_stime, "peak_rss_kib": usage.ru_maxrss,
                      "timed_out": expired.is_set()}), flush=True)
"""


class Launcher:
    """The small process that spawns and reaps the measured runs."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def run(self, cmd: Sequence[str], cwd: Path, env: dict[str, str], log: Path, timeout: float) -> ProcessResult:
        """Run ``cmd`` and wait for it with ``os.wait4``: its rusage covers this
        child and the descendants it reaped (xdist workers), the per-run share
        of ``getrusage(RUSAGE_CHILDREN)``; ``ru_maxrss`` is then the largest
        single process, not a sum.  After ``timeout`` seconds the whole
        process group is killed."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        job = {"cmd": list(cmd), "cwd": str(cwd), "env": env, "log": str(log), "timeout": timeout}
        self._proc.stdin.write(json.dumps(job) + "\n")
        self._proc.stdin.flush()
        reply = json.loads(self._proc.stdout.readline())
        return ProcessResult(**reply)

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=10)


def server_script(request: Any) -> Any:
    """Model: a short answer.  Judge: a valid verdict in the asking tool's format."""
    from support.server import Reply

    if request.role == "judge":
        return Reply(PEER_JUDGE_REPLY if PEER_JSON_MARKER in request.text else JUDGE_REPLY)
    return Reply(MODEL_REPLY)


def child_env(hf_home: Path) -> dict[str, str]:
    """The environment of a measured run: this repo's plugin code first on
    the path, no OpenAI settings of the caller, the HF stack offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "HF_", "HUGGINGFACE_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["HF_HOME"] = str(hf_home)
    env["HF_DATASETS_CACHE"] = str(hf_home / "datasets")
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_DATASETS_OFFLINE"] = "1"
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["MODELSCOPE_CACHE"] = str(hf_home / "modelscope")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def plugin_command(python: str, spec: RunSpec, data: DatasetPaths, url: str, report: Path) -> list[str]:
    """``python -m pytest --mia-bench ...`` as a user types it, without the
    response cache so every sample costs two real round trips."""
    dataset = data.hub_dir if spec.form == "dir" else data.parquet
    cmd = [
        python, "-m", "pytest", "--mia-bench",
        f"--mia-model={MODEL}", f"--mia-base-url={url}",
        f"--mia-judge-model={JUDGE}", f"--mia-judge-base-url={url}",
        f"--mia-dataset={dataset}", f"--mia-concurrency={spec.concurrency}",
        f"--mia-report={report}", "--mia-no-cache", "-p", "no:cacheprovider", "-q",
    ]  # fmt: skip
    if spec.samples < _dataset_rows(data):
        cmd.append(f"--mia-limit={spec.samples}")
    if spec.workers:
        cmd += ["-n", str(spec.workers)]
    return cmd


def _dataset_rows(data: DatasetPaths) -> int:
    return sum(data.formats.values())


def peer_command(python: str, spec: RunSpec, data: DatasetPaths, url: str, work: Path, result: Path) -> list[str]:
    """evalscope's MIA-Bench through ``_peer_evalscope.py`` on the hub-layout dir."""
    return [
        python, str(PEER_SCRIPT), "--dataset", str(data.hub_dir), "--base-url", url,
        "--model", MODEL, "--judge-model", JUDGE, "--concurrency", str(spec.concurrency),
        "--samples", str(spec.samples), "--work-dir", str(work), "--result", str(result),
    ]  # fmt: skip


def warm_hf_cache(python: str, data: DatasetPaths, hf_home: Path, timeout: float) -> None:
    """Load the hub-layout dir once through ``datasets`` so later runs find
    its arrow cache, as any second run on a user's machine does."""
    marker = hf_home / f"warm-{data.hub_dir.parent.name}"
    if marker.exists():
        return
    code = "import datasets, sys; datasets.load_dataset(sys.argv[1], split='test')"
    subprocess.run([python, "-c", code, str(data.hub_dir)], env=child_env(hf_home), check=True, timeout=timeout, capture_output=True)
    marker.write_text("ok", encoding="utf-8")


def measure(spec: RunSpec, data: DatasetPaths, args: argparse.Namespace) -> Measurement:
    """Start a fresh loopback server, run one spec against it, stop it."""
    from support.server import OpenAIServer

    out: Path = args.out
    with tempfile.TemporaryDirectory(prefix="miabench-run-") as tmp_text:
        tmp = Path(tmp_text)
        if spec.hf_cache == "cold":
            hf_home = tmp / "hf"
        else:
            hf_home = out / "hf-home"
            warm_hf_cache(args.python, data, hf_home, args.timeout)
        report = tmp / "report.json"
        with OpenAIServer(server_script, judge_model=JUDGE, latency=spec.latency, keep_raw=False) as server:
            if spec.tool == "plugin":
                cmd = plugin_command(args.python, spec, data, server.url, report)
            else:
                cmd = peer_command(args.peer_python, spec, data, server.url, tmp / "evalscope", report)
            log = out / "logs" / f"{spec.name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            proc = args.launcher.run(cmd, tmp, child_env(hf_home), log, args.timeout)
            first = None if server.first_request_at is None else server.first_request_at - proc.started
            busy = tail = None
            if server.first_request_at is not None and server.last_reply_at is not None:
                busy = server.last_reply_at - server.first_request_at
                tail = proc.started + proc.wall - server.last_reply_at
            model_calls, judge_calls = len(server.by_role("model")), len(server.by_role("judge"))
            mean_in_flight, max_in_flight = server.mean_in_flight(), server.max_in_flight
        score = None
        note = "timed out" if proc.timed_out else ""
        if report.exists():
            try:
                score = json.loads(report.read_text(encoding="utf-8")).get("total_score")
            except (OSError, ValueError):
                note = "unreadable report"
        if proc.exit_code != 0 and not note:
            note = f"see {log.relative_to(REPO) if log.is_relative_to(REPO) else log}"
    return Measurement(
        spec=spec,
        exit_code=proc.exit_code,
        wall=proc.wall,
        cpu=proc.cpu,
        peak_rss_mib=proc.peak_rss_kib / 1024,
        first_request=first,
        busy=busy,
        tail=tail,
        mean_in_flight=mean_in_flight,
        max_in_flight=max_in_flight,
        model_calls=model_calls,
        judge_calls=judge_calls,
        total_score=score,
        note=note,
    )


def measure_repeated(spec: RunSpec, data: DatasetPaths, args: argparse.Namespace) -> Measurement:
    """Run a spec ``--repeat`` times and keep the run with the median wall."""
    runs = []
    for attempt in range(args.repeat):
        label = f" ({attempt + 1}/{args.repeat})" if args.repeat > 1 else ""
        print(f"running {spec.name}{label} ...", flush=True)
        result = measure(spec, data, args)
        runs.append(result)
        print(f"  wall {result.wall:.2f} s, exit {result.exit_code}", flush=True)
    runs.sort(key=lambda m: m.wall)
    median = runs[(len(runs) - 1) // 2]
    if len(runs) > 1:
        median.walls = tuple(m.wall for m in runs)
        spread = "walls " + " / ".join(f"{w:.2f}" for w in median.walls)
        median.note = f"{median.note}; {spread}" if median.note else spread
    return median


# --------------------------------------------------------------------------
# Scenarios and reporting
# --------------------------------------------------------------------------


def scenario_specs(args: argparse.Namespace, peer: bool) -> list[RunSpec]:
    """The runs to make.  ``all`` is the issue's list of targets; ``custom``
    (the default) is the one run the flags describe."""
    n = args.samples
    if args.scenario == "custom":
        specs = [RunSpec("custom", "plugin", n, args.latency, args.concurrency, args.workers, args.dataset_form, args.hf_cache)]
        if peer:
            specs.append(RunSpec("custom-evalscope", "evalscope", n, args.latency, args.concurrency, 0, "dir"))
        return specs
    specs = [
        RunSpec("1-single", "plugin", n, 0.5, 32),
        RunSpec("1-single-parquet", "plugin", n, 0.5, 32, form="parquet"),
        RunSpec("1-single-coldcache", "plugin", n, 0.5, 32, hf_cache="cold"),
        RunSpec("2-xdist-n8", "plugin", n, 0.5, 32, workers=8),
        RunSpec("3-zero-latency", "plugin", n, 0.0, 8),
    ]
    if peer:
        specs += [
            RunSpec("1-single-evalscope", "evalscope", n, 0.5, 32),
            RunSpec("3-zero-latency-evalscope", "evalscope", n, 0.0, 8),
        ]
    return specs


def _fmt(value: float | None, spec: str = ".2f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def render_table(results: Sequence[Measurement]) -> str:
    """A fixed-width table, one row per run."""
    headers = [
        "run", "tool", "data", "lat s", "conc", "wall s", "ideal s", "ratio", "CPU s",
        "RSS MiB", "1st req s", "busy s", "tail s", "in-flight mean/max", "calls/sample m+j", "exit", "score",
    ]  # fmt: skip
    rows = []
    for m in results:
        s = m.spec
        data = s.form + (" cold" if s.hf_cache == "cold" else "")
        conc = f"-n {s.workers}" if s.workers else str(s.concurrency)
        rows.append([
            s.name, s.tool, data, f"{s.latency:g}", conc, f"{m.wall:.2f}", _fmt(s.ideal if s.ideal else None),
            _fmt(m.ratio), f"{m.cpu:.1f}", f"{m.peak_rss_mib:.0f}", _fmt(m.first_request), _fmt(m.busy), _fmt(m.tail),
            f"{m.mean_in_flight:.1f}/{m.max_in_flight}",
            f"{m.model_calls / s.samples:.2f}+{m.judge_calls / s.samples:.2f}",
            str(m.exit_code), _fmt(m.total_score, ".3f"),
        ])  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    notes = [f"  {m.spec.name}: {m.note}" for m in results if m.note]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


def render_targets(results: Sequence[Measurement]) -> str:
    """The issue's targets, each MET or MISSED with the figure behind it."""
    by_name = {m.spec.name: m for m in results}
    lines = []

    def verdict(ok: bool) -> str:
        return "MET   " if ok else "MISSED"

    single = by_name.get("1-single")
    if single and single.ratio is not None:
        lines.append(f"(1) {verdict(single.exit_code == 0 and single.ratio <= TARGET_SINGLE_RATIO)} one process, 0.5 s, c32: "
                     f"{single.wall:.2f} s = {single.ratio:.3f} x ideal {single.spec.ideal:.2f} s (target <= {TARGET_SINGLE_RATIO})")  # fmt: skip
    xdist = by_name.get("2-xdist-n8")
    if xdist and xdist.ratio is not None:
        lines.append(f"(2) {verdict(xdist.exit_code == 0 and xdist.ratio <= TARGET_XDIST_RATIO)} -n 8, 0.5 s: "
                     f"{xdist.wall:.2f} s = {xdist.ratio:.3f} x ideal {xdist.spec.ideal:.2f} s (target <= {TARGET_XDIST_RATIO})")  # fmt: skip
    zero = by_name.get("3-zero-latency")
    if zero:
        line = f"(3) zero latency, c8: wall {zero.wall:.2f} s, CPU {zero.cpu:.1f} s ({1000 * zero.wall / zero.spec.samples:.1f} ms/sample)"
        peer = by_name.get("3-zero-latency-evalscope")
        if peer and peer.exit_code == 0:
            line += f"; evalscope wall {peer.wall:.2f} s, CPU {peer.cpu:.1f} s (plugin/evalscope wall {zero.wall / peer.wall:.2f}, CPU {zero.cpu / peer.cpu:.2f})"
        else:
            line += "; no evalscope run to compare"
        lines.append(line)
    firsts = [m for m in results if m.spec.tool == "plugin" and m.first_request is not None]
    if firsts:
        worst = max(firsts, key=lambda m: m.first_request or 0.0)
        listing = ", ".join(f"{m.spec.name} {m.first_request:.2f} s" for m in firsts)
        lines.append(f"(4) {verdict((worst.first_request or 0.0) <= TARGET_FIRST_REQUEST_S)} first request <= {TARGET_FIRST_REQUEST_S} s after start: {listing}")
    if single:
        lines.append(f"(5) {verdict(single.peak_rss_mib <= TARGET_PEAK_RSS_MIB)} peak RSS, one process, {single.spec.samples} samples: "
                     f"{single.peak_rss_mib:.0f} MiB (target <= {TARGET_PEAK_RSS_MIB:.0f} MiB)")  # fmt: skip
    return "\n".join(lines)


def machine_description(python: str) -> dict[str, Any]:
    """Cores, memory, CPU model and versions of what was measured."""
    cpu = "?"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(encoding="utf-8"), re.M)
        cpu = found.group(1) if found else cpu
    except OSError:
        pass
    code = (
        "import importlib.metadata as m, sys, json\n"
        "found = {'python': sys.version.split()[0]}\n"
        "for p in ('pytest', 'pytest-xdist', 'openai', 'httpx', 'httpx2', 'datasets', 'pyarrow', 'pillow'):\n"
        "    try: found[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(found))"
    )
    try:
        versions = json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout)
    except (subprocess.SubprocessError, ValueError):
        versions = {}
    return {"cores": os.cpu_count(), "memory_gib": _mem_gib(), "cpu": cpu, "platform": platform.platform(), **versions}


def _mem_gib() -> float | None:
    try:
        found = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(encoding="utf-8"), re.M)
    except OSError:
        return None
    return round(int(found.group(1)) / 2**20, 1) if found else None


def peer_available(python: str | None) -> str:
    """'' when ``python`` can import evalscope, else why not."""
    if not python:
        return "no --peer-python given"
    try:
        done = subprocess.run([python, "-c", "import evalscope; print(evalscope.__version__)"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{python}: {exc}"
    return "" if done.returncode == 0 else f"{python} cannot import evalscope"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds the server takes per call (default 0.5)")
    parser.add_argument("--concurrency", type=int, default=32, help="--mia-concurrency (default 32)")
    parser.add_argument("--samples", type=int, default=400, help="samples in the dataset (default 400, the real rows)")
    parser.add_argument("--workers", type=int, default=0, help="pytest-xdist -n W (default 0: one process)")
    parser.add_argument("--dataset-form", choices=("dir", "parquet"), default="dir",
                        help="dir: hub-layout directory; parquet: one file (both read in place with pyarrow)")  # fmt: skip
    parser.add_argument("--hf-cache", choices=("warm", "cold"), default="warm",
                        help="warm: reuse datasets' arrow cache of the dir form; cold: a fresh HF_HOME per run")  # fmt: skip
    parser.add_argument("--scenario", choices=("custom", "all"), default="custom",
                        help="custom: one run from the flags above; all: the issue's targets in sequence")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario; the median wall is reported (default 1)")
    parser.add_argument("--peer-evalscope", action="store_true", help="also run evalscope's MIA-Bench when --peer-python has it")
    parser.add_argument("--peer-python", default="/tmp/venv-evalscope/bin/python", help="interpreter with evalscope installed")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs pytest (default: this one)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one run may take before it is killed (default 900)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="cache, logs and results (default benchmarks/out)")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.concurrency < 1 or args.workers < 0 or args.latency < 0 or not 1 <= args.repeat <= 10:
        parser.error("need --samples >= 1, --concurrency >= 1, --workers >= 0, --latency >= 0, 1 <= --repeat <= 10")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.launcher = Launcher()  # first, while this process is small
    try:
        return _main(args)
    finally:
        args.launcher.close()


def _main(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    peer = False
    if args.peer_evalscope:
        why = peer_available(args.peer_python)
        peer = not why
        if why:
            print(f"evalscope peer skipped: {why}", flush=True)
    data = ensure_dataset(args.out, args.samples)
    machine = machine_description(args.python)
    results = []
    for spec in scenario_specs(args, peer):
        results.append(measure_repeated(spec, data, args))
    stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    print()
    print(f"pytest-miabench benchmark, {stamp}; {machine['cores']} cores, {machine['memory_gib']} GiB, {machine['cpu']}; "
          f"python {machine.get('python', '?')}")  # fmt: skip
    print(f"dataset: {args.samples} samples, {data.total_bytes / 2**20:.1f} MiB of images ({', '.join(f'{k}: {v}' for k, v in sorted(data.formats.items()))})")
    print("ideal = samples x 2 calls x latency / parallel (parallel = --mia-concurrency, or the xdist worker count); "
          "CPU = user+sys of the process tree; RSS = largest single process (under xdist: the max over controller and workers); "
          "1st req = process start -> first request at the server; busy = first request -> last reply; tail = last reply -> exit")  # fmt: skip
    print()
    print(render_table(results))
    targets = render_targets(results)
    if targets:
        print()
        print(targets)
    record = {"date": stamp, "machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "results": [m.as_json() for m in results]}
    path = args.out / f"results-{stamp.replace(':', '')}.json"
    path.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    print(f"\nresults saved to {path}")
    return 0 if results and all(m.exit_code == 0 for m in results) else 1


if __name__ == "__main__":
    sys.exit(main())
