"""Launching and measuring one run: the small launcher process, the
loopback server, and what both record.

Every run (the plugin, the floor, the evalscope peer) gets a fresh server
with fresh counters and is spawned by the same launcher, so their figures
are taken the same way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL = "vlm"
JUDGE = "judge"
MODEL_REPLY = "The image shows a quiet street at dusk. Two people walk past a red door, and a bicycle leans on the wall."
# A valid evalscope-protocol verdict; the plugin scores it 7/10 = 0.7.
JUDGE_REPLY = "score of component 1: 3/4, score of component 2: 2/3, total score: 7/10. The response is mostly on task."
# evalscope >= 1.11 asks its judge for one JSON object ("component_i" <= weight_i);
# 1 is within every weight, so every sample scores 1 * k / sum(weights).
PEER_JUDGE_REPLY = json.dumps({"reasoning": "mostly on task", **{f"component_{i}": 1 for i in range(1, 6)}})
PEER_JSON_MARKER = "Reply with a single JSON object"
RSS_MARK_SAMPLES = 400  # "RSS at 400": the high-water mark once this many samples are through


@dataclass(frozen=True)
class ProcessResult:
    """Exit code and resource use of one finished process tree."""

    exit_code: int
    started: float  # perf_counter just before the process was created
    wall: float
    cpu: float  # user + sys of the process and every descendant it reaped
    peak_rss_kib: int  # ru_maxrss: max over those processes (Linux reports KiB)
    timed_out: bool
    hwm: list[tuple[float, int]]  # (perf_counter, VmHWM KiB) of the process itself, every 0.1 s


# Runs each measured process.  Linux records, at exec, the high-water RSS
# of the memory the new program replaces, and for a child spawned with
# vfork (as subprocess does) that is the spawning process's memory: every
# child then reports ``ru_maxrss`` >= the peak RSS of whoever spawned it.
# The benchmark holds a threaded server, the run history and once the
# generated dataset, so it spawns through this launcher, started while it
# is still small (~10 MB).  The launcher also samples the child's VmHWM
# (its own high-water mark, unaffected by the above) to tell when the peak
# was reached.  ``time.perf_counter`` is CLOCK_MONOTONIC, shared with the
# server's timestamps in the benchmark process.
_LAUNCHER = r"""
import json, os, signal, subprocess, sys, time
def hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None
for line in sys.stdin:
    job = json.loads(line)
    samples, timed_out = [], False
    with open(job["log"], "wb") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(job["cmd"], cwd=job["cwd"], env=job["env"], stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            mark = hwm(proc.pid)
            if mark is not None:
                samples.append((now, mark))
            if now - started > job["timeout"] and not timed_out:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    print(json.dumps({"exit_code": proc.returncode, "started": started, "wall": wall,
                      "cpu": usage.ru_utime + usage.ru_stime, "peak_rss_kib": usage.ru_maxrss,
                      "timed_out": timed_out, "hwm": samples}), flush=True)
"""


class Launcher:
    """The small process that spawns and reaps the measured runs."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, cmd: Sequence[str], cwd: Path, env: dict[str, str], log: Path, timeout: float) -> ProcessResult:
        """Run ``cmd`` and reap it with ``os.wait4``: its rusage covers this
        child and the descendants it reaped (xdist workers), the per-run share
        of ``getrusage(RUSAGE_CHILDREN)``; ``ru_maxrss`` is then the largest
        single process, not a sum.  After ``timeout`` seconds the whole
        process group is killed."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        job = {"cmd": list(cmd), "cwd": str(cwd), "env": env, "log": str(log), "timeout": timeout}
        self._proc.stdin.write(json.dumps(job) + "\n")
        self._proc.stdin.flush()
        reply = json.loads(self._proc.stdout.readline())
        reply["hwm"] = [tuple(pair) for pair in reply["hwm"]]
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
    """The environment of a measured run: the interpreter's own packages (no
    PYTHONPATH: the plugin is whatever --plugin-python has installed), no
    OpenAI settings of the caller, the HF stack offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "HF_", "HUGGINGFACE_")) and k != "PYTHONPATH"}
    env["HF_HOME"] = str(hf_home)
    env["HF_DATASETS_CACHE"] = str(hf_home / "datasets")
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_DATASETS_OFFLINE"] = "1"
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["MODELSCOPE_CACHE"] = str(hf_home / "modelscope")
    # Bytecode is cached as on a user's machine: pytest writes its
    # assertion-rewritten copies of the plugin's modules to __pycache__ on the
    # first run (run.py makes an unmeasured warm-up run for that) and reads
    # them after; a machine-wide PYTHONDONTWRITEBYTECODE would make every
    # measured run compile them again.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


