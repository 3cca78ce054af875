"""The options resolved once into a frozen ``Settings`` (options.py declares
them), and the checks that refuse a run that cannot work before any call.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from .options import (
    API_VERSION_ENV,
    AZURE_KEY_ENV,
    AZURE_TOKEN_ENV,
    DEFAULT_CONCURRENCY,
    DEFAULT_DATASET,
    DEFAULT_IMAGE_MAX_SIDE,
    DEFAULT_JUDGE_MODEL,
    DEFAULT_MAX_REPLY_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RATE_LIMIT_WAIT,
    DEFAULT_TIMEOUT,
    OPTIONS_BY_DEST,
    OptionError,
    raw_value,
)
from .urls import azure_deployment, azure_deployment_problem, is_azure_v1, query_pairs, shown_url

#: The model name that selects the built-in mock server (mock.py), for either role.
MOCK_MODEL = "mock"
# Where calls go without --mia-base-url or OPENAI_BASE_URL.
DEFAULT_BASE_URL = "https://api.openai.com/v1"
MOCK_REVISION = "built-in"  # the mock model's answers never change
#: How the run header and reports name the mock's endpoint (its port differs per process).
MOCK_LABEL = "built-in mock (127.0.0.1)"
#: What the response cache keys the mock's calls on, instead of its per-process URL.
MOCK_CACHE_URL = "mock://built-in/v1"
#: ``dataset`` of a --mia-demo run, as the header and reports show it.
DEMO_DATASET = "mia-bench-demo (built-in, 20 rows)"


@dataclass(frozen=True)
class Settings:
    """Everything the run depends on, resolved once at configure time."""

    enabled: bool = False
    demo: bool = False
    model: str | None = None
    model_revision: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    api_version: str | None = None
    api: str = "chat"  # "chat" or "responses": chat.completions.create or responses.create
    judge_model: str = DEFAULT_JUDGE_MODEL
    judge_base_url: str | None = None
    judge_api_key_env: str = "OPENAI_API_KEY"
    judge_api_version: str | None = None
    judge_api: str = "chat"
    protocol: str = "evalscope"  # the headline protocol: total_score, the gates, the first line
    # Every protocol that judges, the headline first, as given (plugin.py
    # expands ``all`` and checks the names against the registry).
    protocols: tuple[str, ...] = ("evalscope",)
    dataset: str = DEFAULT_DATASET
    split: str = "test"
    image_root: str | None = None
    limit: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    threshold: float | None = None
    threshold_on: str = "mean"
    report: str | None = None
    image_max_side: int = DEFAULT_IMAGE_MAX_SIDE
    concurrency: int = DEFAULT_CONCURRENCY
    max_retries: int = DEFAULT_MAX_RETRIES
    timeout: float = DEFAULT_TIMEOUT
    rate_limit_wait: float = DEFAULT_RATE_LIMIT_WAIT
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    rpm: float | None = None
    reasoning_effort: str | None = None
    judge_reasoning_effort: str | None = None
    cache_dir: str | None = None
    no_cache: bool = False
    rejudge: bool = False
    judge_image: bool | None = None
    judge_temperature: float | None = None
    judge_max_tokens: int | None = None
    judge_retries: int = 0
    judge_repeats: int = 1
    html: str | None = None
    baseline: str | None = None
    max_drop: float | None = None
    baseline_common: bool = False
    price: tuple[tuple[str, float, float], ...] | None = None
    estimate: bool = False
    budget_tokens: int | None = None
    budget_usd: float | None = None
    seed: int = 0
    # Not options: whether the key variables were named by the user.
    api_key_env_explicit: bool = False
    judge_api_key_env_explicit: bool = False


def resolve(config: pytest.Config) -> Settings:
    """Read every option (command line > ini > default) and validate it."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for field in dataclasses.fields(Settings):
        dest = _DEST_OF_FIELD.get(field.name, "mia_" + field.name)
        if dest not in OPTIONS_BY_DEST:
            continue  # derived below
        option = OPTIONS_BY_DEST[dest]
        raw, where = raw_value(config, option)
        sources[field.name] = where
        if raw is None or where == "default" or isinstance(raw, bool):
            values[field.name] = raw if raw is not None else option.default
            continue
        try:
            values[field.name] = option.parse(str(raw))
        except OptionError as exc:
            raise pytest.UsageError(f"{where}: {exc}") from None
    # --mia-protocol gives a list: ``protocol`` is its first name, the headline.
    names = tuple(dict.fromkeys(values["protocol"]))  # duplicates dropped, order kept
    values["protocols"], values["protocol"] = names, names[0]
    values["api_key_env_explicit"] = sources["api_key_env"] != "default"
    values["judge_api_key_env_explicit"] = sources["judge_api_key_env"] != "default"
    if values["demo"] and values["enabled"]:
        _demo_values(values, sources)
    _azure_key_envs(values, sources)
    settings = Settings(**values)
    if settings.max_drop is not None and not settings.baseline:
        raise pytest.UsageError(f"{sources['max_drop']}: needs --mia-baseline PATH (the report to compare with)")
    if settings.baseline_common and not settings.baseline:
        raise pytest.UsageError(f"{sources['baseline_common']}: needs --mia-baseline PATH (the report to compare with)")
    if settings.budget_usd is not None and not settings.price:
        raise pytest.UsageError(f"{sources['budget_usd']}: needs --mia-price NAME=IN/OUT (the dollars per million tokens of the model and the judge)")
    if settings.enabled and not settings.model:
        raise pytest.UsageError(
            "--mia-bench needs the model under test: pass --mia-model NAME (or set mia_model in the ini file); "
            "to try the plugin first, with no key and no network: pytest --mia-bench --mia-demo"
        )
    if settings.enabled and settings.budget_usd is not None and settings.price:
        priced = {name for name, _, _ in settings.price}
        if settings.model not in priced and settings.judge_model not in priced:
            raise pytest.UsageError(
                f"{sources['budget_usd']}: --mia-price names neither the model ({settings.model}) nor the judge "
                f"({settings.judge_model}), so nothing would count against the budget"
            )
    if settings.enabled:
        _check_urls(settings, sources)
        _check_mock(settings, sources)
        _check_azure(settings, sources)
        _check_tls_environment(settings)
        if settings.model == MOCK_MODEL and settings.model_revision is None:
            # The built-in mock's weights are known: its answers are reusable.
            settings = dataclasses.replace(settings, model_revision=MOCK_REVISION)
    return settings


