"""Calls to OpenAI-compatible chat endpoints, through the openai SDK's typed API.

One ``Caller`` per role (model, judge).  A call goes out as
``client.chat.completions.with_raw_response.create(...)`` (raw, for the
rate-limit headers), or ``client.responses.with_raw_response.create(...)``
for a role on the Responses API (``--mia-api responses``: the same request,
carried over part for part); the SDK's own retry loop is off (``max_retries=0``)
because the policy here differs from it in three ways it cannot express:

* 429s are retried until a time budget is spent, not a count, and every
  standard header is honoured (``ratelimit.server_ask``); the endpoint's
  concurrency shrinks and grows back (``ratelimit.AdaptiveLimiter``);
* a reasoning model that refuses ``max_tokens`` or a non-default temperature
  is asked again the way it accepts, and the deviation is recorded;
* the first calls of a role failing the same systematic way (connection
  refused, DNS, 401/403/404) trip a breaker that ends the session at once.

Only ``openai`` exception types (and ``MalformedReply``, a 200 whose body is
not a chat completion) are retried: a bug in this package is never retried
as a server fault.  Every attempt is counted, the paid ones included.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import os
import random
import re
import socket
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote, urlencode, urlsplit

from ..config.options import API_VERSION_ENV, AZURE_TOKEN_ENV
from ..config.settings import DEFAULT_BASE_URL, MOCK_CACHE_URL, MOCK_MODEL, Settings
from ..config.urls import (
    authority,
    azure_deployment,
    is_azure_v1,
    origin,
    query_pairs,
    query_secrets,
    shown_url,
    strip_userinfo,
    without_query,
)
from ..protocols.base import Protocol
from ..protocols.sampling import judge_settings
from .ratelimit import AdaptiveLimiter, Ask, HostPaused, RateCap, RetryBudget, Slot, backoff, server_ask

if TYPE_CHECKING:
    import openai

# A local server (vLLM, Ollama) needs no key, but the openai client refuses
# to start without one; this placeholder is what vLLM's docs use.
NO_KEY = "EMPTY"
_TRANSIENT_STATUS = {408, 409}
# OpenAI's reasoning families refuse max_tokens and any temperature but the
# default; they are asked the accepted way from the first call.  Other hosts
# and names are adapted when they answer 400 (see ``Sampling.adapt``).
_REASONING_NAME = re.compile(r"^(?:[\w.-]+/)?(?:o\d|gpt-5)", re.IGNORECASE)
# How many first attempts of a role must fail the same systematic way (and
# none succeed) before the breaker ends the session.
BREAKER_ATTEMPTS = 3
# A wait the server asks for longer than this (seconds) is printed, once per
# host: a run that seems stuck says why.
NOTICE_AFTER = 5.0


def userinfo(url: str) -> tuple[str, str] | None:
    """The ``(user, password)`` of ``user:password@`` in a URL, decoded."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


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
    # --mia-api-version: an Azure deployment's api-version when its URL has none.
    api_version: str | None = None

    @property
    def url(self) -> str:
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL

    @property
    def deployment(self) -> str | None:
        """The Azure OpenAI deployment the URL names (the classic route), or None."""
        found = azure_deployment(self.url)
        return found[1] if found is not None else None

    @property
    def azure_v1(self) -> bool:
        """Azure OpenAI's ``/openai/v1`` route: OpenAI-compatible, plain client."""
        return is_azure_v1(self.url)

    @property
    def azure(self) -> bool:
        return self.deployment is not None or self.azure_v1

    def azure_api_version(self) -> str | None:
        """A deployment's api-version: the URL's, else --mia-api-version, else
        $OPENAI_API_VERSION (settings.py refuses a deployment with none)."""
        if self.deployment is None:
            return None
        in_url = [value for name, value in query_pairs(self.url) if name == "api-version"]
        return in_url[0] if in_url else self.api_version or os.environ.get(API_VERSION_ENV)

    @property
    def client_url(self) -> str:
        """The base URL the SDK's client is given: no userinfo (httpx and
        openai log URLs), no query (sent as ``query()``, never appended to
        by the SDK's path joining), and for a deployment no operation."""
        found = azure_deployment(self.url)
        return strip_userinfo(found[0] if found is not None else without_query(self.url))

    def query(self) -> dict[str, str]:
        """The URL's query parameters, sent with every call (a deployment's
        api-version is the Azure client's own parameter)."""
        skip = {"api-version"} if self.deployment is not None else set()
        return {name: value for name, value in query_pairs(self.url) if name not in skip}

    @property
    def cache_url(self) -> str:
        """The endpoint as the response cache keys it: the built-in mock's
        port changes every run, its answers do not; an Azure deployment is
        its base URL and api-version (the portal's form and the short one
        are one endpoint); a credential in a query is not part of it."""
        if self.model == MOCK_MODEL:
            return MOCK_CACHE_URL
        if self.deployment is not None:
            return shown_url(f"{self.client_url}?{urlencode({'api-version': self.azure_api_version(), **self.query()})}")
        return shown_url(self.url)

    @property
    def shown(self) -> str:
        """The URL as the run header and messages show it."""
        return shown_url(self.url)

    @property
    def url_is_default(self) -> bool:
        return not self.base_url and not os.environ.get("OPENAI_BASE_URL")

    @property
    def host(self) -> str:
        # host:port only: never echo userinfo a user may have put in a URL
        return authority(self.url)

    def key(self) -> str | None:
        if self.key_withheld():
            return None
        return self.env_key()

    def env_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None

    def ad_token(self) -> str | None:
        """A Microsoft Entra ID token for Azure, sent instead of the key."""
        return (os.environ.get(AZURE_TOKEN_ENV) or None) if self.azure else None

    def uses_token(self) -> bool:
        """Whether an Entra ID token is sent instead of a key: one in
        $AZURE_OPENAI_AD_TOKEN, or azure-identity's for a deployment without a key."""
        return self.ad_token() is not None or (self.deployment is not None and self.env_key() is None)

    def key_withheld(self) -> bool:
        """True when the default key exists but this host must not get it."""
        if self.key_env_explicit or self.base_url is None or self.env_key() is None or self.azure:
            return False
        host = (urlsplit(self.base_url).hostname or "").lower()
        return not (host == "api.openai.com" or host.endswith(".openai.com"))

    def key_note(self) -> str:
        """Whether a key is sent, and from where, for the run's header."""
        if self.ad_token() is not None:
            return f"Microsoft Entra ID token from ${AZURE_TOKEN_ENV} (Authorization: Bearer)"
        if self.key_withheld():
            flag = "--mia-judge-api-key-env" if self.role == "judge" else "--mia-api-key-env"
            return f"no key sent (${self.api_key_env} goes only to api.openai.com unless named with {flag})"
        if self.env_key() is None:
            if self.deployment is not None:
                return "Microsoft Entra ID token from azure-identity (DefaultAzureCredential)"
            return f"no key (${self.api_key_env} is not set)"
        return f"key from ${self.api_key_env}" + (" (api-key header)" if self.deployment is not None else "")

    def where_note(self) -> str:
        """What kind of endpoint the URL is, when it is Azure's, for the run's header."""
        if self.deployment is not None:
            return f"Azure OpenAI deployment {self.deployment}, api-version {self.azure_api_version()}"
        return "Azure OpenAI v1 route, OpenAI-compatible" if self.azure_v1 else ""

    def secrets(self) -> tuple[str, ...]:
        """What must never be printed or stored: the key, an Entra ID token,
        a credential in the URL's query, and a password (and
        ``user:password``, which basic auth sends) given in the URL."""
        found = [secret for secret in (self.env_key(), self.ad_token()) if secret]
        found += query_secrets(self.url)
        if (info := userinfo(self.url)) is not None and info[1]:
            found += [info[1], f"{info[0]}:{info[1]}"]
        return tuple(found)

    def basic_auth(self) -> str | None:
        """The Authorization header for ``user:password@`` in the URL: what
        httpx would send for it, given here so the URL the client holds (and
        logs) has no userinfo."""
        if (info := userinfo(self.url)) is None:
            return None
        return "Basic " + base64.b64encode(f"{info[0]}:{info[1]}".encode()).decode()


