"""Calls to OpenAI-compatible endpoints: retries, timeouts, clear errors.

The openai client's own retry loop is switched off (``max_retries=0``) so
that every attempt is counted and reported, and the policy is ours: retry
429, 408/409, 5xx, timeouts and dropped connections with exponential backoff
and full jitter, honouring Retry-After; fail at once on any other status.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .images import PreparedImage

DEFAULT_BASE_URL = "https://api.openai.com/v1"
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 120.0
# A local server (vLLM, Ollama) needs no key, but the openai client refuses
# to start without one; this placeholder is what vLLM's docs use.
NO_KEY = "EMPTY"
_TRANSIENT_STATUS = {408, 409, 429}


@dataclass(frozen=True)
class Endpoint:
    """Where a role's calls go.  Holds the *name* of the key variable only."""

    role: str  # "model" or "judge"
    model: str
    base_url: str | None
    api_key_env: str
    # Whether the user named the key variable.  The default variable
    # (OPENAI_API_KEY) holds an OpenAI key: it is not sent to another host
    # given with --mia-base-url (a local vLLM or Ollama server, say) unless
    # the user asks for it, so a key is never handed to a host by accident.
    key_env_explicit: bool = True

    @property
    def url(self) -> str:
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL

    @property
    def host(self) -> str:
        parts = urlsplit(self.url)
        # hostname/port only: never echo userinfo a user may have put in a URL
        host = parts.hostname or self.url
        return f"{host}:{parts.port}" if parts.port else host

    def key(self) -> str | None:
        if self.key_withheld():
            return None
        return self.env_key()

    def env_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None

    def key_withheld(self) -> bool:
        """True when the default key exists but this host must not get it."""
        if self.key_env_explicit or self.base_url is None or self.env_key() is None:
            return False
        host = (urlsplit(self.base_url).hostname or "").lower()
        return not (host == "api.openai.com" or host.endswith(".openai.com"))


class CallError(Exception):
    """A call that did not produce a reply, after any retries."""

    def __init__(self, endpoint: Endpoint, detail: str, attempts: int) -> None:
        # Error bodies may echo the Authorization header back at us.
        detail = scrub(detail, [endpoint.env_key() or ""])
        self.endpoint = endpoint
        self.detail = detail
        self.attempts = attempts
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{endpoint.role} call to {endpoint.host} ({endpoint.model}) failed{tries}: {detail}")


@dataclass
class Completion:
    """The parts of a chat completion the benchmark keeps."""

    text: str | None
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Completion:
        return cls(data.get("text"), data.get("finish_reason"), int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))


@dataclass
class CallStats:
    """Per-call bookkeeping that ends up in the report."""

    attempts: int = 0
    retried_errors: list[str] = field(default_factory=list)


