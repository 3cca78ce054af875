"""Azure OpenAI: deployments called the Azure way (deployment in the path,
api-version in the query, the key in ``api-key``, an Entra ID token as a
Bearer token), the OpenAI-compatible ``/openai/v1`` route with the plain
client, and a query in any base URL sent as given, its secrets never shown."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from support.scripted import per_sample
from support.server import OpenAIServer, Reply, Request

from conftest import SMALL_ROWS, Bench

AZURE_KEY = "azure-canary-key-0123456789abcdef"
OPENAI_KEY = "sk-openai-canary-0123456789abcdef"
AD_TOKEN = "eyJ0eXAiOiJKV1Qi.entra-canary-token.0123456789"
VERSION = "2024-10-21"
# What the judge gives each sample of the small dataset, out of 10.
SCORES = [9, 5, 3, 7, 6, 10]
EXPECTED_TOTAL = sum(SCORES) / 10 / len(SCORES)


@pytest.fixture
def azure_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Azure key and an OpenAI key in the environment; no other Azure setting."""
    for name in ("AZURE_OPENAI_AD_TOKEN", "OPENAI_API_VERSION", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)


@pytest.fixture
def azure_server() -> Iterator[OpenAIServer]:
    with OpenAIServer(judge_model="judge", azure="key") as server:
        yield server


def deployment_url(server: OpenAIServer, name: str, portal: bool = True) -> str:
    """As the Azure portal shows it, or the short form without operation and api-version."""
    base = f"{server.origin}/openai/deployments/{name}"
    return f"{base}/chat/completions?api-version={VERSION}" if portal else base


def scored_run(bench: Bench, rows: list[dict[str, Any]], *extra: str, echo: bool = False) -> pytest.RunResult:
    """A run whose judge gives the scores of SCORES; with ``echo``, the model
    echoes the credential it was sent (encoded) in every answer."""
    per_sample(bench, rows, SMALL_ROWS, SCORES)
    if echo:
        inner = bench.server.script

        def echoing(request: Request) -> Reply:
            reply = inner(request)
            return dataclasses.replace(reply, echo_credentials=True) if request.role == "model" else reply

        bench.server.script = echoing
    return bench.run(*extra)


def everything_written(bench: Bench, result: pytest.RunResult) -> str:
    return result.stdout.str() + result.stderr.str() + bench.report_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("xdist", [False, True], ids=["single", "xdist"])
def test_a_whole_run_against_azure_deployments_as_model_and_judge(
    pytester: pytest.Pytester, azure_server: OpenAIServer, small_dataset: Path, rows: list[dict[str, Any]], azure_env: None, xdist: bool
) -> None:
    bench = Bench(pytester, azure_server, small_dataset)
    result = scored_run(
        bench,
        rows,
        # The model as the portal shows it; the judge in the short form, its api-version given apart.
        f"--mia-base-url={deployment_url(azure_server, 'vlm-deploy')}",
        f"--mia-judge-base-url={deployment_url(azure_server, 'judge', portal=False)}",
        f"--mia-judge-api-version={VERSION}",
        *(["-n", "2"] if xdist else []),
        echo=True,
    )
    result.assert_outcomes(passed=6)
    report = bench.report()
    assert report["total_score"] == pytest.approx(EXPECTED_TOTAL, abs=1e-12)
    assert [s["score"] for s in report["samples"]] == pytest.approx([score / 10 for score in SCORES])
    # Every request was one Azure serves (no 401 or 404 on the way): one per sample and role.
    requests = azure_server.requests
    assert len(azure_server.by_role("model")) == len(azure_server.by_role("judge")) == 6 and len(requests) == 12
    for request in requests:
        path, query = request.path.split("?")
        assert path == f"/openai/deployments/{request.deployment}/chat/completions"
        assert parse_qsl(query) == [("api-version", VERSION)]
        # The key goes in api-key, never as a Bearer token (nor the OpenAI key anywhere).
        assert request.headers["api-key"] == AZURE_KEY
        assert AZURE_KEY not in request.headers.get("authorization", "") and OPENAI_KEY not in json.dumps(request.headers)
    assert {r.deployment for r in azure_server.by_role("model")} == {"vlm-deploy"}
    assert report["model"]["api_key_env"] == report["judge"]["api_key_env"] == "AZURE_OPENAI_API_KEY"
    assert report["model"]["base_url"] == deployment_url(azure_server, "vlm-deploy")
    result.stdout.fnmatch_lines(
        [
            f"mia-bench: model: {deployment_url(azure_server, 'vlm-deploy')} (Azure OpenAI deployment vlm-deploy, api-version {VERSION}), "
            "key from $AZURE_OPENAI_API_KEY (api-key header)",
            f"mia-bench: judge: *(Azure OpenAI deployment judge, api-version {VERSION}), key from $AZURE_OPENAI_API_KEY (api-key header)",
        ]
    )
    # The model echoed the key in every answer: scrubbed before anything was written.
    assert all("b64=*** hex=***" in s["response"] for s in report["samples"])
    assert AZURE_KEY not in everything_written(bench, result)