def endpoints(settings: Settings) -> tuple[Endpoint, Endpoint]:
    """The model's and the judge's endpoints, as the settings give them."""
    assert settings.model is not None  # resolve() requires it with --mia-bench
    return (
        Endpoint("model", settings.model, settings.base_url, settings.api_key_env, settings.api_key_env_explicit, settings.api_version),
        Endpoint(
            "judge", settings.judge_model, settings.judge_base_url, settings.judge_api_key_env, settings.judge_api_key_env_explicit, settings.judge_api_version
        ),
    )


def model_sampling(settings: Settings) -> Sampling:
    """The model's sampling as the settings ask for it: what the engine
    sends and what the estimate keys the cache with (one definition)."""
    assert settings.model is not None  # resolve() requires it with --mia-bench
    return Sampling.for_model(settings.model, settings.max_tokens, settings.temperature, settings.reasoning_effort, settings.api)


def judge_sampling(settings: Settings, protocol: Protocol) -> Sampling:
    """The judge's sampling under ``protocol`` (its reference's defaults,
    overridden by the judge options), as ``model_sampling``."""
    chosen = judge_settings(settings, protocol)
    return Sampling.for_model(settings.judge_model, chosen.get("max_tokens"), chosen.get("temperature"), settings.judge_reasoning_effort, settings.judge_api)


def open_client(endpoint: Endpoint, *, timeout: float, http_client: Any) -> openai.AsyncOpenAI:
    """The SDK's client for a role, its own retries off (``Caller`` retries).

    An Azure deployment gets the SDK's Azure client: the deployment in the
    path, ``api-version`` in the query, the key in the ``api-key`` header or
    an Entra ID token as a Bearer token.  Any other endpoint (Azure's
    ``/openai/v1`` route included) gets the plain client with the key as a
    Bearer token.  A query in the URL goes with every call as given."""
    import openai

    basic = endpoint.basic_auth()
    common: dict[str, Any] = {
        "base_url": endpoint.client_url,
        "default_query": endpoint.query() or None,
        "timeout": timeout,
        "max_retries": 0,
        "http_client": http_client,
    }
    token = endpoint.ad_token()
    if endpoint.deployment is None:
        # Never a password in the URL the client holds: httpx and openai
        # log URLs.  The userinfo goes as the basic-auth header instead
        # (as httpx itself sends it, in place of the bearer key).
        return openai.AsyncOpenAI(
            api_key=token or endpoint.key() or NO_KEY, default_headers={"Authorization": basic} if basic else None, **common
        )
    credential: dict[str, Any]
    if token is not None:
        credential = {"azure_ad_token": token}
    elif (key := endpoint.key()) is not None:
        credential = {"api_key": key}
    else:
        credential = {"azure_ad_token_provider": _identity_token_provider()}
    # Older SDKs (1.58) also put the key in a Bearer header: the key goes
    # only in api-key; a token is added per request, over this default.
    headers: dict[str, Any] = {"Authorization": basic or openai.Omit()}
    return openai.AsyncAzureOpenAI(api_version=endpoint.azure_api_version(), default_headers=headers, **credential, **common)


# The scope of an Entra ID token for Azure OpenAI (Cognitive Services).
_AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"


def _identity_token_provider() -> Callable[[], Any]:
    """azure-identity's DefaultAzureCredential as the SDK's token provider
    (settings.py checked that azure-identity is installed).  Its tokens are
    fetched (and cached) by its synchronous provider, in a worker thread:
    the credential chain may run a CLI, which must not stall the calls."""
    from azure.identity import DefaultAzureCredential, get_bearer_token_provider

    fetch = get_bearer_token_provider(DefaultAzureCredential(), _AZURE_SCOPE)

    async def provider() -> str:
        return await asyncio.to_thread(fetch)

    return provider


