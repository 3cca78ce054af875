"""A scriptable OpenAI-compatible chat-completions server on 127.0.0.1.

Tests and benchmarks talk to it over real HTTP with the real ``openai``
client.  Each test scripts it: per-request latency, HTTP errors (with
Retry-After), hangs, malformed bodies, and the reply text for the model and
for the judge.  Every request is logged (role, model, sample key, image
parts, auth header) so a test can check exactly what reached the server.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

_MODEL_RE = re.compile(rb'"model"\s*:\s*"([^"]*)"')
_AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a burst of 32 new connections
    # overflows it and the client waits out a 1 s SYN retry, which would be
    # charged to the tool under test.  Real servers (uvicorn, vLLM) use 2048.
    request_queue_size = 512


class _Server6(_Server):
    address_family = socket.AF_INET6


@dataclass
class Request:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    raw: bytes
    model: str
    role: str  # "judge" when the model name is the judge's, else "model"
    started: float
    _json: Any = None
    deployment: str | None = None  # Azure mode: the deployment the path names

    @property
    def json(self) -> Any:
        if self._json is None:
            self._json = json.loads(self.raw)
        return self._json

    @property
    def api(self) -> str:
        """"responses" for a Responses API call, else "chat"."""
        return "responses" if self.path.rstrip("/").endswith("/responses") else "chat"

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages, or the Responses API's input items."""
        return self.json["input" if self.api == "responses" else "messages"]

    @property
    def text(self) -> str:
        """All text parts of the last message, joined."""
        content = self.messages[-1]["content"]
        if isinstance(content, str):
            return content
        return "\n".join(part.get("text", "") for part in content if part.get("type") in ("text", "input_text"))

    @property
    def images(self) -> list[tuple[str, bytes, dict[str, Any]]]:
        """(mime, decoded bytes, image_url dict) of every image part; for a
        Responses API part, the dict is chat's form of it (url, detail)."""
        content = self.messages[-1]["content"]
        found = []
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "image_url":
                    image = part["image_url"]
                elif part.get("type") == "input_image":
                    image = {"url": part["image_url"], "detail": part.get("detail")}
                else:
                    continue
                head, _, data = image["url"].partition(",")
                mime = head.removeprefix("data:").removesuffix(";base64")
                found.append((mime, base64.b64decode(data), image))
        return found


@dataclass
class Reply:
    """What to answer.  ``status`` != 200 sends an OpenAI-style error body."""

    text: str | None = "ok"
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    finish_reason: str = "stop"
    raw_body: bytes | None = None  # sent verbatim (malformed replies)
    hang: bool = False  # never answer (until the server stops)
    usage: tuple[int, int] | None = None
    error: dict[str, Any] | None = None  # the "error" object of a non-200 reply
    message_extra: dict[str, Any] = field(default_factory=dict)  # e.g. reasoning_content
    reasoning_tokens: int | None = None  # usage.completion_tokens_details
    # A hostile server: append the credential of the request's Authorization
    # header (a bearer key, or a basic-auth password; Azure mode: its api-key
    # header) to the text, in base64 and hex, and send the header back as ``X-Echo``.
    echo_credentials: bool = False
    # A huge reply: the text padded with "x" to this many bytes, sent with a
    # Content-Length, or chunked without one (``chunked``).
    huge: int = 0
    chunked: bool = False
    # A Content-Encoding sent as is ("gzip", "deflate", "gzip, gzip"): the
    # body (``raw_body`` or the one built) is encoded with it unless
    # ``pre_encoded`` (a ``raw_body`` made with ``encode``, for bombs).
    content_encoding: str | None = None
    pre_encoded: bool = False
    # The Content-Type header: an HTML page or a proxy's text/plain notice.
    content_type: str = "application/json"
    # A Responses API reply: its ``status`` and ``incomplete_details.reason``
    # ("max_output_tokens"), and reasoning summary texts (a reasoning item).
    response_status: str = "completed"
    incomplete_reason: str | None = None
    reasoning_summary: tuple[str, ...] = ()


def encode(pieces: Iterable[bytes], content_encoding: str) -> bytes:
    """``pieces`` joined and encoded with each coding of a Content-Encoding
    value, in order, streamed: a 100 MB body need not be held to be encoded."""
    codings = [c.strip() for c in content_encoding.split(",") if c.strip() not in ("", "identity")]
    stream: Iterable[bytes] = pieces
    for coding in codings:
        stream = _compress(stream, coding)
    return b"".join(stream)


def _compress(pieces: Iterable[bytes], coding: str) -> Iterator[bytes]:
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}[coding]
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    for piece in pieces:
        yield compressor.compress(piece)
    yield compressor.flush()


Script = Callable[[Request], Reply]


