"""Project-wide test set-up: hermetic environment for every test run.

The plugin under test reads provider settings and Hugging Face caches from
the environment; tests must never see a developer's real keys, endpoints or
dataset caches, and must never reach the network.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Support modules (loopback server, dataset makers) live in tests/support.
sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))

_HF_HOME = tempfile.mkdtemp(prefix="miabench-hf-")
for _name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
    os.environ.pop(_name, None)
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_DATASETS_CACHE"] = os.path.join(_HF_HOME, "datasets")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

pytest_plugins = ["pytester"]