class CallError(Exception):
    """A call that did not produce a reply, after any retries."""

    def __init__(self, endpoint: Endpoint, detail: str, attempts: int) -> None:
        # Error bodies may echo the Authorization header back at us.
        detail = scrub(detail, endpoint.secrets())
        self.endpoint = endpoint
        self.detail = detail
        self.attempts = attempts
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{endpoint.role} call to {endpoint.host} ({endpoint.model}) failed{tries}: {detail}")


class EndpointDown(CallError):
    """The role's breaker tripped: its endpoint fails every call the same way."""


class MalformedReply(Exception):
    """An HTTP 200 whose body is not a usable chat completion (retried).

    ``systematic``: the reply is not from a chat-completions API at all (an
    HTML page): every call will get the same, so the breaker counts it."""

    def __init__(self, message: str, *, systematic: bool = False) -> None:
        super().__init__(message)
        self.systematic = systematic


class RefusedReply(Exception):
    """A reply that is not read (or not followed): never parsed or stored,
    and not retried, since the same request would get it again.
    ``systematic`` names the cause for the breaker when every call of an
    endpoint would meet it (a redirect), None when it says nothing of the
    endpoint as a whole (one large reply)."""

    systematic: str | None = None


class ReplyTooLarge(RefusedReply):
    """A reply body over ``--mia-max-reply-bytes``, counted as decoded."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"reply body larger than {limit} bytes (--mia-max-reply-bytes); not read further, not stored")


class Redirected(RefusedReply):
    """A 3xx with a Location: requests go only to the configured endpoint,
    so no redirect is followed (the SDK's client would follow any, to any
    host, with the prompt and the image)."""

    def __init__(self, status: int, asked: Any, target: Any) -> None:
        where = _short(shown_url(str(target)), 200)
        if target.copy_with(fragment=None) == asked.copy_with(fragment=None):
            detail = f"the endpoint redirects (HTTP {status}) {asked.path} to itself: a redirect loop"
            self.systematic = "a redirect loop"
        elif _origin_key(target) != _origin_key(asked):
            detail = (
                f"the endpoint {origin(str(asked))} redirects (HTTP {status}) to another origin, {where}; "
                f"requests go only to the configured endpoint, so it is not followed (give that URL as the base URL if it is meant)"
            )
            self.systematic = f"redirected to another origin ({_short(origin(str(target)), 100)})"
        else:
            detail = (
                f"the endpoint redirects (HTTP {status}) {asked.path} to {where}; "
                f"redirects are not followed (give the base URL the server redirects to)"
            )
            self.systematic = f"redirected (HTTP {status})"
        super().__init__(detail + "; not retried")


def _origin_key(url: Any) -> tuple[str, str, int | None]:
    """What makes two URLs one origin (the library normalizes the default port away)."""
    return (url.scheme, url.host, url.port)


# Content codings undone here, each in bounded steps, and how many may be
# stacked ("gzip, gzip"); httpx2 refuses more than five too.
_ZLIB_CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_MAX_CODINGS = 5
_INFLATE_STEP = 1 << 16


class _Inflater:
    """Undoes a reply's gzip/deflate codings in steps of at most 64 KiB per
    coding, so that a small compressed body cannot become a large buffer in
    one call: the reader's count (and its cap) sees each step as it comes.
    httpx's own decoders inflate each network chunk whole (httpx2's in 1 MiB
    steps, but only behind ``Response.aread``, which joins every step)."""

    def __init__(self, codings: Sequence[str], error: type[Exception]) -> None:
        self._layers = [_Layer(coding) for coding in reversed(codings)]  # the last applied first
        self._error = error

    def feed(self, data: bytes) -> Iterator[bytes]:
        return self._through(0, data)

    def flush(self) -> Iterator[bytes]:
        for i, layer in enumerate(self._layers):
            yield from self._through(i + 1, self._guard(layer.flush))

    def _through(self, i: int, data: bytes) -> Iterator[bytes]:
        if i == len(self._layers):
            if data:
                yield data
            return
        layer = self._layers[i]
        while data:
            out = self._guard(layer.inflate, data)
            rest = layer.unconsumed_tail
            if not out and rest == data:
                return  # nothing more from this input (a finished stream)
            data = rest
            yield from self._through(i + 1, out)

    def _guard(self, step: Callable[..., bytes], *args: bytes) -> bytes:
        try:
            return step(*args)
        except zlib.error as exc:
            raise self._error(f"reply body is not valid {'/'.join(layer.coding for layer in self._layers)} data: {exc}") from None


class _Layer:
    """One coding.  ``deflate`` is zlib-wrapped by the standard and raw in
    practice: the first bytes decide, as in httpx."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._started = False
        self._inner = zlib.decompressobj(_ZLIB_CODINGS[coding])

    @property
    def unconsumed_tail(self) -> bytes:
        return self._inner.unconsumed_tail

    def inflate(self, data: bytes) -> bytes:
        first, self._started = not self._started, True
        try:
            return self._inner.decompress(data, _INFLATE_STEP)
        except zlib.error:
            if not (first and self.coding == "deflate"):
                raise
            self._inner = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._inner.decompress(data, _INFLATE_STEP)

    def flush(self) -> bytes:
        return self._inner.flush()


def _library(client_class: type) -> Any:
    """The SDK's HTTP library (httpx, or httpx2 in newer releases)."""
    name = next(c for c in client_class.__mro__ if c.__name__ == "AsyncClient").__module__.partition(".")[0]
    return sys.modules[name]


