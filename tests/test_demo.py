"""The first minute: ``--mia-demo`` (built-in demo set, built-in mock model and
judge), ``--mia-model mock`` on a real dataset, the default dataset id, and
the error when the hub cannot be reached.

"No network" is made real: every proxy variable points at a dead loopback
port (so any request that is not to 127.0.0.1 fails), no API key variable is
set (the project conftest removes them), and HF_HUB_OFFLINE is unset.
"""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import data
from support.server import OpenAIServer

from pytest_miabench.data import dataset as dataset_mod
from pytest_miabench.protocols import builtin_protocols

PROTOCOLS = sorted(builtin_protocols())


def _dead_port() -> int:
    """A loopback port nothing listens on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: every proxy is a dead port, and nothing exempts 127.0.0.1
    from it, so the built-in mock must not go through proxies at all."""
    dead = f"http://127.0.0.1:{_dead_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def _check_demo_outputs(path: Path, expected_protocol: str) -> dict[str, Any]:
    report = json.loads((path / "report.json").read_text(encoding="utf-8"))
    assert report["demo"] is True and report["mock_roles"] == ["model", "judge"]
    assert report["protocol"]["name"] == expected_protocol
    assert report["n_samples"] == 20 and report["n_failed"] == 0
    assert report["n_scored"] >= 15
    # Varying scores: the report has something to show.
    assert len({s["score"] for s in report["samples"]}) > 3
    assert report["model"]["base_url"] == report["judge"]["base_url"] == "built-in mock (127.0.0.1)"
    # Every format the real set has went through image preparation.
    assert {s["image"]["format"] for s in report["samples"]} == {"JPEG", "WEBP", "MPO"}
    html = (path / "demo.html").read_text(encoding="utf-8")
    assert 'id="demo-banner"' in html and "DEMO RUN" in html and "means nothing" in html
    # The samples' cases; a gate, when one is set, adds its own (mia-bench::gate).
    cases = [c for c in ET.parse(path / "junit.xml").getroot().findall(".//testcase") if c.get("name") != "gate"]
    assert len(cases) == 20
    return report


DEMO_ARGS = ("--mia-bench", "--mia-demo", "--mia-report=report.json", "--mia-html=demo.html", "--junitxml=junit.xml")


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_demo_runs_every_protocol_with_no_network_and_no_key(pytester: pytest.Pytester, protocol: str) -> None:
    result = pytester.runpytest(*DEMO_ARGS, f"--mia-protocol={protocol}")
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=20)
    result.stdout.fnmatch_lines(["mia-bench: DEMO:*", "DEMO RUN:*means nothing about any model.", "total_score: *"])
    _check_demo_outputs(pytester.path, protocol)


@pytest.mark.usefixtures("no_network")
def test_demo_under_xdist_and_its_gates(pytester: pytest.Pytester) -> None:
    # Each worker starts its own mock; a rerun is served from the cache
    # (keyed by the mock's name, not its per-process port).
    result = pytester.runpytest_subprocess(*DEMO_ARGS, "-n", "2")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    report = _check_demo_outputs(pytester.path, "evalscope")
    assert report["usage"]["model"]["api_calls"] == 20 and report["usage"]["judge"]["api_calls"] == 20
    again = pytester.runpytest_subprocess(*DEMO_ARGS, "-n", "2", "--mia-threshold=1.0")
    # A threshold no drawn score reaches fails the session, as on a real run.
    assert again.ret == pytest.ExitCode.TESTS_FAILED
    rerun = _check_demo_outputs(pytester.path, "evalscope")
    assert rerun["usage"]["model"]["cache_hits"] == 20 and rerun["usage"]["judge"]["cache_hits"] == 20
    assert rerun["total_score"] == report["total_score"] and rerun["passed"] is False


@pytest.fixture
def decoy() -> Iterator[OpenAIServer]:
    """A loopback endpoint the environment points at: a mock run must never call it."""
    with OpenAIServer(judge_model="judge") as srv:
        yield srv


