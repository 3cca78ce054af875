"""Performance benchmark of pytest-miabench against a loopback OpenAI server.

Per scenario it runs, in its own process each and against a fresh loopback
server with the same latency: the floor (``floor.py``, a bare async HTTP
client sending the plugin's requests) and ``python -m pytest --mia-bench``
as a user runs it (no response cache); optionally evalscope's MIA-Bench.
It prints wall, CPU and peak RSS of each, the server-side figures, and
``ratio = plugin wall / floor wall``.

    python benchmarks/run.py --scenario c32           # 400 samples, c32, 0.5 s
    python benchmarks/run.py --scenario c128-4000     # the 400 rows x10 in one parquet file, c128
    python benchmarks/run.py --scenario all --plugin-python /path/to/venv/bin/python
    python benchmarks/run.py --samples 400 --concurrency 8 --latency 0   # custom

Everything stays on this machine: the only network peer is the loopback
server the script starts and stops itself.  Every run has a time limit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))  # support.server, support.data

import hotspots  # noqa: E402
from dataset_files import DatasetPaths, ensure_dataset, ensure_repeated, row_groups  # noqa: E402
from measure import JUDGE, MODEL, Launcher, Measurement, child_env, measure  # noqa: E402
from table import ScenarioResult, render_runs, render_summary, render_targets  # noqa: E402

SCENARIOS = {  # name: (samples, concurrency, latency)
    "c32": (400, 32, 0.5),
    "c128-4000": (4000, 128, 0.5),
}


def plugin_command(python: str, data: DatasetPaths, samples: int, concurrency: int, workers: int, url: str, report: Path) -> list[str]:
    """``python -m pytest --mia-bench ...`` as a user types it, without the
    response cache so every sample costs two real round trips."""
    cmd = [
        python, "-m", "pytest", "--mia-bench",
        f"--mia-model={MODEL}", f"--mia-base-url={url}", f"--mia-judge-model={JUDGE}", f"--mia-judge-base-url={url}",
        f"--mia-dataset={data.parquet}", f"--mia-concurrency={concurrency}",
        f"--mia-report={report}", "--mia-no-cache", "-p", "no:cacheprovider", "-q",
    ]  # fmt: skip
    if samples < data.rows:
        cmd.append(f"--mia-limit={samples}")
    if workers:
        cmd += ["-n", str(workers)]
    return cmd


def floor_command(python: str, data: DatasetPaths, samples: int, concurrency: int, url: str, result: Path, client: str = "bare") -> list[str]:
    return [
        python, str(HERE / "floor.py"), "--dataset", str(data.parquet), "--base-url", url, "--model", MODEL,
        "--judge-model", JUDGE, "--concurrency", str(concurrency), "--samples", str(samples), "--result", str(result),
        "--client", client,
    ]  # fmt: skip


def peer_command(python: str, data: DatasetPaths, samples: int, concurrency: int, url: str, work: Path, result: Path) -> list[str]:
    """evalscope's MIA-Bench through ``_peer_evalscope.py`` on the hub-layout dir."""
    return [
        python, str(HERE / "_peer_evalscope.py"), "--dataset", str(data.hub_dir), "--base-url", url,
        "--model", MODEL, "--judge-model", JUDGE, "--concurrency", str(concurrency),
        "--samples", str(samples), "--work-dir", str(work), "--result", str(result),
    ]  # fmt: skip