def bounded_http_client(max_reply_bytes: int, trust_env: bool = True, tls: bool = True) -> Any:
    """The HTTP client both roles share: the SDK's defaults, with every reply
    body bounded while it is read, and no redirect followed.

    The SDK reads a non-streamed body whole before parsing it; a response
    hook (run once the headers are in, before the body) refuses a redirect
    and a declared length over the cap, and wraps the body stream so that
    reading stops once the cap is passed.  Bodies are asked uncompressed; a
    server that compresses anyway (gzip, deflate, stacked) is decoded here,
    step by step, and the cap bounds the decoded size; a coding not undone
    here (br, zstd) is refused.

    ``tls``: whether any endpoint uses https.  The CA certificates come from
    the library's own TLS context; SSL_CERT_FILE/SSL_CERT_DIR are read only
    when TLS is used (a broken one is a usage error then: settings.py).
    """
    import openai

    library = _library(openai.DefaultAsyncHttpxClient)
    client = openai.DefaultAsyncHttpxClient(
        headers={"Accept-Encoding": "identity"},
        trust_env=trust_env,
        follow_redirects=False,
        verify=library.create_ssl_context(trust_env=trust_env and tls),
    )

    class CappedStream(library.AsyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any, inflater: _Inflater | None) -> None:
            self._inner = inner
            self._inflater = inflater

        async def __aiter__(self) -> Any:
            wire = held = 0
            inflater = self._inflater
            async for chunk in self._inner:
                wire += len(chunk)
                if wire > max_reply_bytes:
                    raise ReplyTooLarge(max_reply_bytes)
                for piece in inflater.feed(chunk) if inflater is not None else (chunk,):
                    held += len(piece)
                    if held > max_reply_bytes:
                        raise ReplyTooLarge(max_reply_bytes)
                    yield piece
            for piece in inflater.flush() if inflater is not None else ():
                held += len(piece)
                if held > max_reply_bytes:
                    raise ReplyTooLarge(max_reply_bytes)
                yield piece

        async def aclose(self) -> None:
            await self._inner.aclose()

    async def cap(response: Any) -> None:
        if response.has_redirect_location:
            raise Redirected(response.status_code, response.request.url, response.request.url.join(response.headers["location"]))
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_reply_bytes:
            raise ReplyTooLarge(max_reply_bytes)
        codings = [c.strip().lower() for c in response.headers.get_list("content-encoding", split_commas=True)]
        codings = [c for c in codings if c and c != "identity"]
        if unknown := sorted({c for c in codings if c not in _ZLIB_CODINGS}):
            raise RefusedReply(f"reply body in Content-Encoding {', '.join(unknown)}, which was not asked for (Accept-Encoding: identity); not read")
        if len(codings) > _MAX_CODINGS:
            raise RefusedReply(f"reply body in {len(codings)} stacked Content-Encodings; not read")
        inflater = _Inflater(codings, library.DecodingError) if codings else None
        if codings:
            # Decoded here: the library must not decode it again.
            del response.headers["content-encoding"]
        response.stream = CappedStream(response.stream, inflater)

    client.event_hooks = {"response": [cap]}
    return client


def proxy_for(client: Any, url: str) -> str | None:
    """The proxy ``client`` sends requests for ``url`` through, without
    userinfo, and the variable naming it; None for a direct connection.
    The client itself decides (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and
    NO_PROXY, read by it under ``trust_env``); the proxy's URL is from the
    same table it reads them from, ``urllib.request.getproxies()``."""
    import urllib.request

    library = _library(type(client))
    try:  # the library's routing (not public API): no name at all beats a wrong one
        if client._transport_for_url(library.URL(url)) is client._transport:
            return None
    except Exception:
        return None
    proxies = urllib.request.getproxies()
    for key in (urlsplit(url).scheme.lower(), "all"):
        if proxies.get(key):
            return f"{strip_userinfo(proxies[key])} ({key.upper()}_PROXY)"
    return None


@dataclass
class Completion:
    """The parts of a chat completion the benchmark keeps."""

    text: str | None
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    reasoning: str | None = None  # ``reasoning_content`` / ``reasoning`` of the message

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "reasoning": self.reasoning,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Completion:
        text, reason, reasoning = data.get("text"), data.get("finish_reason"), data.get("reasoning")
        if not all(v is None or isinstance(v, str) for v in (text, reason, reasoning)):
            raise ValueError("cached completion has non-text fields")
        return cls(
            text,
            reason,
            _count(data.get("prompt_tokens")),
            _count(data.get("completion_tokens")),
            _count(data.get("reasoning_tokens")),
            reasoning,
        )


@dataclass
class CallStats:
    """What one logical call cost: attempts sent (each may be paid)."""

    attempts: int = 0
    rate_limited: int = 0
    # Attempts sent again the way the endpoint accepts (``Sampling``): an
    # adaptation, not a retry of a failure.
    resent: int = 0


def scrub(text: str, secrets: Sequence[str]) -> str:
    """Remove secrets from text that may echo them (error bodies, replies,
    log lines): as given, and in the encodings a server or proxy commonly
    echoes them in (base64 standard and URL-safe, hex, URL-encoded)."""
    for variant in _variants(tuple(secrets)):
        if variant in text:
            text = text.replace(variant, "***")
    return text


# A base64 fragment shorter than this could be an ordinary word.
_MIN_FRAGMENT = 8


