"""The printed tables: one row per scenario (plugin against floor), one row
per measured process, and the issue's targets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from measure import RSS_MARK_SAMPLES, Measurement

# The targets (the earlier "first request <= 1.0 s" and "RSS <= 240 MiB" are retired).
TARGET_RATIO = 1.10  # plugin wall / floor wall
TARGET_RSS_MIB = {"c32": 320.0, "c128-4000": 400.0}


@dataclass
class ScenarioResult:
    """The plugin and the floor (and maybe the peer) of one scenario."""

    name: str
    samples: int
    latency: float
    parallel: int  # --mia-concurrency, or xdist workers
    plugin: Measurement | None
    floor: Measurement | None
    peer: Measurement | None = None
    sdk_floor: Measurement | None = None  # the floor's requests through openai's typed call

    @property
    def ideal(self) -> float:
        """A zero-overhead client: waves of ``parallel`` samples, two calls each."""
        return math.ceil(self.samples / self.parallel) * 2 * self.latency

    @property
    def ratio(self) -> float | None:
        if self.plugin is None or self.floor is None or self.floor.wall <= 0:
            return None
        return self.plugin.wall / self.floor.wall

    @property
    def sdk_ratio(self) -> float | None:
        """Plugin wall / SDK floor wall: the plugin's own overhead, the SDK's cost set aside."""
        if self.plugin is None or self.sdk_floor is None or self.sdk_floor.wall <= 0:
            return None
        return self.plugin.wall / self.sdk_floor.wall

    @property
    def overhead_ms(self) -> float | None:
        if self.plugin is None or self.floor is None:
            return None
        return 1000 * (self.plugin.wall - self.floor.wall) / self.samples

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name, "samples": self.samples, "latency": self.latency, "parallel": self.parallel,
            "ideal": self.ideal, "ratio": self.ratio, "sdk_ratio": self.sdk_ratio, "overhead_ms_per_sample": self.overhead_ms,
            "plugin": self.plugin and self.plugin.as_json(), "floor": self.floor and self.floor.as_json(),
            "sdk_floor": self.sdk_floor and self.sdk_floor.as_json(),
            "peer": self.peer and self.peer.as_json(),
        }  # fmt: skip


def _f(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _grid(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def growth(result: ScenarioResult) -> str:
    """Peak RSS minus the high-water mark once 400 samples were through."""
    m = result.plugin
    if m is None or m.rss_at_mark_mib is None or result.samples <= RSS_MARK_SAMPLES:
        return "-"
    return f"{m.rss_at_mark_mib:.0f}->{m.peak_rss_mib:.0f} (+{m.peak_rss_mib - m.rss_at_mark_mib:.0f})"


def render_summary(results: Sequence[ScenarioResult]) -> str:
    headers = [
        "scenario", "samples", "lat s", "conc", "wall s", "floor s", "ratio", "SDK floor s", "ratio to SDK floor",
        "ideal s", "overhead ms/sample",
        "CPU s", "floor CPU s", "peak RSS MiB", f"RSS {RSS_MARK_SAMPLES}->end MiB", "1st req s", "exit",
    ]  # fmt: skip
    rows = []
    for r in results:
        p, f = r.plugin, r.floor
        rows.append([
            r.name, str(r.samples), f"{r.latency:g}", str(r.parallel), _f(p and p.wall), _f(f and f.wall),
            _f(r.ratio, ".3f"), _f(r.sdk_floor.wall if r.sdk_floor else None), _f(r.sdk_ratio, ".3f"), _f(r.ideal), _f(r.overhead_ms, ".1f"), _f(p and p.cpu, ".1f"), _f(f and f.cpu, ".1f"),
            _f(p and p.peak_rss_mib, ".0f"), growth(r), _f(p and p.first_request), str(p.exit_code if p else "-"),
        ])  # fmt: skip
    return _grid(headers, rows)


def render_runs(runs: Sequence[Measurement]) -> str:
    headers = [
        "run", "tool", "wall s", "CPU s", "CPU ms/sample", "RSS MiB", "1st req s", "busy s", "tail s",
        "in-flight mean/max", "calls/sample m+j", "server CPU s", "load before", "exit", "score",
    ]  # fmt: skip
    rows = []
    for m in runs:
        rows.append([
            m.name, m.tool, f"{m.wall:.2f}", f"{m.cpu:.1f}", f"{1000 * m.cpu / m.samples:.1f}", f"{m.peak_rss_mib:.0f}",
            _f(m.first_request), _f(m.busy), _f(m.tail), f"{m.mean_in_flight:.1f}/{m.max_in_flight}",
            f"{m.model_calls / m.samples:.2f}+{m.judge_calls / m.samples:.2f}", f"{m.server_cpu:.1f}",
            "/".join(f"{x:.1f}" for x in m.load_before), str(m.exit_code), _f(m.total_score, ".3f"),
        ])  # fmt: skip
    notes = [f"  {m.name} {m.tool}: {m.note}" for m in runs if m.note]
    return _grid(headers, rows) + ("\nnotes:\n" + "\n".join(notes) if notes else "")


def render_targets(results: Sequence[ScenarioResult]) -> str:
    """Each target MET or MISSED with the figure behind it, and RSS growth."""
    lines = []
    by_name = {r.name: r for r in results}
    for r in results:
        if r.ratio is None or r.plugin is None or r.name not in TARGET_RSS_MIB:
            continue
        ok = r.plugin.exit_code == 0 and r.ratio <= TARGET_RATIO
        rss_cap = TARGET_RSS_MIB[r.name]
        lines.append(f"{'MET   ' if ok else 'MISSED'} {r.name}: wall {r.plugin.wall:.2f} s = {r.ratio:.3f} x floor "
                     f"{r.floor.wall if r.floor else 0:.2f} s (target <= {TARGET_RATIO})")  # fmt: skip
        ok = r.plugin.peak_rss_mib <= rss_cap
        lines.append(f"{'MET   ' if ok else 'MISSED'} {r.name}: peak RSS {r.plugin.peak_rss_mib:.0f} MiB (target <= {rss_cap:.0f})")
    small, big = by_name.get("c32"), by_name.get("c128-4000")
    if small and big and small.plugin and big.plugin:
        lines.append(f"RSS growth 400 -> 4000 samples: c32 peak {small.plugin.peak_rss_mib:.0f} MiB -> c128-4000 peak "
                     f"{big.plugin.peak_rss_mib:.0f} MiB (+{big.plugin.peak_rss_mib - small.plugin.peak_rss_mib:.0f}, "
                     f"concurrency 32 -> 128 included); within the 4000 run: {growth(big)}")  # fmt: skip
    return "\n".join(lines)
