"""The CI recipes of the documentation (docs/ci.md: the GitHub Actions
release and pull-request workflows, the GitLab CI job) parse; the GitHub
workflows pass zizmor's offline audits,
and avoid the mistakes the release one once had: an install from PyPI, a
baseline uploaded on failure, template expansions inside scripts, path
options without '=', and -n.  The pull-request recipe also skips with a
notice without secrets, has a timeout, takes main's passing report as the
baseline, keeps its caches and uploads its reports.  The GitLab job has the
same gates, skips without its keys, and writes path options with '='."""

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

PAGE = Path(__file__).resolve().parents[1] / "docs" / "ci.md"
SECTION = "## GitHub Actions: gating a release"
PR_SECTION = "## GitHub Actions: gating a pull request"
GITLAB_SECTION = "## GitLab CI: merge requests and the default branch"
# The plugin's path-valued options: written without '=' they move pytest's rootdir.
PATH_FLAGS = ("--mia-dataset", "--mia-cache-dir", "--mia-baseline", "--mia-report", "--mia-html", "--mia-image-root", "--junitxml")


def recipe_text(heading: str = SECTION) -> str:
    """The first ```yaml block of the section."""
    text = PAGE.read_text(encoding="utf-8")
    assert heading + "\n" in text, f"no section {heading!r} in docs/ci.md"
    section = text.split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"^```yaml\n(.*?)^```$", section, re.S | re.M)
    assert match, f"no yaml block under {heading!r} in docs/ci.md"
    return match.group(1)


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    loaded = yaml.safe_load(recipe_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def pr_workflow() -> dict[str, Any]:
    loaded = yaml.safe_load(recipe_text(PR_SECTION))
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
    assert "-n" not in words and not any(w.startswith("-n") and w[2:].isdigit() for w in words), "the docs advise one process"
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


@pytest.mark.parametrize("heading", [SECTION, PR_SECTION], ids=["release", "pull-request"])
def test_zizmor_finds_nothing(tmp_path: Path, heading: str) -> None:
    path = tmp_path / "mia-bench.yml"
    path.write_text(recipe_text(heading), encoding="utf-8")
    result = subprocess.run(
        [zizmor(), "--offline", "--no-progress", "--color=never", "--format=plain", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout, result.stdout + result.stderr


def test_pull_request_recipe_is_a_workflow_without_the_old_mistakes(pr_workflow: dict[str, Any]) -> None:
    triggers = pr_workflow.get("on", pr_workflow.get(True))
    assert isinstance(triggers, dict) and "pull_request" in triggers and "pull_request_target" not in triggers
    assert triggers["push"] == {"branches": ["main"]}  # main's runs leave the baselines
    assert pr_workflow["permissions"] == {}
    for name, job in pr_workflow["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int) and job["timeout-minutes"] > 0, name
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), step
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
    runs = scripts(pr_workflow)
    for script in runs:
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert not any("${{" in script for script in runs), "untrusted context must reach run: through env:"
    (bench,) = [script for script in runs if "pytest --mia-bench" in script]
    words = shlex.split(bench.replace("\\\n", " "))
    assert "-n" not in words
    for flag in PATH_FLAGS:
        assert flag not in words, f"{flag} given as a separate argument: write {flag}=PATH"
    for option in ("--mia-model-revision=", "--mia-baseline=", "--mia-max-drop=", "--mia-report=", "--mia-html="):
        assert option in bench, option


def test_pull_request_recipe_skips_with_a_notice_without_secrets(pr_workflow: dict[str, Any], tmp_path: Path) -> None:
    """A fork's pull request gets no secrets: the first step says so and every later step is skipped."""
    (job,) = pr_workflow["jobs"].values()
    first, *rest = job["steps"]
    assert set(first["env"]) == {"OPENAI_API_KEY", "MODEL_API_KEY"} and "secrets." in first["env"]["OPENAI_API_KEY"]
    script = first["run"]
    for keys, available, notice in (({}, "false", True), ({"OPENAI_API_KEY": "k", "MODEL_API_KEY": "m"}, "true", False)):
        output = tmp_path / f"output-{available}"
        done = subprocess.run(["bash", "-e", "-c", script], env={"PATH": "/usr/bin:/bin", "GITHUB_OUTPUT": str(output), **keys}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert output.read_text() == f"available={available}\n"
        assert done.stdout.startswith("::notice title=MIA-Bench skipped::") is notice
    for step in rest:
        assert "steps.keys.outputs.available == 'true'" in step["if"], step["name"]
    # Secrets reach only the steps that need them.
    assert [step["name"] for step in job["steps"] if "secrets." in str(step.get("env", {}))] == [first["name"], "Run MIA-Bench"]


def test_pull_request_recipe_baseline_cache_and_uploads(pr_workflow: dict[str, Any]) -> None:
    (job,) = pr_workflow["jobs"].values()
    all_steps = job["steps"]
    (fetch,) = [step for step in all_steps if "gh run download" in step.get("run", "")]
    # main's latest passing push run: a failed gate never becomes the baseline.
    assert all(part in fetch["run"] for part in ("gh run list", '--branch "$DEFAULT_BRANCH"', "--event push", "--status success", "--limit 1"))
    assert "--name mia-bench" in fetch["run"]
    assert job["permissions"] == {"contents": "read", "actions": "read"}
    (restore,) = [step for step in all_steps if step.get("uses", "").startswith("actions/cache/restore@")]
    (save,) = [step for step in all_steps if step.get("uses", "").startswith("actions/cache/save@")]
    key, prefix = restore["with"]["key"], restore["with"]["restore-keys"].strip()
    assert key.startswith(prefix) and save["with"]["key"] == key and save["with"]["path"] == restore["with"]["path"]
    assert "mia-cache" in save["with"]["path"] and save["if"].startswith("always()")
    (upload,) = [step for step in all_steps if step.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["if"].startswith("always()") and upload["with"]["name"] == "mia-bench"
    assert {"mia-report.json", "mia-report.html"} <= set(upload["with"]["path"].split())
    # The uploaded report is where the fetch step looks for main's.
    assert "baseline/mia-report.json" in next(s for s in scripts(pr_workflow) if "pytest --mia-bench" in s)


def test_gitlab_recipe_gates_merge_requests_and_skips_without_keys(tmp_path: Path) -> None:
    loaded = yaml.safe_load(recipe_text(GITLAB_SECTION))
    assert isinstance(loaded, dict)
    (job,) = loaded.values()
    assert [rule["if"] for rule in job["rules"]] == ['$CI_PIPELINE_SOURCE == "merge_request_event"', "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"]
    assert job["timeout"] and job["cache"]["when"] == "always" and "mia-cache/" in job["cache"]["paths"]
    assert job["artifacts"]["when"] == "always" and job["artifacts"]["reports"]["junit"] == "mia-junit.xml"
    script = "\n".join(job["script"])
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    # Without the keys the job says why and succeeds, before installing anything.
    skipped = subprocess.run(["bash", "-e", "-c", script], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, cwd=tmp_path)
    assert skipped.returncode == 0 and skipped.stdout.startswith("MIA-Bench skipped"), skipped.stdout + skipped.stderr
    (bench,) = [part for part in job["script"] if "pytest --mia-bench" in part]
    command = bench[bench.index("pytest --mia-bench") :]
    words = shlex.split(command.replace("\\\n", " "))
    assert "-n" not in words
    for flag in PATH_FLAGS:
        assert flag not in words, f"{flag} given as a separate argument: write {flag}=PATH"
    for option in ("--mia-model-revision=", "--mia-threshold=", "--mia-report=", "--junitxml="):
        assert option in command, option
    # The baseline is the default branch's report, gated with --mia-max-drop.
    assert "/jobs/artifacts/$CI_DEFAULT_BRANCH/raw/mia-report.json" in bench and "--mia-baseline=baseline.json --mia-max-drop=" in bench