@functools.lru_cache(maxsize=16)
def _variants(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Every form of the secrets ``scrub`` removes, longest first, computed
    once per set of secrets: scrubbing is a few substring searches."""
    found: set[str] = set()
    for secret in secrets:
        if len(secret) < 4:
            continue
        raw = secret.encode("utf-8", "surrogatepass")
        found.update((secret, raw.hex(), raw.hex().upper(), quote(secret, safe=""), quote_plus(secret)))
        # Base64 of a text that holds the secret ("Bearer KEY", "user:KEY")
        # holds one of three fragments, by the secret's offset mod 3: the
        # characters that depend on the secret's bytes alone.
        for offset in range(3):
            encoded = base64.b64encode(b"\0" * offset + raw).decode()
            whole = offset == 0
            start = (0, 2, 3)[offset]
            end = len(encoded.rstrip("="))
            if (offset + len(raw)) % 3:
                end -= 1  # the last character also holds what follows
            for form in (encoded, encoded.replace("+", "-").replace("/", "_")):
                if whole:
                    found.update((form, form.rstrip("=")))
                if end - start >= _MIN_FRAGMENT:
                    found.add(form[start:end])
    return tuple(sorted(found, key=len, reverse=True))


class ScrubFilter(logging.Filter):
    """Scrubs secrets from the records of the HTTP libraries' loggers while
    a run is on (a server's reply headers appear in their DEBUG lines)."""

    LOGGERS = ("openai", "httpx", "httpcore")

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = tuple(secrets)
        self._loggers: list[logging.Logger] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True

    def install(self) -> None:
        """On every logger of those libraries (a filter is not inherited:
        each child logger that logs needs its own)."""
        names = [name for name in logging.root.manager.loggerDict if name.split(".")[0].startswith(self.LOGGERS)]
        for name in names:
            logger = logging.getLogger(name)
            logger.addFilter(self)
            self._loggers.append(logger)

    def remove(self) -> None:
        for logger in self._loggers:
            logger.removeFilter(self)
        self._loggers.clear()


@dataclass
class Sampling:
    """A role's sampling parameters, and how they were adapted to the endpoint.

    Starts as the protocol (or the user) asked; ``adapt`` changes it once per
    refusal, and ``deviations`` says in words what differs from the request.
    Shared by every call of the role, so only the first refusal costs a call.
    """

    max_tokens: int | None = None
    temperature: float | None = None
    reasoning_effort: str | None = None
    token_param: str = "max_tokens"
    send_temperature: bool = True
    deviations: list[str] = field(default_factory=list)
    # "chat" (chat.completions.create) or "responses" (responses.create),
    # which names the parameters its own way and has one token limit only.
    api: str = "chat"

    def __post_init__(self) -> None:
        if self.api == "responses":
            self.token_param = "max_output_tokens"

    @classmethod
    def for_model(
        cls, name: str, max_tokens: int | None, temperature: float | None, reasoning_effort: str | None, api: str = "chat"
    ) -> Sampling:
        sampling = cls(max_tokens, temperature, reasoning_effort, api=api)
        if _REASONING_NAME.match(name):
            sampling._use_completion_tokens(f"{name} is a reasoning model")
            sampling._drop_temperature(f"{name} is a reasoning model")
        return sampling

    def params(self) -> dict[str, Any]:
        """Keyword arguments for ``chat.completions.create`` (or ``responses.create``)."""
        params: dict[str, Any] = {}
        if self.max_tokens is not None:
            params[self.token_param] = self.max_tokens
        if self.temperature is not None and self.send_temperature:
            params["temperature"] = self.temperature
        if self.reasoning_effort is not None:
            if self.api == "responses":
                params["reasoning"] = {"effort": self.reasoning_effort}
            else:
                params["reasoning_effort"] = self.reasoning_effort
        return params

    def requested(self) -> dict[str, Any]:
        """The parameters as asked for (cache keys use these: an adaptation
        does not change what the run means to ask).  Named as chat names
        them whatever the API: the API kind is a key part of its own."""
        return Sampling(self.max_tokens, self.temperature, self.reasoning_effort).params()

    def adapt(self, exc: openai.APIStatusError) -> bool:
        """Change what a 400 says the endpoint refuses; False if nothing applies."""
        if exc.status_code != 400:
            return False
        param, text = _error_param(exc)
        if self.max_tokens is not None and self.token_param == "max_tokens" and (
            param == "max_tokens" or "max_completion_tokens" in text
        ):
            return self._use_completion_tokens("the endpoint refused max_tokens")
        if self.temperature is not None and self.send_temperature and (
            param == "temperature" or ("temperature" in text and "unsupported" in text.lower())
        ):
            return self._drop_temperature("the endpoint refused it")
        return False

    def outdated(self, exc: openai.APIStatusError, sent: Mapping[str, Any]) -> bool:
        """Whether a 400 refuses a parameter ``sent`` held that the role no
        longer sends: another call's refusal changed the sampling while this
        request was in flight, and it is to be sent again, the accepted way."""
        if exc.status_code != 400:
            return False
        param, text = _error_param(exc)
        now = self.params()
        return any(name in sent and name not in now and (param == name or name in text) for name in ("max_tokens", "temperature"))

    def _use_completion_tokens(self, why: str) -> bool:
        # max_output_tokens, the Responses API's only limit, has no alias to switch to.
        if self.max_tokens is None or self.token_param != "max_tokens":
            return False
        self.token_param = "max_completion_tokens"
        self.deviations.append(f"max_tokens={self.max_tokens} sent as max_completion_tokens ({why})")
        return True

    def _drop_temperature(self, why: str) -> bool:
        if self.temperature is None or not self.send_temperature:
            return False
        self.send_temperature = False
        self.deviations.append(f"temperature={self.temperature:g} not sent, the model's default applies ({why})")
        return True


def _error_param(exc: openai.APIStatusError) -> tuple[str | None, str]:
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body)
    if not isinstance(inner, dict):
        return None, str(inner)
    param = inner.get("param")
    return (param if isinstance(param, str) else None), str(inner.get("message") or "")


class Breaker:
    """Ends the session when an endpoint is plainly unusable.

    Trips when the first ``BREAKER_ATTEMPTS`` attempts of a role all failed
    with the same systematic cause and none succeeded: a dead host, a wrong
    URL, a bad key or model name fail every later call too, and 400 samples
    times seven attempts would take many minutes to say so.  One success
    disarms it for the run: later failures are ordinary, per-sample ones.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.armed = True
        self.causes: list[str] = []
        self.tripped: asyncio.Event = asyncio.Event()
        self.message = ""

    def success(self) -> None:
        self.armed = False

    def failure(self, systematic: str | None, note: str = "") -> None:
        """An attempt failed; ``systematic`` is its cause when every call
        would fail the same way (compared as text), ``note`` what the
        message adds (the path called, a hint)."""
        if not self.armed or self.tripped.is_set():
            return
        if systematic is None:
            self.armed = False
            return
        self.causes.append(systematic)
        if len(self.causes) >= BREAKER_ATTEMPTS and len(set(self.causes)) == 1:
            e = self.endpoint
            self.message = (
                f"{e.role} endpoint {e.host} ({e.model}) is unusable: {systematic} on each of the first "
                f"{len(self.causes)} attempts{note}; the run stops here (the rest of the samples are not run)"
            )
            self.tripped.set()


@dataclass
class _Tries:
    """What one call has spent: its 429 budget and its transient failures
    (against --mia-max-retries)."""

    budget: RetryBudget
    failures: int = 0


@dataclass(frozen=True)
class _Next:
    """After a failed attempt: send again after ``delay`` seconds, or once
    the host's pause for ``ask`` is over (waited in the limiter's queue)."""

    delay: float = 0.0
    ask: Ask | None = None


class Caller:
    """One role's client; used from the engine's event loop only."""

    def __init__(
        self,
        endpoint: Endpoint,
        sampling: Sampling,
        *,
        timeout: float,
        max_retries: int,
        rate_limit_wait: float,
        limiter: AdaptiveLimiter,
        rate_cap: RateCap | None,
        http_client: Any,
        require_text: bool = False,
        breaker: Breaker | None = None,
    ) -> None:
        """``breaker``: shared with the other callers of the same endpoint
        (one per judge protocol): a dead judge is dead for every protocol."""
        import openai

        self.endpoint = endpoint
        self.sampling = sampling
        self.api = sampling.api  # the sampling names its parameters for this API
        self.timeout = timeout
        self.max_retries = max_retries
        self.rate_limit_wait = rate_limit_wait
        self.limiter = limiter
        self.rate_cap = rate_cap
        self.breaker = breaker if breaker is not None else Breaker(endpoint)
        # A judge reply without text (null content, a content filter) is a
        # failed call, retried, never a verdict of 0 stored in the cache.
        self.require_text = require_text
        # Retry jitter from a private generator: the global one is reseeded
        # per test by pytest-randomly and may be seeded by user code.
        self._rng = random.Random()
        self._openai = openai
        # A connection failure names the proxy the calls go through, if any:
        # a dead proxy is not a dead endpoint.
        self.proxy = proxy_for(http_client, endpoint.url)
        self._client = open_client(endpoint, timeout=timeout, http_client=http_client)

    async def close(self) -> None:
        await self._client.close()

    async def complete(self, messages: list[dict[str, Any]], stats: CallStats) -> Completion:
        """One chat completion, retried on transient failures; raises CallError."""
        tries = _Tries(RetryBudget(self.rate_limit_wait))
        while True:
            self._raise_if_tripped(stats)
            try:
                async with self.limiter.slot() as slot:
                    if self.rate_cap is not None:
                        await self.rate_cap.wait()
                    outcome = await self._attempt(messages, stats, slot, tries)
            except HostPaused as exc:  # the host asked for a pause beyond the budget
                raise CallError(self.endpoint, str(exc), stats.attempts) from None
            if isinstance(outcome, Completion):
                return outcome
            if outcome.ask is not None:
                # Every new request, this retry included, waits out the pause
                # in the limiter's queue: no storm of retries meanwhile.
                self._hold(outcome.ask)
            elif outcome.delay > 0:
                # Our own backoff: wait outside the slot, and stop if the breaker trips.
                try:
                    await asyncio.wait_for(self.breaker.tripped.wait(), outcome.delay)
                except asyncio.TimeoutError:
                    pass

    async def _attempt(self, messages: list[dict[str, Any]], stats: CallStats, slot: Slot, tries: _Tries) -> Completion | _Next:
        """One request, in its slot: the completion, or what to do next."""
        openai = self._openai
        self._raise_if_tripped(stats)  # tripped while this call queued for its slot
        sent = self.sampling.params()
        stats.attempts += 1
        try:
            # The whole request, body included, is bounded: the
            # client's own timeout only bounds each read.
            completion, headers = await asyncio.wait_for(self._send(messages, sent), self.timeout)
        except openai.APIStatusError as exc:
            return self._on_status(exc, sent, stats, slot, tries)
        except (openai.APITimeoutError, asyncio.TimeoutError):
            return self._retry(f"request timed out after {self.timeout:g} s", stats, tries)
        except (openai.APIConnectionError, RefusedReply) as exc:
            if (refused := _cause_of_type(exc, RefusedReply)) is not None:
                assert isinstance(refused, RefusedReply)
                self.breaker.failure(refused.systematic)  # None: the endpoint answers, not a dead host
                self._raise_if_tripped(stats)
                raise CallError(self.endpoint, str(refused), stats.attempts) from None
            cause = _root_cause(exc)
            self.breaker.failure(_systematic_connection_error(cause, self.proxy))
            self._raise_if_tripped(stats)
            return self._retry(_connection_failure(cause, self.proxy), stats, tries)
        except MalformedReply as exc:
            if exc.systematic:
                self.breaker.failure(str(exc))
                self._raise_if_tripped(stats)
            return self._retry(f"malformed reply ({exc})", stats, tries)
        self.limiter.on_success()
        self.breaker.success()
        # A limit with nothing left: hold the next requests until it resets.
        if (ahead := server_ask(headers, time.time())) is not None:
            self._hold(ahead)
        return completion

    def _on_status(self, exc: openai.APIStatusError, sent: Mapping[str, Any], stats: CallStats, slot: Slot, tries: _Tries) -> _Next:
        """What an HTTP error status means for the call: wait and retry,
        send again, or fail (CallError)."""
        status, detail = exc.status_code, _status_detail(exc, self.endpoint)
        if status == 429:
            stats.rate_limited += 1
            self.limiter.on_rate_limited(slot)
            ask = server_ask(exc.response.headers, time.time(), status=429)
            delay = ask.seconds if ask is not None else backoff(tries.budget.tries + 1, self._rng)
            self._within_budget(delay, ask, detail, stats, tries)
            return _Next(delay, ask)
        if self.sampling.adapt(exc) or self.sampling.outdated(exc, sent):
            stats.resent += 1  # the same request the accepted way: not a retry
            return _Next()
        if status in _TRANSIENT_STATUS or status >= 500:
            ask = server_ask(exc.response.headers, time.time())
            if ask is not None:
                self._within_budget(ask.seconds, ask, detail, stats, tries, rate_limited=False)
                self._notice(ask)
            return self._retry(detail, stats, tries, ask.seconds if ask is not None else None)
        self.breaker.failure(*_systematic_status(exc, self.endpoint, host_answered=self.limiter.successes > 0, api=self.api))
        self._raise_if_tripped(stats)
        raise CallError(self.endpoint, detail, stats.attempts) from None

    def _retry(self, detail: str, stats: CallStats, tries: _Tries, asked: float | None = None) -> _Next:
        """A transient failure: retry after a backoff (or the wait the server
        asked for), or CallError when the retries are used up."""
        tries.failures += 1
        if tries.failures > self.max_retries:
            raise CallError(self.endpoint, detail, stats.attempts)
        return _Next(asked if asked is not None else backoff(tries.failures, self._rng))

    def _within_budget(self, delay: float, ask: Ask | None, detail: str, stats: CallStats, tries: _Tries, *, rate_limited: bool = True) -> None:
        """CallError, at once, when waiting ``delay`` more would pass the
        call's --mia-rate-limit-wait budget."""
        budget = tries.budget
        if budget.allows(delay, rate_limited=rate_limited):
            return
        if ask is not None and ask.seconds > budget.seconds:
            why = f"server asked to retry after {_seconds_text(ask.seconds)} s ({ask.header}), more than the {budget.seconds:g} s --mia-rate-limit-wait budget"
        else:
            why = f"{budget.message(delay)} (--mia-rate-limit-wait)"
        raise CallError(self.endpoint, f"{detail}; {why}", stats.attempts)

    def _hold(self, ask: Ask) -> None:
        """Pause the host's requests as the server asked; a pause beyond the
        budget fails them instead (each with the reason), never stalls."""
        if ask.seconds > self.rate_limit_wait:
            reason = (
                f"server asked to pause requests for {_seconds_text(ask.seconds)} s ({ask.header}), "
                f"more than the {self.rate_limit_wait:g} s --mia-rate-limit-wait budget"
            )
            self._notice(ask, f"calls to it fail until then (more than the {self.rate_limit_wait:g} s --mia-rate-limit-wait budget)")
            self.limiter.refuse(ask.seconds, reason)
        else:
            self._notice(ask)
            self.limiter.pause(ask.seconds)

    def _notice(self, ask: Ask, consequence: str = "calls wait it out") -> None:
        """Say once per host (the limiter is the host's) that it asked for a
        long wait: a run that seems stuck says why."""
        if ask.seconds > NOTICE_AFTER and self.limiter.notice is None:
            text = f"{self.endpoint.host} asked for a pause of {_seconds_text(ask.seconds)} s ({ask.header}); {consequence}"
            self.limiter.notice = scrub(text, self.endpoint.secrets())

    def _raise_if_tripped(self, stats: CallStats) -> None:
        if self.breaker.tripped.is_set():
            raise EndpointDown(self.endpoint, self.breaker.message, stats.attempts)

    async def _send(self, messages: list[dict[str, Any]], params: Mapping[str, Any]) -> tuple[Completion, Any]:
        raw: Any
        if self.api == "responses":
            raw = await self._client.responses.with_raw_response.create(
                model=self.endpoint.model,
                input=responses_input(messages),  # type: ignore[arg-type]  # built as plain dicts
                **params,
            )
        else:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=self.endpoint.model,
                messages=messages,  # type: ignore[arg-type]  # built as plain dicts
                **params,
            )
        try:
            parsed = raw.parse()
        except ValueError as exc:  # the body is not JSON
            raise MalformedReply(f"body is not JSON: {_short(str(exc))}") from None
        if isinstance(parsed, str):
            # The SDK hands back the text of a body that is neither JSON nor
            # declared so: an HTML page, a proxy's notice.  Not an OpenAI API.
            kind = _short(raw.headers.get("content-type") or "(none)", 80)
            raise MalformedReply(f"HTTP 200 with content type {kind}, not JSON, from POST {_api_path(self.endpoint, self.api)}", systematic=True)
        completion = response_completion_of(parsed) if self.api == "responses" else completion_of(parsed)
        if self.require_text and (completion.text is None or completion.finish_reason == "content_filter"):
            raise MalformedReply(f"no usable text (content {'null' if completion.text is None else 'filtered'}, finish_reason {completion.finish_reason})")
        secrets = self.endpoint.secrets()
        # A server that echoes the key must not get it into reports or the cache.
        if completion.text:
            completion.text = scrub(completion.text, secrets)
        if completion.reasoning:
            completion.reasoning = scrub(completion.reasoning, secrets)
        return completion, raw.headers


