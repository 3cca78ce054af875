"""Hardening II (issue 22), the transport: compressed replies under the reply
cap, redirects, proxies, a broken SSL_CERT_FILE, and URLs as they are shown."""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Callable

import pytest
from support.server import OpenAIServer, Reply, Request, encode

from conftest import Bench
from pytest_miabench.config.urls import authority, origin, strip_userinfo

VERDICT = "score of component 1: 4/4, score of component 2: 3/3, total score: 7/10."
MIB = 1024 * 1024


def _glob(text: str) -> str:
    """``text`` as an fnmatch pattern that matches it alone ("[" is special)."""
    return "".join(f"[{c}]" if c in "[]*?" else c for c in text)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _model_says(reply: Reply) -> Callable[[Request], Reply]:
    return lambda request: Reply(VERDICT) if request.role == "judge" else reply


# -- 1. compressed replies ---------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "deflate", "gzip, gzip", "deflate, gzip"])
def test_a_compressed_reply_over_the_cap_fails_its_sample_unretried_unstored(bench: Bench, coding: str) -> None:
    # 1 MiB of text, under 2000 bytes on the wire: only the decoded size is over the cap.
    reply = Reply("answer ", huge=MIB, content_encoding=coding)
    assert len(encode([b"x" * MIB], coding)) < 2000
    bench.server.script = _model_says(reply)
    args = ("--mia-limit=2", "--mia-max-reply-bytes=2000", "--mia-cache-dir=c", "--mia-model-revision=r1", "--mia-max-retries=3")
    result = bench.run(*args)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*model call to 127.0.0.1:* failed: reply body larger than 2000 bytes (--mia-max-reply-bytes); not read further, not stored*"])
    assert len(bench.server.by_role("model")) == 2 and bench.server.by_role("judge") == []  # not retried, not judged
    report = bench.report()
    assert [s["response"] for s in report["samples"]] == [None, None]
    assert report["usage"]["model"]["api_calls"] == 2
    # nothing stored: a second run asks again
    bench.server.script = _model_says(Reply("short now"))
    bench.run(*args).assert_outcomes(passed=2)
    assert len(bench.server.by_role("model")) == 4


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate", "gzip, deflate, gzip", "identity"])
def test_a_compressed_reply_under_the_cap_is_read_as_sent(bench: Bench, coding: str) -> None:
    text = "An answer that went through " + coding + " " + "la " * 200
    bench.server.script = _model_says(Reply(text, content_encoding=coding))
    bench.run("--mia-limit=2", "--mia-max-reply-bytes=4000", "-p", "no:cacheprovider").assert_outcomes(passed=2)
    assert [s["response"] for s in bench.report()["samples"]] == [text, text]


