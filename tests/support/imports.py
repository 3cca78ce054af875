"""What importing one module drags in, measured in a fresh interpreter
(this test process has imported everything already)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("PIL", "numpy", "openai", "datasets")


def heavy_imports(module: str) -> list[str]:
    """The heavy libraries present after ``import module``."""
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    return out.split(",") if out else []
