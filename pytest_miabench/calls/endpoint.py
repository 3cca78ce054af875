"""Where a role's calls go: the ``Endpoint`` (URL, key variable, Azure's
forms), the pair the settings give (``endpoints``), and the SDK's client for
it (``open_client``, with azure-identity's token provider for Azure)."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlencode, urlsplit

from ..config.options import API_VERSION_ENV, AZURE_TOKEN_ENV
from ..config.settings import DEFAULT_BASE_URL, MOCK_CACHE_URL, MOCK_MODEL, Settings
from ..config.urls import (
    authority,
    azure_deployment,
    is_azure_v1,
    query_pairs,
    query_secrets,
    shown_url,
    strip_userinfo,
    without_query,
)

if TYPE_CHECKING:
    import openai

# A local server (vLLM, Ollama) needs no key, but the openai client refuses
# to start without one; this placeholder is what vLLM's docs use.
NO_KEY = "EMPTY"


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


def api_path(endpoint: Endpoint, api: str = "chat") -> str:
    """The URL path a call is posted to: chat completion or response."""
    return urlsplit(endpoint.client_url).path.rstrip("/") + ("/responses" if api == "responses" else "/chat/completions")