def warm_hf_cache(python: str, data: DatasetPaths, hf_home: Path, timeout: float) -> None:
    """Load the hub-layout dir once through ``datasets`` (the peer's loader)
    so the peer's runs find its arrow cache, as a second run on a user's machine does."""
    marker = hf_home / f"warm-{data.rows}-{data.parquet.parent.parent.name}-{data.parquet.stem}"
    if marker.exists():
        return
    code = "import datasets, sys; datasets.load_dataset(sys.argv[1], split='test')"
    subprocess.run([python, "-c", code, str(data.hub_dir)], env=child_env(hf_home), check=True, timeout=timeout, capture_output=True)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("ok", encoding="utf-8")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_scenario(name: str, samples: int, concurrency: int, latency: float, args: argparse.Namespace) -> ScenarioResult:
    base = ensure_dataset(args.out, 400)
    data = base if samples <= base.rows else ensure_repeated(base, math.ceil(samples / base.rows))
    print(f"{name}: {samples} samples of {data.parquet} (row groups {sorted(set(row_groups(data.parquet)))} rows), "
          f"concurrency {concurrency}{f', -n {args.workers}' if args.workers else ''}, latency {latency:g} s", flush=True)  # fmt: skip
    hf_home = args.out / "hf-home"
    logs = args.out / "logs" / args.stamp
    result = ScenarioResult(name, samples, latency, args.workers or concurrency, None, None)
    with tempfile.TemporaryDirectory(prefix="miabench-run-") as tmp_text:
        tmp = Path(tmp_text)

        def one(tool: str, command: Any, python_env: dict[str, str]) -> Measurement:
            print(f"  {tool} ...", end=" ", flush=True)
            m, _ = measure(name, tool, samples, latency, concurrency, args.launcher, command, python_env,
                           logs / f"{name}-{tool}.log", args.timeout, tmp)  # fmt: skip
            print(f"wall {m.wall:.2f} s, CPU {m.cpu:.1f} s, RSS {m.peak_rss_mib:.0f} MiB, exit {m.exit_code}", flush=True)
            return m

        env = child_env(hf_home)
        floor_out, report = tmp / "floor.json", tmp / "report.json"
        # Unmeasured: compiles and caches the plugin's bytecode (a user's second run).
        one("warm-up", lambda url: plugin_command(args.plugin_python, data, 2, concurrency, args.workers, url, report), env)
        result.floor = one("floor", lambda url: floor_command(args.plugin_python, data, samples, result.parallel, url, floor_out), env)
        result.floor.extra.update(_read_json(floor_out))
        if args.sdk_floor:
            sdk_out = tmp / "floor-sdk.json"
            result.sdk_floor = one("floor-sdk", lambda url: floor_command(args.plugin_python, data, samples, result.parallel, url, sdk_out, "sdk"), env)
            result.sdk_floor.extra.update(_read_json(sdk_out))
        profile = logs / f"{name}-plugin.pyspy.txt"

        def plugin(url: str) -> list[str]:
            cmd = plugin_command(args.plugin_python, data, samples, concurrency, args.workers, url, report)
            return hotspots.wrap(cmd, profile, gil=args.profile == "gil") if args.profile else cmd

        result.plugin = one("plugin", plugin, env)
        result.plugin.total_score = _read_json(report).get("total_score")
        if args.profile:
            result.plugin.note = (
                result.plugin.note + "; " if result.plugin.note else ""
            ) + f"profiled ({args.profile}): figures include py-spy"
            print(hotspots.summarize(profile), flush=True)
            print(f"  raw profile: {profile}", flush=True)
        if args.peer:
            warm_hf_cache(args.peer_python, data, hf_home, args.timeout)
            peer_out = tmp / "peer.json"
            result.peer = one(
                "evalscope", lambda url: peer_command(args.peer_python, data, samples, concurrency, url, tmp / "evalscope", peer_out), env
            )
            result.peer.total_score = _read_json(peer_out).get("total_score")
    return result


def describe(python: str) -> dict[str, Any]:
    """Cores, memory, CPU model, load, versions, and where the plugin comes from."""
    text = Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").exists() else ""
    cpu = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    mem = re.search(
        r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(encoding="utf-8") if Path("/proc/meminfo").exists() else "", re.M
    )
    code = (
        "import hashlib, importlib.metadata as m, json, pathlib, sys\n"
        "found = {'python': sys.version.split()[0]}\n"
        "for p in ('pytest', 'pytest-xdist', 'openai', 'httpx', 'httpx2', 'datasets', 'pyarrow', 'pillow', 'pytest-miabench'):\n"
        "    try: found[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "import pytest_miabench as pkg\n"
        "root = pathlib.Path(pkg.__file__).parent\n"
        "digest = hashlib.sha256(b''.join(p.read_bytes() for p in sorted(root.rglob('*.py'))))\n"
        "found['plugin_path'] = str(root); found['plugin_sha256'] = digest.hexdigest()[:12]\n"
        "print(json.dumps(found))"
    )
    try:
        done = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=120, check=True, env=child_env(Path("/nonexistent")), cwd="/"
        )
        versions = json.loads(done.stdout)
    except (subprocess.SubprocessError, ValueError) as exc:
        versions = {"error": str(exc)}
    return {
        "cores": os.cpu_count(), "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "cpu": cpu.group(1) if cpu else "?", "platform": platform.platform(), "load_at_start": os.getloadavg(), **versions,
    }  # fmt: skip