def test_a_raw_deflate_reply_is_read_as_httpx_reads_it(bench: Bench) -> None:
    # "deflate" is zlib-wrapped by the standard; some servers send it raw.
    import zlib

    def raw(request: Request) -> Reply:
        if request.role == "judge":
            return Reply(VERDICT)
        body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "raw deflate"}, "finish_reason": "stop"}]}).encode()
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        return Reply(raw_body=compressor.compress(body) + compressor.flush(), content_encoding="deflate", pre_encoded=True)

    bench.server.script = raw
    bench.run("--mia-limit=1", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert bench.report()["samples"][0]["response"] == "raw deflate"


def test_a_coding_not_asked_for_and_not_undone_is_refused_once(bench: Bench) -> None:
    bench.server.script = _model_says(Reply("answer", raw_body=b"\x8b\x00 not really brotli", content_encoding="br", pre_encoded=True))
    result = bench.run("--mia-limit=1", "-p", "no:cacheprovider", "--mia-max-retries=3")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*reply body in Content-Encoding br, which was not asked for (Accept-Encoding: identity); not read*"])
    assert len(bench.server.by_role("model")) == 1


BOMB = 64  # MiB of text behind a few KB of double gzip


def _bomb() -> bytes:
    head = b'{"id": "c", "object": "chat.completion", "created": 0, "model": "vlm", "choices": [{"index": 0, "message": {"role": "assistant", "content": "'
    tail = b'"}, "finish_reason": "stop"}]}'
    return encode(itertools.chain([head], itertools.repeat(b"x" * MIB, BOMB), [tail]), "gzip, gzip")


def test_a_double_gzip_bomb_is_never_decoded_whole(bench: Bench) -> None:
    """Peak memory of the run, as traced from its start (openai imported
    before): the 64 MiB are never held, the default 4 MiB cap stops them."""
    bomb = _bomb()
    assert len(bomb) < 100_000
    bench.server.script = _model_says(Reply(raw_body=bomb, content_encoding="gzip, gzip", pre_encoded=True))
    bench.pytester.makeconftest(
        """
        import json, tracemalloc
        import openai  # imported before tracing starts: its import is not the run's memory

        def pytest_sessionstart(session):
            tracemalloc.start()

        def pytest_sessionfinish(session):
            with open("peak.json", "w") as out:
                json.dump(tracemalloc.get_traced_memory()[1], out)
        """
    )
    result = bench.run("--mia-limit=1", "-p", "no:cacheprovider", subprocess=True)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*model call to * failed: reply body larger than 4194304 bytes (--mia-max-reply-bytes)*"])
    peak = json.loads((bench.pytester.path / "peak.json").read_text())
    assert peak < 24 * MIB, f"peak traced memory {peak / MIB:.0f} MiB"
    assert len(bench.server.by_role("model")) == 1


# -- 4. redirects ---------------------------------------------------------------------------


def test_a_redirect_to_another_origin_is_not_followed(bench: Bench) -> None:
    with OpenAIServer(judge_model="judge") as other:
        bench.server.script = _model_says(Reply("moved", status=307, headers={"Location": f"{other.url}/chat/completions"}))
        result = bench.run("--mia-limit=2", "--mia-max-retries=3", "--mia-no-cache")
        result.assert_outcomes(failed=2)
        here, there = origin(bench.server.url), other.url + "/chat/completions"
        result.stdout.fnmatch_lines(
            [f"*model call to * failed: the endpoint {here} redirects (HTTP 307) to another origin, {there}; requests go only to the configured endpoint, so it is not followed*"]
        )
        assert other.requests == []  # neither the prompt nor the image went there
    assert len(bench.server.by_role("model")) == 2  # once per sample: not retried
    assert bench.report()["usage"]["model"]["api_calls"] == 2


@pytest.mark.parametrize("extra", [[], ["-n", "2"]])
def test_a_redirect_loop_is_one_failure_and_every_request_is_counted(bench: Bench, extra: list[str]) -> None:
    bench.server.script = _model_says(Reply("again", status=308, headers={"Location": "/v1/chat/completions"}))
    result = bench.run("--mia-limit=2", "--mia-max-retries=3", "--mia-no-cache", *extra)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*failed: the endpoint redirects (HTTP 308) /v1/chat/completions to itself: a redirect loop; not retried*"])
    report = bench.report()
    assert report["usage"]["model"]["api_calls"] == len(bench.server.requests) == 2


def test_redirects_that_never_end_stop_the_run_like_a_dead_endpoint(bench: Bench) -> None:
    bench.server.script = _model_says(Reply("again", status=307, headers={"Location": "/v1/chat/completions"}))
    result = bench.run("--mia-concurrency=1", "--mia-no-cache")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*model endpoint 127.0.0.1:* (vlm) is unusable: a redirect loop on each of the first 3 attempts*"])
    assert bench.report()["usage"]["model"]["api_calls"] == len(bench.server.requests) == 3


def test_a_redirect_on_the_same_origin_is_not_followed_and_says_where(bench: Bench) -> None:
    bench.server.script = _model_says(Reply("moved", status=301, headers={"Location": "/api/v1/chat/completions"}))
    result = bench.run("--mia-limit=1", "--mia-no-cache")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [f"*the endpoint redirects (HTTP 301) /v1/chat/completions to {origin(bench.server.url)}/api/v1/chat/completions; redirects are not followed*"]
    )
    assert [r.path for r in bench.server.requests] == ["/v1/chat/completions"]


# -- 5. proxies ------------------------------------------------------------------------------

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_a_dead_proxy_is_named_not_the_endpoint(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_proxies(monkeypatch)
    port = _closed_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://carol:proxy-pw-93@127.0.0.1:{port}")
    result = bench.run("--mia-concurrency=1", "--mia-max-retries=0", "--mia-no-cache")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [f"*model endpoint 127.0.0.1:* (vlm) is unusable: connection refused by the proxy http://127.0.0.1:{port} (HTTP_PROXY) on each of the first 3 attempts*"]
    )
    samples = bench.report()["samples"]
    assert all(f"the proxy http://127.0.0.1:{port} (HTTP_PROXY)" in s["reason"] for s in samples if s["status"] == "failed")
    assert "proxy-pw-93" not in result.stdout.str() + result.stderr.str() + bench.report_path.read_text()
    assert bench.server.requests == []  # the endpoint is up, and was never reached