@pytest.mark.usefixtures("no_network")
def test_mock_model_and_judge_on_a_hub_layout_dataset(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, small_dataset: Path, decoy: OpenAIServer
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", decoy.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-sent")
    result = pytester.runpytest(
        "--mia-bench", "--mia-model=mock", "--mia-judge-model=mock", f"--mia-dataset={small_dataset}", "--mia-report=report.json"
    )
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["mia-bench: model: built-in mock (127.0.0.1), no key*", "MOCK: the model and the judge are the built-in mock*"])
    report = json.loads((pytester.path / "report.json").read_text(encoding="utf-8"))
    assert report["n_scored"] == report["n_samples"] == 6
    assert report["demo"] is False and report["mock_roles"] == ["model", "judge"]
    assert report["dataset"]["source"] == str(small_dataset)
    assert decoy.requests == []  # every call went to the built-in mock on 127.0.0.1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mia-demo", "--mia-model=gpt-4o"], "*--mia-model on the command line: --mia-demo runs the built-in demo set*"),
        (["--mia-demo", "--mia-dataset=x.parquet"], "*--mia-dataset on the command line: --mia-demo runs*"),
        (["--mia-model=mock", "--mia-base-url=http://127.0.0.1:9/v1"], "*--mia-model mock is the built-in mock server*takes no endpoint*"),
    ],
)
def test_demo_and_mock_contradictions_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    result = pytester.runpytest("--mia-bench", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_demo_ignores_the_projects_real_run_settings_in_ini(pytester: pytest.Pytester) -> None:
    # A project configured for its real run can still try the demo.
    pytester.makeini("[pytest]\nmia_model = gpt-4o\nmia_dataset = /nowhere/data.parquet\n")
    result = pytester.runpytest("--mia-bench", "--mia-demo", "--mia-limit=3", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=3)


@pytest.mark.parametrize("given", [None, "lmms-lab/MIA-Bench"])
def test_default_dataset_is_the_new_home_and_the_old_id_names_it(pytester: pytest.Pytester, given: str | None) -> None:
    # HF_HUB_OFFLINE=1 (project conftest) and an empty cache: the error names what was loaded.
    extra = [f"--mia-dataset={given}"] if given else []
    result = pytester.runpytest("--mia-bench", "--mia-model=vlm", *extra)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cannot load the MIA-Bench dataset: lmms-lab-encoder/MIA-Bench: cannot load*"])


@pytest.fixture(params=["refused", "silent"])
def dead_hub(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A hub endpoint on loopback that refuses connections, or accepts them
    (the kernel completes the handshake) and never answers."""
    if request.param == "refused":
        yield f"http://127.0.0.1:{_dead_port()}", "Connection refused"
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", f"no answer within {dataset_mod.HUB_PROBE_TIMEOUT:g} s"


@pytest.mark.usefixtures("no_network")
def test_unreachable_hub_is_one_clear_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, dead_hub: tuple[str, str]) -> None:
    url, why = dead_hub
    monkeypatch.setenv("HF_ENDPOINT", url)
    # The hub itself is what fails here, not the (dead) proxy in front of it.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("HF_HOME", str(pytester.path / "hf"))
    result = pytester.runpytest_subprocess("--mia-bench", "--mia-model=vlm")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*lmms-lab-encoder/MIA-Bench: the Hugging Face Hub at {url} cannot be reached (*{why}*). Ways forward: pytest --mia-bench --mia-demo*--mia-dataset=PATH*HF_HUB_OFFLINE=1*"]
    )
    # One error, not the hub client's retry loop (1 + 2 + 4 + 8 + 8 s of back-off).
    assert "Retrying" not in result.stderr.str() + result.stdout.str()


def test_the_hub_probe_timeout_keeps_the_error_within_ten_seconds() -> None:
    # One probe request, bounded by this timeout, stands between the start
    # and the error (the datasets retry loop is never entered).
    assert dataset_mod.HUB_PROBE_TIMEOUT <= 10


def test_demo_set_ships_real_rows_with_their_licence(rows: list[dict[str, Any]]) -> None:
    from pytest_miabench.data import demo

    demo_rows = demo.rows()
    assert len(demo_rows) == 20
    for row in demo_rows:
        original = rows[row["release_row"]]
        assert {k: row[k] for k in data.TEXT_KEYS} == original
    assert {t for row in demo_rows for t in row["component_type"]} == {t for row in rows for t in row["component_type"]}
    assert {row["type"] for row in demo_rows} == {row["type"] for row in rows}
    assert "Copyright (C) 2024 Apple Inc." in demo.licence()