# What --mia-demo decides itself; naming one of these on the command line
# with it is a contradiction.  Values from the ini file are set aside instead:
# a project configured for its real run can still try the demo.
_DEMO_FIXED = ("model", "judge_model", "dataset", "split", "image_root", "base_url", "judge_base_url")


def _demo_values(values: dict[str, Any], sources: dict[str, str]) -> None:
    for name in _DEMO_FIXED:
        where = sources[name]
        mock_named = name in ("model", "judge_model") and values[name] == MOCK_MODEL
        if where.endswith("on the command line") and not mock_named:
            raise pytest.UsageError(
                f"{where}: --mia-demo runs the built-in demo set against the built-in mock model and judge; "
                "drop one of the two (for a dry run on your own data without spending, use --mia-model mock --mia-judge-model mock)"
            )
    values.update(
        model=MOCK_MODEL,
        judge_model=MOCK_MODEL,
        dataset=DEMO_DATASET,
        split="test",
        image_root=None,
        base_url=None,
        judge_base_url=None,
    )


def mock_roles(settings: Settings) -> tuple[str, ...]:
    """The roles ("model", "judge") served by the built-in mock."""
    return tuple(role for role, name in (("model", settings.model), ("judge", settings.judge_model)) if name == MOCK_MODEL)


def _check_mock(settings: Settings, sources: dict[str, str]) -> None:
    """``mock`` is the built-in server: an endpoint given for it would be ignored."""
    for role, url_field in (("model", "base_url"), ("judge", "judge_base_url")):
        if role in mock_roles(settings) and getattr(settings, url_field) is not None:
            flag = "--mia-model" if role == "model" else "--mia-judge-model"
            raise pytest.UsageError(
                f"{sources[url_field]}: {flag} mock is the built-in mock server on 127.0.0.1 and takes no endpoint; "
                "drop the URL, or name the model your server serves"
            )