@dataclass
class Measurement:
    """What one run produced."""

    name: str
    tool: str  # plugin, floor or evalscope
    samples: int
    latency: float
    concurrency: int
    exit_code: int
    wall: float
    cpu: float
    peak_rss_mib: float
    rss_at_mark_mib: float | None  # VmHWM once RSS_MARK_SAMPLES samples were judged (None: fewer)
    first_request: float | None  # process start -> first request at the server
    busy: float | None  # first request at the server -> last reply sent
    tail: float | None  # last reply sent -> process exit (report, teardown)
    mean_in_flight: float
    max_in_flight: int
    model_calls: int
    judge_calls: int
    load_before: tuple[float, float, float]  # os.getloadavg() just before the run
    server_cpu: float  # CPU of the benchmark process (the loopback server) during the run
    total_score: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def measure(
    name: str, tool: str, samples: int, latency: float, concurrency: int, launcher: Launcher,
    command: Any, env: dict[str, str], log: Path, timeout: float, workdir: Path,
) -> tuple[Measurement, ProcessResult]:  # fmt: skip
    """Start a fresh loopback server, run ``command(url)`` against it, stop it."""
    from support.server import OpenAIServer

    load = os.getloadavg()
    own = resource.getrusage(resource.RUSAGE_SELF)
    log.parent.mkdir(parents=True, exist_ok=True)
    with OpenAIServer(server_script, judge_model=JUDGE, latency=latency, keep_raw=False) as server:
        proc = launcher.run(command(server.url), workdir, env, log, timeout)
        first = busy = tail = None
        if server.first_request_at is not None:
            first = server.first_request_at - proc.started
        if server.first_request_at is not None and server.last_reply_at is not None:
            busy = server.last_reply_at - server.first_request_at
            tail = proc.started + proc.wall - server.last_reply_at
        judged = sorted(r.started for r in server.by_role("judge"))
        model_calls, judge_calls = len(server.by_role("model")), len(judged)
        mean_in_flight, max_in_flight = server.mean_in_flight(), server.max_in_flight
    after = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu = after.ru_utime + after.ru_stime - own.ru_utime - own.ru_stime
    mark = None
    if len(judged) >= RSS_MARK_SAMPLES and proc.hwm:
        # The mark-th judge call's reply leaves the server `latency` after it arrived.
        at = judged[RSS_MARK_SAMPLES - 1] + latency
        before = [kib for t, kib in proc.hwm if t <= at + 0.1]
        mark = (before[-1] if before else proc.hwm[0][1]) / 1024
    note = "timed out" if proc.timed_out else ""
    if proc.exit_code != 0 and not note:
        note = f"exit {proc.exit_code}, see {log}"
    result = Measurement(
        name=name, tool=tool, samples=samples, latency=latency, concurrency=concurrency,
        exit_code=proc.exit_code, wall=proc.wall, cpu=proc.cpu, peak_rss_mib=proc.peak_rss_kib / 1024,
        rss_at_mark_mib=mark, first_request=first, busy=busy, tail=tail,
        mean_in_flight=mean_in_flight, max_in_flight=max_in_flight,
        model_calls=model_calls, judge_calls=judge_calls, load_before=load, server_cpu=server_cpu, note=note,
    )  # fmt: skip
    # The high-water mark over time (about one point a second), for the JSON record.
    series, last = [], -1.0
    for t, kib in proc.hwm:
        if t - last >= 1.0:
            series.append((round(t - proc.started, 1), round(kib / 1024)))
            last = t
    result.extra["hwm_mib_by_second"] = series
    return result, proc