def peer_available(python: str | None) -> str:
    """'' when ``python`` can import evalscope, else why not."""
    if not python:
        return "no --peer-python given"
    try:
        done = subprocess.run([python, "-c", "import evalscope"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{python}: {exc}"
    return "" if done.returncode == 0 else f"{python} cannot import evalscope"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all", "custom"), default="all",
                        help="c32, c128-4000, all (both), or custom (from --samples/--concurrency/--latency)")  # fmt: skip
    parser.add_argument("--plugin-python", "--python", dest="plugin_python", default=sys.executable,
                        help="interpreter whose installed pytest-miabench is measured; it also runs the floor (default: this one)")  # fmt: skip
    parser.add_argument("--samples", type=int, default=400, help="custom: samples (> 400 repeats the rows in one file)")
    parser.add_argument("--concurrency", type=int, default=32, help="custom: --mia-concurrency")
    parser.add_argument("--latency", type=float, default=0.5, help="custom: seconds the server takes per call")
    parser.add_argument("--workers", type=int, default=0, help="custom: pytest-xdist -n W (default 0: one process)")
    parser.add_argument("--peer-evalscope", action="store_true", help="also run evalscope's MIA-Bench when --peer-python has it")
    parser.add_argument("--peer-python", default="/tmp/venv-evalscope/bin/python", help="interpreter with evalscope installed")
    parser.add_argument("--profile", nargs="?", const="busy", choices=("busy", "gil"),
                        help="run the plugin under py-spy and print where its time goes: busy threads, or (=gil) the GIL holder")  # fmt: skip
    parser.add_argument("--no-sdk-floor", dest="sdk_floor", action="store_false",
                        help="skip the second floor (the same requests through the openai SDK's typed call)")
    parser.add_argument("--label", default="", help="a word for the results file name (before, after, ...)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one run may take before it is killed (default 900)")
    parser.add_argument("--out", type=Path, default=HERE / "out", help="datasets, logs and results (default benchmarks/out)")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.concurrency < 1 or args.workers < 0 or args.latency < 0:
        parser.error("need --samples >= 1, --concurrency >= 1, --workers >= 0, --latency >= 0")
    if args.scenario != "custom" and args.workers:
        parser.error("--workers applies to --scenario custom only")
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
    args.stamp = datetime.datetime.now().astimezone().strftime("%Y%m%d-%H%M%S") + (f"-{args.label}" if args.label else "")
    args.peer = False
    if args.peer_evalscope:
        why = peer_available(args.peer_python)
        args.peer = not why
        if why:
            print(f"evalscope peer skipped: {why}", flush=True)
    machine = describe(args.plugin_python)
    print(f"plugin: {machine.get('plugin_path')} (sha256 of its .py files {machine.get('plugin_sha256')}), "
          f"python {machine.get('python')}, openai {machine.get('openai')}; load {machine['load_at_start']}", flush=True)  # fmt: skip
    if args.scenario == "custom":
        plan = [("custom", args.samples, args.concurrency, args.latency)]
    else:
        names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
        plan = [(name, *SCENARIOS[name]) for name in names]
    results = [run_scenario(name, samples, conc, latency, args) for name, samples, conc, latency in plan]
    runs = [m for r in results for m in (r.floor, r.sdk_floor, r.plugin, r.peer) if m is not None]
    client = next((r.floor.extra.get("client") for r in results if r.floor and r.floor.extra.get("client")), "?")
    print()
    print(f"pytest-miabench benchmark {args.stamp}; {machine['cores']} cores, {machine['memory_gib']} GiB, {machine['cpu']}; "
          f"load average at start {'/'.join(f'{x:.1f}' for x in machine['load_at_start'])}; floor client: {client}")  # fmt: skip
    print("ratio = plugin wall / floor wall; ideal = ceil(samples / conc) x 2 x latency; overhead = (wall - floor) / samples; "
          "CPU = user+sys of the process tree; RSS = ru_maxrss of the largest process; RSS 400->end = VmHWM when the "
          "400th judge call returned -> peak")  # fmt: skip
    print()
    print(render_summary(results))
    print()
    print(render_runs(runs))
    targets = render_targets(results)
    if targets:
        print()
        print(targets)
    record = {"stamp": args.stamp, "machine": machine, "floor_client": client,
              "args": {k: str(v) for k, v in vars(args).items() if k != "launcher"},
              "scenarios": [r.as_json() for r in results]}  # fmt: skip
    path = args.out / f"results-{args.stamp}.json"
    path.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    print(f"\nresults saved to {path}")
    return 0 if runs and all(m.exit_code == 0 for m in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