def completion_of(reply: Any) -> Completion:
    """The first choice of a parsed reply.  The SDK builds its objects
    without validation, so nothing is trusted: anything but a choice with a
    message is malformed."""
    choices = getattr(reply, "choices", None)
    if not isinstance(choices, list) or not choices:
        error = (getattr(reply, "model_extra", None) or {}).get("error")
        if error:
            raise MalformedReply(f"reply carries an error instead of choices: {_short(str(error))}")
        raise MalformedReply("reply has no choices")
    choice = choices[0]
    message = getattr(choice, "message", None)
    if message is None or isinstance(message, (str, int, float, list)):
        raise MalformedReply("reply's first choice has no message")
    text = getattr(message, "content", None)
    if text is not None and not isinstance(text, str):
        raise MalformedReply(f"message content is {type(text).__name__}, not text")
    extra = getattr(message, "model_extra", None) or {}
    reasoning = extra.get("reasoning_content") or extra.get("reasoning")
    reason = getattr(choice, "finish_reason", None)
    usage = getattr(reply, "usage", None)
    details = getattr(usage, "completion_tokens_details", None)
    return Completion(
        text=text,
        finish_reason=reason if isinstance(reason, str) else None,
        prompt_tokens=_count(getattr(usage, "prompt_tokens", 0)),
        completion_tokens=_count(getattr(usage, "completion_tokens", 0)),
        reasoning_tokens=_count(getattr(details, "reasoning_tokens", 0)),
        reasoning=reasoning if isinstance(reasoning, str) else None,
    )