def base_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an OpenAI-compatible base URL, or None."""
    # A message never shows a password given in the URL, or a key in its query.
    shown = shown_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        return f"{shown!r} is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"{shown!r} is not an http(s) URL"
    if not parts.hostname:
        return f"{shown!r} has no host"
    return _query_problem(url) or azure_deployment_problem(url)


def _query_problem(url: str) -> str | None:
    """A query is sent with every call as given (the SDK's ``default_query``);
    what cannot be sent so is refused rather than changed."""
    shown = shown_url(url)
    if "#" in url:
        return f"{shown!r} has a fragment (#...), which no server sees; drop it"
    names = [name for name, _ in query_pairs(url)]
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        return f"{shown!r} repeats the query parameter {', '.join(map(repr, repeated))}, which cannot be sent as given; give each once"
    return None



def _check_urls(settings: Settings, sources: dict[str, str]) -> None:
    """A malformed endpoint URL is a usage error before any call."""
    for name in ("base_url", "judge_base_url"):
        url = getattr(settings, name)
        if url is not None and (problem := base_url_problem(url)):
            raise pytest.UsageError(f"{sources[name]}: {problem}; give the endpoint's base URL, e.g. http://localhost:8000/v1")
    env_url = os.environ.get("OPENAI_BASE_URL")
    mocked = mock_roles(settings)  # the mock ignores OPENAI_BASE_URL
    uses_env = (settings.base_url is None and "model" not in mocked) or (settings.judge_base_url is None and "judge" not in mocked)
    if env_url and uses_env and (problem := base_url_problem(env_url)):
        raise pytest.UsageError(f"OPENAI_BASE_URL in the environment: {problem}")


_ROLE_FIELDS = (("model", "model", "base_url", "api_key_env", "api_version"), ("judge", "judge_model", "judge_base_url", "judge_api_key_env", "judge_api_version"))


def _role_url(values: Any, model_field: str, url_field: str) -> str | None:
    """The URL a role's calls go to (None for the built-in mock), from the
    Settings or the dict of values it is made from."""
    get = values.get if isinstance(values, dict) else lambda name: getattr(values, name)
    if get(model_field) == MOCK_MODEL:
        return None
    return get(url_field) or os.environ.get("OPENAI_BASE_URL")


def _azure_key_envs(values: dict[str, Any], sources: dict[str, str]) -> None:
    """An Azure OpenAI URL's key is in AZURE_OPENAI_API_KEY unless the user
    names a variable: an OpenAI key (OPENAI_API_KEY) is not an Azure key."""
    for _, model_field, url_field, env_field, _ in _ROLE_FIELDS:
        url = _role_url(values, model_field, url_field)
        if url and sources[env_field] == "default" and (azure_deployment(url) or is_azure_v1(url)):
            values[env_field] = AZURE_KEY_ENV


def _check_azure(settings: Settings, sources: dict[str, str]) -> None:
    """An Azure deployment is called with an api-version and a credential;
    without either, every call would fail: a usage error before any call."""
    for role, model_field, url_field, env_field, version_field in _ROLE_FIELDS:
        url = _role_url(settings, model_field, url_field)
        version = getattr(settings, version_field)
        flag = "--mia-judge-api-version" if role == "judge" else "--mia-api-version"
        where = sources[version_field]
        if url is None or azure_deployment(url) is None:
            if version is not None:
                raise pytest.UsageError(
                    f"{where}: the {role}'s endpoint is not an Azure OpenAI deployment URL (.../openai/deployments/NAME); "
                    "for another endpoint, put a query parameter it needs in its base URL"
                )
            continue
        if getattr(settings, "judge_api" if role == "judge" else "api") == "responses":
            # Azure serves responses.create on its v1 route only; the SDK would post to .../deployments/NAME/responses.
            resource = url.split("/openai/", 1)[0]
            raise pytest.UsageError(
                f"the {role}'s endpoint {shown_url(url)} is an Azure OpenAI deployment URL, and Azure serves the Responses API "
                f"on its /openai/v1 route only: give {'--mia-judge-base-url' if role == 'judge' else '--mia-base-url'} "
                f"{shown_url(resource)}/openai/v1 and the deployment's name as {'--mia-judge-model' if role == 'judge' else '--mia-model'}"
            )
        in_url = [value for name, value in query_pairs(url) if name == "api-version"]
        if in_url and version is not None and version != in_url[0]:
            raise pytest.UsageError(f"{where}: api-version {version!r} contradicts the {role}'s URL, which asks for {in_url[0]!r}; give one")
        if not (in_url or version or os.environ.get(API_VERSION_ENV)):
            raise pytest.UsageError(
                f"the {role}'s Azure OpenAI URL {shown_url(url)} has no api-version: add ?api-version=... to it "
                f"(as the Azure portal shows it), or give {flag} VERSION or ${API_VERSION_ENV}"
            )
        key_env = getattr(settings, env_field)
        if not (os.environ.get(key_env) or os.environ.get(AZURE_TOKEN_ENV) or _azure_identity_installed()):
            raise pytest.UsageError(
                f"the {role}'s Azure OpenAI deployment needs a credential: set ${key_env} to its key "
                f"(or name another variable with {'--mia-judge-api-key-env' if role == 'judge' else '--mia-api-key-env'}), "
                f"or ${AZURE_TOKEN_ENV} to a Microsoft Entra ID token, or install azure-identity (DefaultAzureCredential)"
            )


def _azure_identity_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("azure.identity") is not None
    except ImportError:  # no "azure" namespace at all
        return False


def tls_urls(settings: Settings) -> list[str]:
    """The endpoint URLs of the run that use TLS (the default endpoint,
    api.openai.com, does; the built-in mock does not), as they may be shown."""
    mocked = mock_roles(settings)
    env_url = os.environ.get("OPENAI_BASE_URL")
    urls = [
        url or env_url or DEFAULT_BASE_URL
        for role, url in (("model", settings.base_url), ("judge", settings.judge_base_url))
        if role not in mocked
    ]
    return [shown_url(url) for url in dict.fromkeys(urls) if urlsplit(url).scheme.lower() == "https"]


def _check_tls_environment(settings: Settings) -> None:
    """A CA file or folder the environment names that cannot be loaded is a
    usage error before any call, where an endpoint uses TLS; it is not read
    at all otherwise (engine.py).  Loaded as the HTTP library loads it: the
    first of SSL_CERT_FILE, SSL_CERT_DIR that is set."""
    import ssl

    urls = tls_urls(settings)
    if not urls:
        return
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        value = os.environ.get(name)
        if not value:
            continue
        try:
            if name == "SSL_CERT_FILE":
                ssl.create_default_context(cafile=value)
            else:
                ssl.create_default_context(capath=value)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            reason = getattr(exc, "strerror", None) or str(exc)
            raise pytest.UsageError(
                f"{name} in the environment: cannot load CA certificates from {value!r} ({reason}); "
                f"they are needed for the https endpoint {urls[0]}: fix or unset {name}"
            ) from None
        return


_DEST_OF_FIELD = {"enabled": "mia_bench"}

