"""Where the plugin's CPU goes: ``run.py --profile`` runs the plugin under
``py-spy record`` (raw collapsed stacks, idle threads left out) and this
module sums the samples by thread, by leaf function (self) and by any
function on the stack (inclusive).

Without ``--profile=gil`` a thread waiting for the GIL counts as busy.
A profiled run's wall, CPU and RSS include py-spy itself: read them for the
shape, not against the targets.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def wrap(cmd: list[str], output: Path, gil: bool = False, rate: int = 100) -> list[str]:
    """``cmd`` under py-spy, or ``cmd`` unchanged when py-spy is missing.
    ``gil``: keep only samples of the thread holding the GIL (what the
    single interpreter lock actually spends its time on)."""
    binary = shutil.which("py-spy") or str(Path(cmd[0]).parent / "py-spy")
    if not Path(binary).exists():
        print("  (py-spy not found: pip install py-spy; running unprofiled)", flush=True)
        return cmd
    flags = ["--gil"] if gil else []
    return [binary, "record", "--format", "raw", "--threads", *flags, "--rate", str(rate), "--output", str(output), "--", *cmd]


def _frame(text: str) -> str:
    found = _FRAME.match(text.strip())
    if not found:
        return text.strip()
    path = found.group("file")
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{found.group('func')} ({path})"


def summarize(path: Path, top: int = 12) -> str:
    """Thread shares and the top self/inclusive functions of a raw profile."""
    if not path.exists():
        return f"no profile at {path}"
    threads: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        found = _LINE.match(line)
        if not found:
            continue
        count = int(found.group("count"))
        frames = found.group("stack").split(";")
        thread, frames = frames[0], [_frame(f) for f in frames[1:]]
        total += count
        threads[re.sub(r"\s*\(idle\)$", "", thread)] += count
        if frames:
            leaf[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count

    def block(title: str, counts: Counter[str]) -> list[str]:
        rows = [f"{title} (share of {total} non-idle samples)"]
        rows += [f"  {100 * n / total:5.1f}%  {name}" for name, n in counts.most_common(top)]
        return rows

    if not total:
        return f"empty profile at {path}"
    lines = block("threads", threads) + block("self (leaf function)", leaf) + block("inclusive", inclusive)
    return "\n".join(lines)
