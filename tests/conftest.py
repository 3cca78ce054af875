"""Fixtures shared by the plugin's tests: a loopback OpenAI-compatible
server, small real datasets, and a runner for ``pytest --mia-bench``."""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import data
from support.server import OpenAIServer, Reply, Request

# pytester's in-process runs drop from sys.modules every module first
# imported inside them, so whatever an inner run imports first is imported
# again later.  Two libraries cannot be imported twice in one process; they
# are imported here, before any in-process run, whatever order tests run in:
# - numpy: its C core refuses a second initialisation ("cannot load module
#   more than once per process"); inner runs import it (pyarrow, the report's
#   confidence intervals).
# - datasets: importing it registers its pyarrow extension types in pyarrow's
#   process-wide registry, so a second import raises ArrowKeyError ("type
#   extension ... already defined").
# Everything else the plugin imports (openai, pyarrow, Pillow) imports again
# cleanly and is deliberately not pre-imported here.
for _module in ("numpy", "datasets"):
    importlib.import_module(_module)

# The plugin's own modules, all of them, for the same reason: a package that
# outlives an inner run keeps its attribute for a submodule that run imported
# and pytester then dropped, so in the next run `from ..run import handoff`
# found the old module while `from .handoff import X` imported a new one, and
# the two sides of one run no longer shared a stash key (records in flight
# went missing from reports, depending on which test had imported a package
# first).  Imported once here, every inner run uses one copy, as a user's
# process does.
import pytest_miabench  # noqa: E402

for _info in pkgutil.walk_packages(pytest_miabench.__path__, "pytest_miabench."):
    if not _info.name.endswith("__main__"):  # running it is the command line's
        importlib.import_module(_info.name)

# Rows of the real instruction file used by the small end-to-end dataset:
# 3 components, 2 components, duplicated types (11, 255), weights summing to 8 (241).
SMALL_ROWS = (0, 2, 11, 241, 255, 286)
SMALL_FORMATS = ("jpeg", "png", "webp", "mpo", "jpeg", "webp")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "uses_rerunfailures: the test's inner runs need pytest-rerunfailures loaded")
    config.addinivalue_line("markers", "e2e: runs pytest itself (pytester or a subprocess); `-m 'not e2e'` is the fast tier")


# A test that runs pytest (through pytester, or a fixture built on it) is
# end to end: marked by what it uses, so no new test can forget the mark.
# Modules whose tests start pytest or a build in a subprocess of their own
# say so with ``pytestmark = pytest.mark.e2e``.
_E2E_FIXTURES = frozenset({"pytester", "testdir"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@functools.cache
def _rerunfailures_spins() -> bool:
    """pytest-rerunfailures before 16.7 (the newest that pytest 8.0, our floor,
    accepts is 16.1) starts a status server in every pytest session of a
    process with xdist installed; after an xdist run its threads read the
    closed sockets for ever at full CPU (pytest-rerunfailures#322).  Inner
    runs in this process would pile such threads up in the outer worker."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(part) for part in version("pytest-rerunfailures").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) < (16, 7)


@pytest.fixture(autouse=True)
def _inner_runs_without_spinning_rerunfailures(request: pytest.FixtureRequest) -> Iterator[None]:
    """With an affected pytest-rerunfailures, inner runs do not load it unless
    a test asks for it (a test that does, runs no inner xdist session)."""
    if not _rerunfailures_spins() or request.node.get_closest_marker("uses_rerunfailures") or "pytester" not in request.fixturenames:
        yield
        return
    # Pytester clears PYTEST_ADDOPTS when it starts: set it after.
    request.getfixturevalue("pytester")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTEST_ADDOPTS", "-p no:rerunfailures")
        yield


@pytest.fixture(autouse=True)
def _no_github_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner runs never write to a real GitHub job summary or print real
    annotations when this suite itself runs on GitHub Actions; tests of
    that set the variables themselves."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)


@pytest.fixture(scope="session", autouse=True)
def _every_report_matches_the_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session, every JSON report written under its
    temporary directories (an xdist worker's own) is checked against the
    published schema (pytest_miabench/reporting/report.schema.json): a
    report the plugin writes that its schema rejects fails the run."""
    yield
    from support.reportcheck import report_errors

    problems = report_errors(tmp_path_factory.getbasetemp())
    if problems:
        pytest.fail("JSON reports that do not match the published schema:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def rows() -> list[dict[str, Any]]:
    return data.instruction_rows()


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]]) -> Path:
    """A hub-layout directory with six real rows and real images."""
    picked = [rows[i] for i in SMALL_ROWS]
    images = [data.image_bytes(fmt, 64 + i, 48, seed=i) for i, fmt in enumerate(SMALL_FORMATS)]
    return data.write_hub_dataset(tmp_path_factory.mktemp("small") / "mia", picked, images)


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(judge_model="judge") as srv:
        yield srv


class Bench:
    """Runs ``pytest --mia-bench`` in a pytester directory against a server."""

    def __init__(self, pytester: pytest.Pytester, server: OpenAIServer, dataset: Path) -> None:
        self.pytester = pytester
        self.server = server
        self.dataset = dataset
        self.report_path = pytester.path / "report.json"

    def args(self, *extra: str) -> list[str]:
        return [
            "--mia-bench",
            "--mia-model=vlm",
            "--mia-judge-model=judge",
            f"--mia-base-url={self.server.url}",
            f"--mia-judge-base-url={self.server.url}",
            f"--mia-dataset={self.dataset}",
            f"--mia-report={self.report_path}",
            "--mia-max-retries=2",
            *extra,
        ]

    def spawn(self, *extra: str, new_session: bool = False, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """``pytest --mia-bench`` in a real process that a test can signal
        mid-run (pytester's helpers cannot), output on stdout.  Ignored and
        blocked signals are inherited across exec, and the process running
        this test may have SIGINT so (seen under xdist): the child starts
        with SIGINT and SIGTERM as a shell's foreground job has them."""
        cmd = [sys.executable, "-c", _LAUNCH, *self.args(*extra), "-q", "-p", "no:randomly"]
        return subprocess.Popen(
            cmd, cwd=self.pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=new_session, env=env
        )

    def run(self, *extra: str, subprocess: bool = False) -> pytest.RunResult:
        args = self.args(*extra)
        if subprocess:
            return self.pytester.runpytest_subprocess(*args)
        return self.pytester.runpytest(*args)

    def report(self) -> dict[str, Any]:
        return json.loads(self.report_path.read_text(encoding="utf-8"))


_LAUNCH = (
    "import os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'pytest', *sys.argv[1:]])\n"
)


@pytest.fixture
def bench(pytester: pytest.Pytester, server: OpenAIServer, small_dataset: Path) -> Bench:
    return Bench(pytester, server, small_dataset)


__all__ = ["Bench", "OpenAIServer", "Reply", "Request"]