def test_a_retried_connection_failure_through_a_proxy_names_it(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_proxies(monkeypatch)
    port = _closed_port()
    monkeypatch.setenv("all_proxy", f"http://127.0.0.1:{port}")
    result = bench.run("--mia-limit=1", "--mia-max-retries=0", "--mia-no-cache")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*failed: connection to the proxy http://127.0.0.1:{port} (ALL_PROXY) failed (*); the endpoint was not reached*"])


def test_no_proxy_is_respected_and_nothing_is_blamed_on_a_proxy(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    bench.run("--mia-limit=2", "--mia-no-cache").assert_outcomes(passed=2)
    # and without a proxy, a refused connection is the endpoint's
    monkeypatch.delenv("HTTP_PROXY")
    port = _closed_port()
    result = bench.run("--mia-limit=1", "--mia-no-cache", "--mia-max-retries=0", f"--mia-base-url=http://127.0.0.1:{port}/v1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*model call to 127.0.0.1:{port} (vlm) failed: connection failed (ConnectionRefusedError*"])
    assert "the proxy" not in result.stdout.str()


# -- 11. SSL_CERT_FILE ----------------------------------------------------------------------


@pytest.mark.parametrize("content", [None, b"not a certificate"])
def test_a_bad_ssl_cert_file_is_a_usage_error_for_an_https_endpoint(bench: Bench, monkeypatch: pytest.MonkeyPatch, content: bytes | None) -> None:
    cert = bench.pytester.path / "ca.pem"
    if content is not None:
        cert.write_bytes(content)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    result = bench.run("--mia-limit=1", f"--mia-base-url=https://127.0.0.1:{_closed_port()}/v1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: SSL_CERT_FILE in the environment: cannot load CA certificates from '{cert}' (*); they are needed for the https endpoint https://127.0.0.1:*/v1: fix or unset SSL_CERT_FILE"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str() and "INTERNALERROR" not in result.stdout.str()
    assert bench.server.requests == []


def test_a_bad_ssl_cert_file_is_not_read_when_no_endpoint_uses_tls(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    (bench.pytester.path / "ca.pem").write_bytes(b"garbage")
    monkeypatch.setenv("SSL_CERT_FILE", str(bench.pytester.path / "ca.pem"))
    result = bench.run("--mia-limit=2", "--mia-no-cache")
    result.assert_outcomes(passed=2)
    assert "SSL_CERT_FILE" not in result.stdout.str() + result.stderr.str()


# -- 13. URLs as shown ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown", "host"),
    [
        ("http://u:p@[::1]:8000/v1", "http://[::1]:8000/v1", "[::1]:8000"),
        ("http://[::1]:8000/v1", "http://[::1]:8000/v1", "[::1]:8000"),
        ("https://alice:s3cret@api.example.com/v1?x=1#f", "https://api.example.com/v1?x=1#f", "api.example.com"),
        ("http://user@host:80/v1", "http://host:80/v1", "host:80"),
        ("http://a:b@c@host/v1", "http://host/v1", "host"),  # the last "@" ends the userinfo
        ("http://u:p@[::1/v1", "http://[::1/v1", "[::1"),  # malformed: still scrubbed, never raises
        ("u:p@host:8000/v1", "host:8000/v1", "host:8000/v1"),  # no scheme (refused, but quoted)
        ("http://localhost:8000/v1", "http://localhost:8000/v1", "localhost:8000"),
    ],
)
def test_one_scrubber_keeps_everything_but_the_userinfo(url: str, shown: str, host: str) -> None:
    assert strip_userinfo(url) == shown
    assert authority(url) == host
    assert "p@" not in origin(url) and "s3cret" not in origin(url)


def test_an_ipv6_endpoint_with_userinfo_is_shown_with_brackets_everywhere(bench: Bench) -> None:
    with OpenAIServer(judge_model="judge", host="::1") as six:
        url = six.url.replace("http://", "http://alice:pw-v6-0d1e@")
        result = bench.run("--mia-limit=2", "--mia-no-cache", f"--mia-base-url={url}", "--mia-html=r.html", "-rA")
        result.assert_outcomes(passed=2)
        assert len(six.by_role("model")) == 2
    result.stdout.fnmatch_lines([f"mia-bench: model: {_glob(six.url)}, *"])
    report = bench.report()
    assert report["model"]["base_url"] == six.url
    assert six.url in (bench.pytester.path / "r.html").read_text()
    outputs = result.stdout.str() + result.stderr.str() + bench.report_path.read_text() + (bench.pytester.path / "r.html").read_text()
    assert "pw-v6-0d1e" not in outputs and "alice" not in outputs
    # and an error names the host with its brackets
    result = bench.run("--mia-limit=1", "--mia-no-cache", "--mia-max-retries=0", f"--mia-base-url=http://alice:pw@[::1]:{_closed_port()}/v1")
    result.stdout.fnmatch_lines(["*model call to [[]::1[]]:* (vlm) failed: *"])