def scrub(text: str, secrets: list[str]) -> str:
    """Remove key values from text that may echo them (error bodies)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class Caller:
    """One role's client; used from the engine's event loop only."""

    def __init__(self, endpoint: Endpoint, timeout: float, max_retries: int, http_client: Any = None) -> None:
        import openai

        self.endpoint = endpoint
        self.max_retries = max_retries
        self._openai = openai
        self._client = openai.AsyncOpenAI(
            api_key=endpoint.key() or NO_KEY,
            base_url=endpoint.url,
            timeout=timeout,
            max_retries=0,
            http_client=http_client,
        )

    async def close(self) -> None:
        await self._client.close()

    async def complete(self, body: bytes, stats: CallStats) -> Completion:
        """One chat completion (``body``: see ``encode_body``), retried on
        transient failures."""
        openai = self._openai
        attempt = 0
        while True:
            attempt += 1
            stats.attempts += 1
            try:
                # The client's generic POST (the SDK's documented way to reach
                # any endpoint) sends the body as given: chat.completions.create
                # would first walk every message part against its TypedDicts
                # (~0.5 ms a request, on the thread that drives all requests)
                # and build pydantic objects from the reply.  The reply is
                # checked by _completion.
                reply = await self._client.post("/chat/completions", cast_to=dict, content=body)
                completion = _completion(reply)
                if completion.text:
                    # A server that echoes the key must not get it into reports or the cache.
                    completion.text = scrub(completion.text, [self.endpoint.env_key() or ""])
                return completion
            except openai.APIStatusError as exc:
                status = exc.status_code
                detail = _status_detail(exc, self.endpoint)
                if status not in _TRANSIENT_STATUS and status < 500:
                    raise CallError(self.endpoint, detail, attempt) from None
                delay = _retry_after(exc.response.headers)
            except openai.APITimeoutError:
                detail, delay = "request timed out", None
            except openai.APIConnectionError as exc:
                cause = exc.__cause__ or exc
                detail, delay = f"connection failed ({type(cause).__name__}: {_short(str(cause))})", None
            except (openai.APIResponseValidationError, ValueError, TypeError, AttributeError, IndexError) as exc:
                detail, delay = f"malformed reply ({type(exc).__name__}: {_short(str(exc))})", None
            detail = scrub(detail, [self.endpoint.env_key() or ""])
            if attempt > self.max_retries:
                raise CallError(self.endpoint, detail, attempt)
            stats.retried_errors.append(detail)
            await asyncio.sleep(_backoff(attempt, delay))


IMAGE_SLOT = f"mia-image-{secrets.token_hex(8)}"  # stands for a data URI in params


def encode_body(params: dict[str, Any], image: PreparedImage | None = None) -> bytes:
    """``params`` as JSON bytes, each ``IMAGE_SLOT`` value replaced by the
    image's data URI.

    The URI is most of a request (~250 KB of base64 for a 1 MP photo).  Put
    in as text, it would be copied into a str, scanned by the JSON encoder
    and copied again into bytes, all on the loop thread and alive for every
    request in flight.  Base64 needs no JSON escaping, so its bytes are
    spliced in once.
    """
    data = json.dumps(params).encode("ascii")  # ensure_ascii: any text is safe
    if image is None:
        return data
    slot = b'"' + IMAGE_SLOT.encode("ascii") + b'"'
    return data.replace(slot, b'"' + image.data_uri_bytes() + b'"')


def _completion(reply: Any) -> Completion:
    """The first choice of a reply (the decoded JSON body).  Nothing here is
    trusted: anything but a choice with a message is malformed (and so
    retried, never cached)."""
    if not isinstance(reply, dict):
        raise ValueError(f"reply is not a JSON object: {_short(str(reply))}")
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices:
        error = reply.get("error")
        if error:
            raise ValueError(f"reply carries an error instead of choices: {_short(str(error))}")
        raise ValueError("reply has no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise ValueError("reply's first choice has no message")
    text = message.get("content")
    if text is not None and not isinstance(text, str):
        raise TypeError(f"message content is {type(text).__name__}, not text")
    usage = reply.get("usage")
    return Completion(
        text=text,
        finish_reason=reason if isinstance(reason := choice.get("finish_reason"), str) else None,
        prompt_tokens=_tokens(usage, "prompt_tokens"),
        completion_tokens=_tokens(usage, "completion_tokens"),
    )


def _tokens(usage: Any, name: str) -> int:
    value = usage.get(name, 0) if isinstance(usage, dict) else 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _status_detail(exc: Any, endpoint: Endpoint) -> str:
    status = exc.status_code
    message = ""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = str(inner.get("message", "")) if isinstance(inner, dict) else str(inner)
    elif body is not None:
        message = str(body)
    if not message:
        try:  # a plain-text or HTML error page: its own words beat "Error code: 400"
            message = exc.response.text
        except Exception:
            message = ""
    if not message:
        message = str(getattr(exc, "message", "") or "")
    detail = f"HTTP {status}"
    if message:
        detail += f": {_short(message)}"
    if status == 401 and endpoint.key_withheld():
        detail += (
            f" (no key sent: ${endpoint.api_key_env} goes only to api.openai.com unless you name it"
            f" with --mia-{'judge-' if endpoint.role == 'judge' else ''}api-key-env)"
        )
    elif status == 401 and endpoint.key() is None:
        detail += f" (no key: ${endpoint.api_key_env} is not set)"
    return detail


def _retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait (Retry-After-Ms, Retry-After)."""
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except Exception:
        return None


def _backoff(attempt: int, retry_after: float | None) -> float:
    """Full-jitter exponential backoff; a server's Retry-After takes precedence."""
    if retry_after is not None:
        return min(retry_after, RETRY_AFTER_CAP) + random.uniform(0, 0.1)
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** (attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)