def test_an_entra_id_token_is_sent_as_a_bearer_token_instead_of_the_key(
    pytester: pytest.Pytester, small_dataset: Path, rows: list[dict[str, Any]], azure_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_VERSION", VERSION)
    monkeypatch.setenv("AZURE_OPENAI_AD_TOKEN", AD_TOKEN)
    with OpenAIServer(judge_model="judge", azure="entra") as server:
        bench = Bench(pytester, server, small_dataset)
        result = scored_run(
            bench,
            rows,
            f"--mia-base-url={deployment_url(server, 'vlm-deploy', portal=False)}",
            f"--mia-judge-base-url={deployment_url(server, 'judge', portal=False)}",
            echo=True,
        )
        result.assert_outcomes(passed=6)
        assert len(server.requests) == 12
        for request in server.requests:
            assert request.headers["authorization"] == f"Bearer {AD_TOKEN}" and "api-key" not in request.headers
            assert parse_qsl(urlsplit(request.path).query) == [("api-version", VERSION)]
    assert bench.report()["total_score"] == pytest.approx(EXPECTED_TOTAL, abs=1e-12)
    result.stdout.fnmatch_lines(["mia-bench: model: *Microsoft Entra ID token from $AZURE_OPENAI_AD_TOKEN (Authorization: Bearer)"])
    assert all("b64=*** hex=***" in s["response"] for s in bench.report()["samples"])
    assert AD_TOKEN not in everything_written(bench, result)


def test_azure_without_a_key_token_or_azure_identity_is_refused_before_any_call(
    pytester: pytest.Pytester, azure_server: OpenAIServer, small_dataset: Path, azure_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        installed = importlib.util.find_spec("azure.identity") is not None
    except ImportError:
        installed = False
    if installed:
        pytest.skip("azure-identity is installed: it would supply the token")
    monkeypatch.delenv("AZURE_OPENAI_API_KEY")
    bench = Bench(pytester, azure_server, small_dataset)
    result = bench.run(f"--mia-base-url={deployment_url(azure_server, 'vlm-deploy')}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*model's Azure OpenAI deployment needs a credential: set $AZURE_OPENAI_API_KEY*$AZURE_OPENAI_AD_TOKEN*azure-identity*"])
    assert azure_server.requests == []


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "*model's Azure OpenAI URL http://*/openai/deployments/vlm-deploy has no api-version: add ?api-version=*--mia-api-version*"),
        (["--mia-api-version=2025-01-01"], None),  # the short form, versioned by the option: accepted
        (["--mia-api-version=2099-01-01", "PORTAL"], "*--mia-api-version on the command line: api-version '2099-01-01' contradicts*"),
    ],
    ids=["none", "option", "contradiction"],
)
def test_the_api_version_comes_from_the_url_or_the_option(
    pytester: pytest.Pytester, azure_server: OpenAIServer, small_dataset: Path, azure_env: None, extra: list[str], message: str | None
) -> None:
    portal = "PORTAL" in extra
    bench = Bench(pytester, azure_server, small_dataset)
    args = [arg for arg in extra if arg != "PORTAL"]
    judge = f"--mia-judge-base-url={deployment_url(azure_server, 'judge')}"
    result = bench.run(f"--mia-base-url={deployment_url(azure_server, 'vlm-deploy', portal=portal)}", judge, "--mia-limit=1", *args)
    if message is None:
        result.assert_outcomes(passed=1)
        assert {urlsplit(r.path).query for r in azure_server.by_role("model")} == {"api-version=2025-01-01"}
        return
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert azure_server.requests == []


