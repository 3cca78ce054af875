"""What one attempt met, as the call policy knows it (``classify``): an
exception of the openai SDK (or of this package's reply checks) becomes a
small typed ``policy.Outcome``, with the words its messages use and the
breaker's cause.  Only those types are classified: a bug in this package is
never retried as a server fault."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..config.options import AZURE_TOKEN_ENV
from .endpoint import Endpoint, api_path
from .policy import ConnectionFailed, Malformed, Outcome, RateLimited, Refused, StatusError, TimedOut
from .ratelimit import server_ask
from .replies import MalformedReply
from .scrub import short
from .transport import RefusedReply

if TYPE_CHECKING:
    import openai


def classify(exc: Exception, *, endpoint: Endpoint, api: str, proxy: str | None, timeout: float, host_answered: bool, now: float) -> Outcome | None:
    """``exc``, raised by one attempt, as an outcome; None when it is not a
    server's doing (re-raised as it is).  ``proxy``: the one the calls go
    through; ``host_answered``: whether the host has accepted a request
    (then it is an API, and its 400s are about the requests); ``now``: the
    wall clock, for a Retry-After given as a date."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return _status(exc, endpoint, api=api, host_answered=host_answered, now=now)
    if isinstance(exc, (openai.APITimeoutError, asyncio.TimeoutError)):
        return TimedOut(timeout)
    if isinstance(exc, (openai.APIConnectionError, RefusedReply)):
        if (refused := _cause_of_type(exc, RefusedReply)) is not None:
            assert isinstance(refused, RefusedReply)
            return Refused(str(refused), refused.systematic)  # None: the endpoint answers, not a dead host
        cause = _root_cause(exc)
        return ConnectionFailed(_connection_failure(cause, proxy), _systematic_connection_error(cause, proxy))
    if isinstance(exc, MalformedReply):
        return Malformed(str(exc), exc.systematic)
    return None


def _status(exc: openai.APIStatusError, endpoint: Endpoint, *, api: str, host_answered: bool, now: float) -> Outcome:
    """An HTTP error status: its words, the wait it asks for, what a 400
    refuses, and the breaker's cause should it not be retried."""
    detail = _status_detail(exc, endpoint)
    if exc.status_code == 429:
        return RateLimited(detail, server_ask(exc.response.headers, now, status=429))
    param, text = _error_param(exc)
    cause, note = _systematic_status(exc, endpoint, host_answered=host_answered, api=api)
    return StatusError(exc.status_code, detail, server_ask(exc.response.headers, now), param, text, cause, note)


def _error_param(exc: openai.APIStatusError) -> tuple[str | None, str]:
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body)
    if not isinstance(inner, dict):
        return None, str(inner)
    param = inner.get("param")
    return (param if isinstance(param, str) else None), str(inner.get("message") or "")


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost cause of a wrapped error (openai -> httpx -> httpcore -> OSError)."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc


def _cause_of_type(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of ``kind`` in ``exc``'s chain of causes, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _systematic_connection_error(cause: BaseException, proxy: str | None = None) -> str | None:
    if isinstance(cause, ConnectionRefusedError):
        return f"connection refused by the proxy {proxy}" if proxy else "connection refused"
    if isinstance(cause, socket.gaierror):
        return f"host name of the proxy {proxy} not found (DNS)" if proxy else "host name not found (DNS)"
    return None


def _connection_failure(cause: BaseException, proxy: str | None) -> str:
    """A failed connection in words; through a proxy, it is the proxy's
    (the proxy answers an unreachable endpoint with an HTTP error)."""
    what = f"{type(cause).__name__}: {short(str(cause))}"
    return f"connection to the proxy {proxy} failed ({what}); the endpoint was not reached" if proxy else f"connection failed ({what})"


def _error_message(exc: openai.APIStatusError) -> str:
    """What an error reply says: its JSON error message, else its text."""
    body = exc.body
    message = ""
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = str(inner.get("message", "")) if isinstance(inner, dict) else str(inner)
    elif body is not None:
        message = str(body)
    if not message:
        try:  # a plain-text or HTML error page: its own words beat "Error code: 400"
            message = exc.response.text
        except Exception:  # a streamed or closed body has no text to give
            message = ""
    return message


def _status_detail(exc: openai.APIStatusError, endpoint: Endpoint) -> str:
    status = exc.status_code
    message = _error_message(exc)
    detail = f"HTTP {status}"
    if message:
        detail += f": {short(message)}"
    if status == 404 and (hint := _v1_hint(endpoint)):
        detail += f" ({hint})"
    if status in (400, 401, 403) and endpoint.key_withheld():
        flag = "--mia-judge-api-key-env" if endpoint.role == "judge" else "--mia-api-key-env"
        detail += f" (no key sent: ${endpoint.api_key_env} goes only to api.openai.com unless you name it with {flag})"
    elif status in (401, 403) and endpoint.uses_token():
        source = f"${AZURE_TOKEN_ENV}" if endpoint.ad_token() is not None else "azure-identity"
        detail += (
            f" (a Microsoft Entra ID token from {source} was sent instead of a key: it may have expired, "
            "or the identity lacks an Azure OpenAI role such as Cognitive Services OpenAI User)"
        )
    elif status in (401, 403) and endpoint.key() is None:
        detail += f" (no key: ${endpoint.api_key_env} is not set)"
    return detail


def _systematic_status(exc: openai.APIStatusError, endpoint: Endpoint, *, host_answered: bool, api: str = "chat") -> tuple[str | None, str]:
    """The breaker's cause for a status that is not retried (and a note for
    its message): 401, 403 and 404 always fail alike; another 4xx does when
    its body repeats (a proxy's "No connected db"), so the body is part of
    the cause, unless the host has answered a chat completion (then it is
    an API, and its 400s are about the requests).  None: a status that says
    nothing of the endpoint."""
    status, path = exc.status_code, api_path(endpoint, api)
    if status in (401, 403):
        return f"HTTP {status}", ""
    if status == 404:
        hint = _v1_hint(endpoint)
        return "HTTP 404", f" (POST {path}{'; ' + hint if hint else ''})"
    if 400 <= status < 500 and not host_answered:
        body = short(_error_message(exc), 80)
        return f'HTTP {status} "{body}" from POST {path}', ""
    return None, ""



def _v1_hint(endpoint: Endpoint) -> str:
    """For a 404: OpenAI-compatible servers (Ollama, vLLM) serve under
    /v1, and a base URL without it is the usual mistake; an Azure
    deployment's 404 is a deployment name or api-version Azure does not know."""
    if endpoint.deployment is not None:
        return f"check the Azure deployment name {endpoint.deployment!r} and api-version {endpoint.azure_api_version()!r}"
    url = endpoint.client_url.rstrip("/")
    if urlsplit(url).path.endswith("/v1"):
        return ""
    return f"the base URL does not end in /v1: try {url}/v1"