def responses_input(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as the Responses API's input items, part for part and
    in order: text parts become ``input_text``, image parts ``input_image``
    (the data URI and its detail; ``auto``, the API's default, when chat
    left it to the server), text content stays the same string, and every
    role (system included) stays a message of that role."""
    items = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [_input_part(part) for part in content]
        items.append({"role": message["role"], "content": content})
    return items


def _input_part(part: Mapping[str, Any]) -> dict[str, Any]:
    if part["type"] == "text":
        return {"type": "input_text", "text": part["text"]}
    if part["type"] == "image_url":
        image = part["image_url"]
        return {"type": "input_image", "image_url": image["url"], "detail": image.get("detail") or "auto"}
    raise ValueError(f"no Responses API form for a message part of type {part['type']!r}")


# A response's ``incomplete_details.reason`` as chat's finish_reason says it.
_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


def response_completion_of(reply: Any) -> Completion:
    """The answer of a parsed Responses API reply (``responses.create``).
    As in ``completion_of`` nothing is trusted: a reply that is not a
    finished response with a list of output items is malformed."""
    output = getattr(reply, "output", None)
    if not isinstance(output, list) or getattr(reply, "object", "response") != "response":
        error = getattr(reply, "error", None) or (getattr(reply, "model_extra", None) or {}).get("error")
        if error:
            raise MalformedReply(f"reply carries an error instead of output: {_short(str(error))}")
        raise MalformedReply("reply is not a response with a list of output items")
    status = getattr(reply, "status", None)
    if status not in ("completed", "incomplete"):
        error = getattr(reply, "error", None)
        raise MalformedReply(f"response status {_short(str(status), 40)}" + (f": {_short(str(error))}" if error else ""))
    if status == "completed":
        reason: str | None = "stop"
    else:
        why = _part(getattr(reply, "incomplete_details", None), "reason")
        reason = _INCOMPLETE_REASONS.get(why, why) if isinstance(why, str) else "incomplete"
    usage = getattr(reply, "usage", None)
    return Completion(
        text=_output_text(output, completed=status == "completed"),
        finish_reason=reason,
        prompt_tokens=_count(getattr(usage, "input_tokens", 0)),
        completion_tokens=_count(getattr(usage, "output_tokens", 0)),
        reasoning_tokens=_count(getattr(getattr(usage, "output_tokens_details", None), "reasoning_tokens", 0)),
        reasoning="\n\n".join(_texts(output, "reasoning", "summary", "summary_text")) or None,
    )


def _output_text(output: list[Any], *, completed: bool) -> str | None:
    """What the SDK's ``Response.output_text`` gives, every ``output_text``
    part of every message joined, read here item by item: the SDK's property
    fails on an item type its version does not know.  None for a message
    without text: a refusal, or an incomplete response whose tokens went to
    reasoning (as chat's empty ``length`` reply); a completed response with
    neither text nor refusal is malformed."""
    texts = _texts(output, "message", "content", "output_text")
    if texts:
        return "".join(texts)
    if completed and not _texts(output, "message", "content", "refusal", field="refusal"):
        raise MalformedReply("completed response has no output text")
    return None


def _texts(output: list[Any], item_type: str, parts_field: str, part_type: str, field: str = "text") -> list[str]:
    """The ``field`` of every ``part_type`` part of every ``item_type`` item;
    such a part without text is malformed."""
    found = []
    for item in output:
        if _part(item, "type") != item_type:
            continue
        parts = _part(item, parts_field)
        for part in parts if isinstance(parts, list) else ():
            if _part(part, "type") != part_type:
                continue
            if not isinstance(text := _part(part, field), str):
                raise MalformedReply(f"{part_type} part of the reply holds no text")
            found.append(text)
    return found


def _part(obj: Any, name: str) -> Any:
    """A field of an item the SDK built without validation: a model, or a
    plain dict where the union of item types did not match."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    what = f"{type(cause).__name__}: {_short(str(cause))}"
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
        detail += f": {_short(message)}"
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
    status, path = exc.status_code, _api_path(endpoint, api)
    if status in (401, 403):
        return f"HTTP {status}", ""
    if status == 404:
        hint = _v1_hint(endpoint)
        return "HTTP 404", f" (POST {path}{'; ' + hint if hint else ''})"
    if 400 <= status < 500 and not host_answered:
        body = _short(_error_message(exc), 80)
        return f'HTTP {status} "{body}" from POST {path}', ""
    return None, ""


def _api_path(endpoint: Endpoint, api: str = "chat") -> str:
    """The URL path a call is posted to: chat completion or response."""
    return urlsplit(endpoint.client_url).path.rstrip("/") + ("/responses" if api == "responses" else "/chat/completions")


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


def _seconds_text(seconds: float) -> str:
    """Seconds for a message: whole from 10 s up, never in e-notation."""
    return f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.3g}"