def _echo_credentials(reply: Reply, authorization: str) -> Reply:
    scheme, _, token = authorization.partition(" ")
    secret = base64.b64decode(token).decode().partition(":")[2] if scheme.lower() == "basic" else token
    raw = secret.encode()
    echoed = f"b64={base64.b64encode(raw).decode()} hex={raw.hex()}"
    text = f"{reply.text or ''} {echoed}" if reply.status == 200 else None
    error = None if reply.status == 200 else {"message": f"{reply.text} {echoed}", "type": "test_error"}
    return dataclasses.replace(reply, text=text if reply.status == 200 else reply.text, error=error, headers={**reply.headers, "X-Echo": authorization})


def default_script(judge_model: str = "judge") -> Script:
    """Model: echoes the instruction.  Judge: a fixed full-marks verdict."""

    def script(request: Request) -> Reply:
        if request.role == "judge":
            return Reply("score of component 1: 4/4, score of component 2: 3/3, total score: 7/10.")
        return Reply(f"Answer to: {request.text[:80]}")

    return script


class OpenAIServer:
    """Start with ``with OpenAIServer(script) as server:``; ``server.url``
    is the base URL to give the client (``http://127.0.0.1:PORT/v1``)."""

    def __init__(
        self,
        script: Script | None = None,
        judge_model: str = "judge",
        latency: float = 0.0,
        keep_raw: bool = True,
        host: str = "127.0.0.1",
        azure: str | None = None,
        responses_only: bool = False,
    ) -> None:
        """``host``: "::1" listens on IPv6 loopback.  ``azure``: serve only as
        Azure OpenAI does, ``POST /openai/deployments/NAME/chat/completions
        ?api-version=...`` (404 otherwise), with an ``api-key`` header ("key")
        or an Entra ID ``Authorization: Bearer`` token ("entra"), else 401;
        the role is "judge" when the deployment is named ``judge_model``.
        A POST to a path ending in /responses gets a Responses API reply, any
        other one a chat completion; ``responses_only``: the server serves the
        Responses API alone (OpenAI's o1-pro, say), a chat path gets a 404."""
        self.azure = azure
        self.responses_only = responses_only
        self.script = script or default_script(judge_model)
        self.judge_model = judge_model
        self.latency = latency
        self.keep_raw = keep_raw
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self._busy_area = 0.0  # integral of in-flight over time
        self._last_change: float | None = None
        self.first_request_at: float | None = None
        self.last_reply_at: float | None = None
        self.broken_writes = 0  # replies the client hung up on before the end
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-server", daemon=True)

    @property
    def url(self) -> str:
        return f"{self.origin}/v1"

    @property
    def origin(self) -> str:
        """``http://HOST:PORT``, where an Azure mode's paths start."""
        host, port = self._server.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    # -- bookkeeping -------------------------------------------------------

    def _enter(self, now: float) -> None:
        with self._lock:
            self._account(now)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.first_request_at is None:
                self.first_request_at = now

    def _leave(self, now: float) -> None:
        with self._lock:
            self._account(now)
            self.in_flight -= 1
            self.last_reply_at = now

    def _account(self, now: float) -> None:
        if self._last_change is not None:
            self._busy_area += self.in_flight * (now - self._last_change)
        self._last_change = now

    def mean_in_flight(self) -> float:
        """Time-weighted mean of concurrent requests, first request to last reply."""
        if self.first_request_at is None or self.last_reply_at is None:
            return 0.0
        span = self.last_reply_at - self.first_request_at
        return self._busy_area / span if span > 0 else 0.0

    def by_role(self, role: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.role == role]

    # -- Azure mode --------------------------------------------------------

    def _azure_refusal(self, request: Request) -> Reply | None:
        """What Azure answers a request it does not serve (None: served);
        sets the request's deployment and role from its path."""
        parts = urlsplit(request.path)
        found = _AZURE_PATH.match(parts.path)
        if found is None:
            return Reply("Resource not found", status=404)
        request.deployment = found.group(1)
        request.role = "judge" if request.deployment == self.judge_model else "model"
        if not any(name == "api-version" and value for name, value in parse_qsl(parts.query)):
            return Reply("Resource not found", status=404)
        if self.azure == "entra":
            authorized = request.headers.get("authorization", "").startswith("Bearer ") and "api-key" not in request.headers
        else:
            authorized = bool(request.headers.get("api-key"))
        if not authorized:
            return Reply("Access denied due to invalid subscription key or wrong API endpoint.", status=401)
        return None

    # -- HTTP --------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The reply goes out as two writes (headers, then body).  With
            # Nagle on, the body waits for the client's delayed ACK of the
            # headers: ~40 ms on every keep-alive round trip, charged to the
            # client under test.  Real servers (uvicorn, vLLM) set TCP_NODELAY.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep test output clean

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if len(raw) < length:
                    return  # the client hung up mid-request (a cancelled call): not a request
                now = time.perf_counter()
                found = _MODEL_RE.search(raw)
                model = found.group(1).decode() if found else ""
                request = Request(
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    raw=raw if server.keep_raw else b"",
                    model=model,
                    role="judge" if model == server.judge_model else "model",
                    started=now,
                )
                refusal = server._azure_refusal(request) if server.azure else None
                if not server.keep_raw:
                    request._json = json.loads(raw) if request.role == "judge" else {"input" if request.api == "responses" else "messages": [{"content": ""}]}
                with server._lock:
                    server.requests.append(request)
                server._enter(now)
                left = False

                def leave() -> None:
                    nonlocal left
                    if not left:
                        left = True
                        server._leave(time.perf_counter())

                try:
                    self._answer(request, leave, refusal)
                finally:
                    leave()

            def _answer(self, request: Request, leave: Callable[[], None], refusal: Reply | None = None) -> None:
                if refusal is None and server.responses_only and request.api != "responses":
                    refusal = Reply(f"{request.path} is not served here: only the Responses API (/v1/responses)", status=404)
                try:
                    reply = refusal or server.script(request)
                except Exception as exc:  # a broken script shows up as a 500
                    reply = Reply(text=f"script error: {exc!r}", status=500)
                if reply.huge:
                    reply = dataclasses.replace(reply, text=(reply.text or "") + "x" * reply.huge)
                if reply.echo_credentials:
                    # Azure's key comes in its own header, echoed as if it were a scheme's credential.
                    key = request.headers.get("api-key") if server.azure else None
                    reply = _echo_credentials(reply, f"ApiKey {key}" if key else request.headers.get("authorization", ""))
                delay = reply.delay + server.latency
                if reply.hang:
                    server._stop.wait()
                    return
                if delay:
                    time.sleep(delay)
                if reply.raw_body is not None:
                    body = reply.raw_body
                elif reply.status != 200:
                    error = reply.error or {"message": reply.text or "error", "type": "test_error", "code": reply.status}
                    body = json.dumps({"error": error}).encode()
                elif request.api == "responses":
                    body = json.dumps(_response_object(request, reply, len(server.requests))).encode()
                else:
                    prompt_tokens, completion_tokens = reply.usage or (len(request.raw) // 100, len(reply.text or "") // 4)
                    usage: dict[str, Any] = {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    }
                    if reply.reasoning_tokens is not None:
                        usage["completion_tokens_details"] = {"reasoning_tokens": reply.reasoning_tokens}
                    body = json.dumps(
                        {
                            "id": f"chatcmpl-{len(server.requests)}",
                            "object": "chat.completion",
                            "created": int(time.time()),
                            "model": request.model,
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": reply.text, **reply.message_extra},
                                    "finish_reason": reply.finish_reason,
                                }
                            ],
                            "usage": usage,
                        }
                    ).encode()
                if reply.content_encoding and not reply.pre_encoded:
                    body = encode([body], reply.content_encoding)
                # Out of flight once the answer is ready: the client may send
                # its next request the moment the reply arrives, possibly
                # before this thread runs again, and must not be counted twice.
                leave()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    if reply.chunked:
                        self.send_header("Transfer-Encoding", "chunked")
                    else:
                        self.send_header("Content-Length", str(len(body)))
                    if reply.content_encoding:
                        self.send_header("Content-Encoding", reply.content_encoding)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    if reply.chunked:
                        step = 1 << 16
                        for start in range(0, len(body), step):
                            chunk = body[start : start + step]
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.write(b"0\r\n\r\n")
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    # the client gave up (a timeout, a reply over its size cap)
                    with server._lock:
                        server.broken_writes += 1

        return Handler


def _response_object(request: Request, reply: Reply, number: int) -> dict[str, Any]:
    """A Responses API reply in OpenAI's shape: a message item with one
    output_text part (none when the text is None), after a reasoning item
    when the reply has a summary."""
    input_tokens, output_tokens = reply.usage or (len(request.raw) // 100, len(reply.text or "") // 4)
    output: list[dict[str, Any]] = []
    if reply.reasoning_summary:
        summary = [{"type": "summary_text", "text": text} for text in reply.reasoning_summary]
        output.append({"type": "reasoning", "id": f"rs-{number}", "summary": summary})
    if reply.text is not None:
        content = [{"type": "output_text", "text": reply.text, "annotations": []}]
        output.append({"type": "message", "id": f"msg-{number}", "role": "assistant", "status": "completed", "content": content})
    return {
        "id": f"resp-{number}",
        "object": "response",
        "created_at": int(time.time()),
        "model": request.model,
        "status": reply.response_status,
        "incomplete_details": {"reason": reply.incomplete_reason} if reply.incomplete_reason else None,
        "error": None,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens or 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }
