"""Hardening II (issue 22), files and threads: reports never replace special
files or links, the cache refuses a symlinked database, an unusable default
cache folder is a warning, and a timed-out sample's record is handed over
only once its task has finished."""

from __future__ import annotations

import concurrent.futures
import copy
import json
import os
import select
import stat
import threading
import time
from pathlib import Path

import pytest
from support.server import OpenAIServer, Reply

from conftest import Bench

# -- 8. reports: special files, links, clashing paths ------------------------------------


class FifoReader:
    """Reads a FIFO made in the test's directory on a thread, until its writer closes.

    The read end is opened at once (non-blocking, so no writer is needed), so
    a reader is there before the run starts; ``select`` waits for data and
    reports the end once a writer has come and gone."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd], [], [], 60)
            if not ready:
                return
            chunk = os.read(self._fd, 65536)
            if not chunk:
                return
            self._chunks.append(chunk)

    def text(self) -> str:
        self._thread.join(60)
        os.close(self._fd)
        return b"".join(self._chunks).decode("utf-8")


@pytest.mark.parametrize("extra", [[], ["-n", "2"]])
def test_a_report_to_a_fifo_is_written_through_it(bench: Bench, extra: list[str]) -> None:
    fifo = FifoReader(bench.pytester.path / "report.fifo")
    result = bench.run("--mia-limit=2", f"--mia-report={fifo.path}", *extra)
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    assert stat.S_ISFIFO(os.lstat(fifo.path).st_mode)  # still a FIFO, not a regular file
    assert json.loads(fifo.text())["n_scored"] == 2
    assert not list(bench.pytester.path.glob(".mia-report-*"))


@pytest.mark.parametrize("existing", [True, False], ids=["target-exists", "target-missing"])
def test_a_report_path_that_is_a_link_keeps_the_link(bench: Bench, existing: bool) -> None:
    real = bench.pytester.path / "kept" / "real.json"
    real.parent.mkdir()
    if existing:
        real.write_text("old")
    link = bench.pytester.path / "report-link.json"
    link.symlink_to(real)
    html_real = bench.pytester.path / "kept" / "real.html"
    html_link = bench.pytester.path / "page.html"
    html_link.symlink_to(html_real)
    result = bench.run("--mia-limit=1", f"--mia-report={link}", f"--mia-html={html_link}")
    result.assert_outcomes(passed=1)
    assert link.is_symlink() and html_link.is_symlink()
    assert os.readlink(link) == str(real)
    assert json.loads(real.read_text(encoding="utf-8"))["n_scored"] == 1
    assert "<html" in html_real.read_text(encoding="utf-8").lower()
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.html", "real.json"]  # no temporary file left


def test_a_report_on_a_socket_is_a_usage_error_before_any_call(bench: Bench) -> None:
    import socket

    path = bench.pytester.path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        result = bench.run("--mia-limit=1", f"--mia-report={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--mia-report: cannot write {path}: it is a socket*"])
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert bench.server.requests == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mia-report=same.json", "--mia-html=same.json"], "*--mia-report and --mia-html both write */same.json; give each its own path*"),
        (["--mia-report=out/../same.xml", "--junitxml=same.xml"], "*--mia-report and --junitxml both write */same.xml; give each its own path*"),
        (["--mia-html=link.html", "--mia-report=target.html"], "*--mia-report and --mia-html both write */target.html; give each its own path*"),
        (["--mia-cache-dir=c", "--mia-report=c/responses.sqlite3"], "*--mia-report: c/responses.sqlite3 is the response cache's database*"),
        (["--mia-cache-dir=c", "--mia-html=c/responses.sqlite3-wal"], "*--mia-html: c/responses.sqlite3-wal is the response cache's database*"),
        (["--mia-report=.pytest_cache/d/mia-bench/responses.sqlite3"], "*--mia-report: * is the response cache's database*"),
    ],
    ids=["json-and-html", "json-and-junit", "through-a-link", "on-the-cache", "on-its-wal", "on-the-default-cache"],
)
def test_two_outputs_on_one_path_or_a_report_on_the_cache_is_a_usage_error(bench: Bench, args: list[str], message: str) -> None:
    (bench.pytester.path / "out").mkdir()
    (bench.pytester.path / "link.html").symlink_to(bench.pytester.path / "target.html")
    result = bench.run("--mia-limit=1", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines([message])
    assert bench.server.requests == []
    assert not (bench.pytester.path / "c" / "responses.sqlite3").exists()


# -- 9. a symlink in place of the cache database ------------------------------------------


@pytest.mark.parametrize("extra", [[], ["-n", "2"]])
@pytest.mark.parametrize("name", ["responses.sqlite3", "responses.sqlite3-wal"])
def test_a_symlinked_cache_database_is_refused_and_the_run_goes_on(bench: Bench, tmp_path: Path, name: str, extra: list[str]) -> None:
    cache = bench.pytester.path / "c"
    cache.mkdir()
    elsewhere = tmp_path / "elsewhere" / "poisoned.sqlite3"
    elsewhere.parent.mkdir()
    (cache / name).symlink_to(elsewhere)  # dangling
    # In a subprocess: the warning is the inner run's, not the suite's.
    result = bench.run("--mia-limit=2", f"--mia-cache-dir={cache}", "-W", "always::pytest.PytestWarning", *extra, subprocess=True)
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"*mia-bench: response cache in {cache} unusable ({cache / name} is a symbolic link; refusing to follow it)*"])
    assert not elsewhere.exists()
    assert list(elsewhere.parent.iterdir()) == []
    assert (cache / name).is_symlink()
    assert bench.report()["usage"]["model"]["api_calls"] == 2


# -- 10. an unusable default cache folder ----------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["-n", "2"]])
def test_an_unusable_default_cache_folder_is_a_warning_and_the_run_goes_on(bench: Bench, extra: list[str]) -> None:
    # What a read-only checkout does to pytest's cache folder, as root too
    # (root ignores permission bits): the folder cannot be made.
    (bench.pytester.path / ".pytest_cache").write_text("a file where the cache folder goes")
    # In a subprocess: the warnings are the inner run's, not the suite's.
    result = bench.run("--mia-limit=2", "-W", "always::pytest.PytestWarning", *extra, subprocess=True)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*mia-bench: the response cache folder cannot be made in pytest's cache directory (*); running without the cache*"])
    assert bench.report()["n_scored"] == 2


# -- 12. a timed-out sample's record ---------------------------------------------------------


def test_an_abandoned_sample_is_handed_over_only_once_its_task_has_ended(server: OpenAIServer, small_dataset: Path) -> None:
    """pytest-timeout gave up on a sample whose judge call hangs: the record
    the item gets (to write its reason in, and on an xdist worker to
    serialize) is one the loop thread no longer writes to."""
    from pytest_miabench.config.settings import Settings
    from pytest_miabench.data.dataset import load
    from pytest_miabench.protocols import builtin_protocols
    from pytest_miabench.run.engine import Engine

    server.script = lambda r: Reply(hang=True) if r.role == "judge" else Reply("An answer.")
    settings = Settings(
        enabled=True, model="vlm", judge_model="judge", base_url=server.url, judge_base_url=server.url, dataset=str(small_dataset), max_retries=0
    )
    source = load(str(small_dataset), "test")
    engine = Engine(settings, source, (builtin_protocols()["evalscope"](),), None)
    sample = source.samples[0]
    try:
        engine.submit(sample)
        deadline = time.monotonic() + 30
        while not server.by_role("judge") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.by_role("judge"), "the judge call never started"
        with pytest.raises(concurrent.futures.TimeoutError):
            engine.result(sample, timeout=0)
        record = engine.abandon(sample)
        assert record is not None
        handed_over = copy.deepcopy(record)
    finally:
        engine.close()  # ends the loop thread: whatever it would still write is written
    assert record == handed_over
    assert record["response"] == "An answer."
    assert record["seconds"] is not None  # the task's own cleanup ran before the hand-over