def test_azure_deployments_are_told_apart_in_the_cache(
    pytester: pytest.Pytester, azure_server: OpenAIServer, small_dataset: Path, rows: list[dict[str, Any]], azure_env: None
) -> None:
    bench = Bench(pytester, azure_server, small_dataset)
    judge = f"--mia-judge-base-url={deployment_url(azure_server, 'judge')}"
    judge = (judge, "--mia-model-revision=r1")
    scored_run(bench, rows, f"--mia-base-url={deployment_url(azure_server, 'vlm-a')}", *judge).assert_outcomes(passed=6)
    scored_run(bench, rows, f"--mia-base-url={deployment_url(azure_server, 'vlm-b')}", *judge).assert_outcomes(passed=6)
    # Another deployment is another model: asked again, not answered from the cache.
    assert [r.deployment for r in azure_server.by_role("model")] == ["vlm-a"] * 6 + ["vlm-b"] * 6
    # The short form of the same deployment and api-version is the same endpoint.
    short = f"--mia-base-url={deployment_url(azure_server, 'vlm-a', portal=False)}"
    scored_run(bench, rows, short, f"--mia-api-version={VERSION}", *judge).assert_outcomes(passed=6)
    assert len(azure_server.by_role("model")) == 12
    # ... and another api-version is another endpoint.
    scored_run(bench, rows, short, "--mia-api-version=2025-01-01", *judge).assert_outcomes(passed=6)
    assert len(azure_server.by_role("model")) == 18


def test_the_azure_v1_route_works_with_the_plain_client(
    pytester: pytest.Pytester, server: OpenAIServer, small_dataset: Path, rows: list[dict[str, Any]], azure_env: None
) -> None:
    bench = Bench(pytester, server, small_dataset)
    url = f"{server.origin}/openai/v1"
    result = scored_run(bench, rows, f"--mia-base-url={url}", f"--mia-judge-base-url={url}")
    result.assert_outcomes(passed=6)
    assert bench.report()["total_score"] == pytest.approx(EXPECTED_TOTAL, abs=1e-12)
    assert len(server.requests) == 12
    for request in server.requests:
        # OpenAI's own wire format: the Azure key (not the OpenAI one) as a Bearer token, no api-version.
        assert request.path == "/openai/v1/chat/completions"
        assert request.headers["authorization"] == f"Bearer {AZURE_KEY}"
    result.stdout.fnmatch_lines([f"mia-bench: model: {url} (Azure OpenAI v1 route, OpenAI-compatible), key from $AZURE_OPENAI_API_KEY"])


def test_a_query_in_a_base_url_is_sent_with_every_call(bench: Bench, rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    url = f"{bench.server.url}?tenant=a%20b&region=eu"
    scored_run(bench, rows, f"--mia-base-url={url}", f"--mia-judge-base-url={url}").assert_outcomes(passed=6)
    assert len(bench.server.requests) == 12
    for request in bench.server.requests:
        path, _, query = request.path.partition("?")
        assert path == "/v1/chat/completions" and parse_qsl(query) == [("tenant", "a b"), ("region", "eu")]
    assert bench.report()["total_score"] == pytest.approx(EXPECTED_TOTAL, abs=1e-12)


@pytest.mark.parametrize(
    "suffix, message",
    [
        ("?region=eu&region=us", "*repeats the query parameter 'region', which cannot be sent as given*"),
        ("#part", "*has a fragment (#...), which no server sees*"),
    ],
    ids=["repeated", "fragment"],
)
def test_a_query_that_cannot_be_sent_as_given_is_refused(bench: Bench, suffix: str, message: str) -> None:
    result = bench.run(f"--mia-base-url={bench.server.url}{suffix}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --mia-base-url on the command line: {message}"])
    assert bench.server.requests == []


