"""The README's GitHub Actions recipe ("Gating a release in CI") is a
workflow that parses, passes zizmor's offline audits, and avoids the
mistakes it once had: an install from PyPI, a baseline uploaded on failure,
template expansions inside scripts, path options without '=', and -n."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Gating a release in CI"
# The plugin's path-valued options: written without '=' they move pytest's rootdir.
PATH_FLAGS = ("--mia-dataset", "--mia-cache-dir", "--mia-baseline", "--mia-report", "--mia-html", "--mia-image-root", "--junitxml")


def recipe_text() -> str:
    """The first ```yaml block of the section."""
    text = README.read_text(encoding="utf-8")
    section = text.split(SECTION + "\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"^```yaml\n(.*?)^```$", section, re.S | re.M)
    assert match, f"no yaml block under {SECTION!r} in README.md"
    return match.group(1)


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    loaded = yaml.safe_load(recipe_text())
    assert isinstance(loaded, dict)
    return loaded


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def scripts(workflow: dict[str, Any]) -> list[str]:
    return [step["run"] for step in steps(workflow) if "run" in step]


def test_recipe_is_a_workflow(workflow: dict[str, Any]) -> None:
    # YAML 1.1 (PyYAML) reads the key `on` as True; GitHub reads it as "on".
    triggers = workflow.get("on", workflow.get(True))
    assert isinstance(triggers, dict) and triggers["release"] == {"types": ["published"]}
    assert "tag" in triggers["workflow_dispatch"]["inputs"]
    assert workflow["jobs"]
    for name, job in workflow["jobs"].items():
        assert job["runs-on"] and job["steps"], name
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), step
            if "uses" in step:
                # pinned to a commit, as zizmor asks
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
    for script in scripts(workflow):
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_recipe_avoids_the_old_mistakes(workflow: dict[str, Any]) -> None:
    runs = scripts(workflow)
    assert not any("${{" in script for script in runs), "untrusted context must reach run: through env:"
    assert not any(re.search(r"pip install\s+pytest-miabench\b", script) for script in runs), "the package is not on PyPI"
    (bench,) = [script for script in runs if "pytest --mia-bench" in script]
    words = shlex.split(bench.replace("\\\n", " "))
    assert "-n" not in words and not any(w.startswith("-n") and w[2:].isdigit() for w in words), "the README advises one process"
    for flag in PATH_FLAGS:
        assert flag not in words, f"{flag} given as a separate argument: write {flag}=PATH"
    joined = " ".join(words + [script for script in runs])
    for option in ("--mia-model-revision=", "--mia-baseline=", "--mia-max-drop=", "--mia-threshold="):
        assert option in joined, option
    # The release gets its report (the next baseline) only when everything before passed.
    (attach,) = [step for step in steps(workflow) if "gh release upload" in step.get("run", "")]
    assert attach.get("if", "success()") == "success()"
    # Caches are found again by a later run: a fixed prefix to restore from.
    (restore,) = [step for step in steps(workflow) if step.get("uses", "").startswith("actions/cache/restore@")]
    key, prefix = restore["with"]["key"], restore["with"]["restore-keys"].strip()
    assert key.startswith(prefix) and "${{" not in prefix


def zizmor() -> str:
    """zizmor from this interpreter's environment (the [test] extra), else PATH."""
    here = Path(sys.executable).parent / "zizmor"
    found = str(here) if here.exists() else shutil.which("zizmor")
    assert found, "zizmor is not installed: pip install -e '.[test]'"
    return found


def test_zizmor_finds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "mia-bench.yml"
    path.write_text(recipe_text(), encoding="utf-8")
    result = subprocess.run(
        [zizmor(), "--offline", "--no-progress", "--color=never", "--format=plain", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout, result.stdout + result.stderr
