"""The source distribution can run its own tests.

Built offline (``python -m build --sdist --no-isolation``: setuptools and
build come with the [test] extra) from a copy of the source tree, so an
earlier build's SOURCES.txt in the tree cannot add files the manifest
forgot.  The check is the file list (everything the tests load), then
``pip install`` of the sdist itself (built into a wheel by pip, offline:
``--no-deps --no-build-isolation --target``) and a small run of the
unpacked tree's own tests against that installed copy, its dependencies
taken from this environment: a fresh environment would download every
dependency again, too slow for CI on two cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from email.parser import Parser
from pathlib import Path

import pytest

# Builds the sdist and runs pytest in a subprocess on it.
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
# Build byproducts and local environments: not part of the source.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "venv", ".tox", ".nox", "build", "dist", "out", "*.egg-info", "__pycache__", "*.py[cod]", ".*_cache"
)
# A small run that needs every kind of file the suite loads: both conftests,
# tests/support (the loopback server, dataset makers), tests/data, tests/golden,
# the README (the CI recipe), and the plugin through its entry point.
SUBSET = (
    "tests/test_run.py::test_total_score_is_the_hand_computed_mean",
    "tests/test_protocols_golden.py",
    "tests/test_recipe.py::test_recipe_is_a_workflow",
)


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built sdist, unpacked; its top directory."""
    work = tmp_path_factory.mktemp("sdist")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (archive,) = (work / "dist").glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        # The "data" filter (refuses links and paths out of the target) exists from 3.10.12 on.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(work / "unpacked", **safe)
    (top,) = (work / "unpacked").iterdir()
    installed = work / "installed"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(installed), str(archive)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return top


def _installed(top: Path) -> Path:
    return top.parents[1] / "installed"


def _files(top: Path) -> set[str]:
    return {p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_sdist_carries_what_the_tests_load(sdist: Path) -> None:
    shipped = _files(sdist)
    needed = {p for p in _files(ROOT / "tests") if not p.endswith((".pyc", ".pyo"))}
    assert needed, "no test files found"
    missing = sorted(f"tests/{p}" for p in needed if f"tests/{p}" not in shipped)
    assert not missing, f"the sdist lacks {missing}"
    for name in ("conftest.py", "tests/conftest.py", "README.md", "CHANGELOG.md", "LICENSE", "pyproject.toml", "pytest_miabench/py.typed"):
        assert name in shipped, name
    # what README.md links to, and the documentation site's sources
    assert "docs/mia-demo-report.png" in shipped and "benchmarks/README.md" in shipped
    assert {"mkdocs.yml", "docs/index.md", "docs/gen_reference.py", "docs/reference/options.md"} <= shipped
    assert not any(p.startswith(("benchmarks/out/", ".venv/", ".git/")) for p in shipped)
    metadata = Parser().parsestr((sdist / "PKG-INFO").read_text(encoding="utf-8"))
    assert metadata["License-Expression"] == "MIT" and metadata.get_all("License-File") == ["LICENSE"]


def test_the_installed_sdist_runs_its_own_tests(sdist: Path, tmp_path: Path) -> None:
    # The tests of the unpacked tree, without its package source: the run
    # must use what pip installed from the sdist.
    tree = tmp_path / "tree"
    shutil.copytree(sdist, tree, ignore=shutil.ignore_patterns("pytest_miabench"))
    installed = _installed(sdist)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(installed), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # The package the run imports is the one pip installed, not this checkout's.
    where = subprocess.run(
        [sys.executable, "-c", "import pytest_miabench.plugin as p; print(p.__file__)"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).resolve().is_relative_to(installed.resolve()), where.stdout
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:xdist", *SUBSET],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " skipped" not in result.stdout, result.stdout[-2000:]