def test_a_secret_in_a_query_is_sent_but_never_shown(bench: Bench, rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "query-canary-secret-0123456789"
    url = f"{bench.server.url}?api-key={secret}&region=eu"
    result = scored_run(bench, rows, f"--mia-base-url={url}", "--junitxml=junit.xml")
    result.assert_outcomes(passed=6)
    assert {parse_qsl(urlsplit(r.path).query)[0] for r in bench.server.by_role("model")} == {("api-key", secret)}
    shown = f"{bench.server.url}?api-key=***&region=eu"
    assert bench.report()["model"]["base_url"] == shown
    result.stdout.fnmatch_lines([f"mia-bench: model: {shown}, *"])
    written = everything_written(bench, result) + (bench.pytester.path / "junit.xml").read_text(encoding="utf-8")
    assert secret not in written


def test_the_api_versions_have_ini_twins(
    pytester: pytest.Pytester, azure_server: OpenAIServer, small_dataset: Path, azure_env: None
) -> None:
    pytester.makeini("[pytest]\nmia_api_version = 2025-01-01\nmia_judge_api_version = 2024-06-01\n")
    bench = Bench(pytester, azure_server, small_dataset)
    result = bench.run(
        f"--mia-base-url={deployment_url(azure_server, 'vlm-deploy', portal=False)}",
        f"--mia-judge-base-url={deployment_url(azure_server, 'judge', portal=False)}",
        "--mia-limit=1",
    )
    result.assert_outcomes(passed=1)
    assert [urlsplit(r.path).query for r in azure_server.by_role("model")] == ["api-version=2025-01-01"]
    assert [urlsplit(r.path).query for r in azure_server.by_role("judge")] == ["api-version=2024-06-01"]


def test_a_refused_entra_id_token_says_what_was_sent(
    pytester: pytest.Pytester, azure_server: OpenAIServer, small_dataset: Path, azure_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment that wants its key, sent a token (which wins over the key): a 401 names the token."""
    monkeypatch.setenv("AZURE_OPENAI_AD_TOKEN", AD_TOKEN)
    bench = Bench(pytester, azure_server, small_dataset)
    result = bench.run(
        f"--mia-base-url={deployment_url(azure_server, 'vlm-deploy')}", f"--mia-judge-base-url={deployment_url(azure_server, 'judge')}", "--mia-concurrency=1"
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*HTTP 401: Access denied* (a Microsoft Entra ID token from $AZURE_OPENAI_AD_TOKEN was sent instead of a key: it may have expired*"])
    assert len(azure_server.requests) == 3
    assert all(r.headers["authorization"] == f"Bearer {AD_TOKEN}" and "api-key" not in r.headers for r in azure_server.requests)
    assert AD_TOKEN not in everything_written(bench, result)


@pytest.mark.parametrize("role", ["model", "judge"])
def test_the_responses_api_on_a_deployment_url_points_to_the_v1_route(
    pytester: pytest.Pytester, azure_server: OpenAIServer, small_dataset: Path, azure_env: None, role: str
) -> None:
    # The SDK would post to .../deployments/NAME/responses, which Azure does not serve.
    bench = Bench(pytester, azure_server, small_dataset)
    flag = "--mia-judge-base-url" if role == "judge" else "--mia-base-url"
    api = "--mia-judge-api=responses" if role == "judge" else "--mia-api=responses"
    result = bench.run(f"{flag}={deployment_url(azure_server, 'judge' if role == 'judge' else 'vlm-deploy', portal=True)}", api)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{role}'s endpoint http://*/openai/deployments/* is an Azure OpenAI deployment URL*on its /openai/v1 route only: give {flag} http://*/openai/v1 *"])
    assert azure_server.requests == []
