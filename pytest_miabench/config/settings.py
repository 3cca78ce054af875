"""Options of the plugin: declared once, resolved once into a frozen ``Settings``.

Every command-line flag has an ini twin with the same help text.  A value given
on the command line wins over the ini file, which wins over the default.  A bad
value is a ``pytest.UsageError`` that names the flag or ini key it came from.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from .urls import azure_deployment, azure_deployment_problem, is_azure_v1, query_pairs, shown_url

# lmms-eval moved MIA-Bench here on 2026-07-30 (its PR #1416); the old id
# names the same data and is still accepted (see dataset.HUB_ALIASES).
DEFAULT_DATASET = "lmms-lab-encoder/MIA-Bench"
DEFAULT_JUDGE_MODEL = "gpt-4o"
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
# OpenAI's high-detail path first fits an image inside 2048x2048, so pixels
# beyond that are pure upload cost there; Qwen-VL/vLLM servers cap far lower.
DEFAULT_IMAGE_MAX_SIDE = 2048
DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_RETRIES = 6
DEFAULT_TIMEOUT = 180.0
DEFAULT_RATE_LIMIT_WAIT = 300.0
# The largest reply body read from an endpoint (model or judge): the JSON of
# a completion, reasoning included.  4 MiB holds about a million characters
# of plain text, far beyond any real answer to a MIA-Bench instruction or any
# verdict, and keeps a runaway or hostile server from filling memory, the
# judge's prompt, the cache and the reports.
DEFAULT_MAX_REPLY_BYTES = 4 * 1024 * 1024
# Azure OpenAI: the key variable of an Azure URL unless one is named, the
# Entra ID token sent instead of a key when set, and the api-version used
# when the URL has none (the variables the openai SDK's Azure client reads).
AZURE_KEY_ENV = "AZURE_OPENAI_API_KEY"
AZURE_TOKEN_ENV = "AZURE_OPENAI_AD_TOKEN"
API_VERSION_ENV = "OPENAI_API_VERSION"


class OptionError(ValueError):
    """A value that does not parse; the message says what was expected."""


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise OptionError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise OptionError(f"expected a number >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def unit_float(text: str) -> float:
    """A number in [0, 1] (a score, a threshold, an allowed drop), or OptionError."""
    try:
        value = float(text)
    except ValueError:
        raise OptionError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise OptionError(f"expected a number in [0, 1], got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise OptionError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise OptionError(f"expected a finite number, got {text!r}")
    if value < 0:
        raise OptionError(f"expected a number >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise OptionError("expected a number > 0, got 0")
    return value


def _text(text: str) -> str:
    text = text.strip()
    if not text:
        raise OptionError("expected a non-empty value")
    return text


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise OptionError(f"expected true or false, got {text!r}")


def _prices(text: str) -> tuple[tuple[str, float, float], ...]:
    """``NAME=IN/OUT[,NAME=IN/OUT...]``: dollars per million input/output tokens."""
    prices = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, pair = item.rpartition("=")
        inp, slash, out = pair.partition("/")
        try:
            if not (sep and slash and name.strip()):
                raise ValueError
            values = (float(inp), float(out))
        except ValueError:
            raise OptionError(f"expected NAME=IN/OUT (dollars per million tokens), got {item!r}") from None
        if min(values) < 0:
            raise OptionError(f"prices cannot be negative, got {item!r}")
        prices.append((name.strip(), values[0], values[1]))
    if not prices:
        raise OptionError("expected at least one NAME=IN/OUT")
    return tuple(prices)


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise OptionError(f"expected a whole number, got {text!r}") from None


def _threshold_on(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in ("mean", "lower"):
        raise OptionError(f"expected mean or lower, got {text!r}")
    return lowered


def _protocol_names(text: str) -> tuple[str, ...]:
    """``NAME[,NAME...]`` or ``all``: the protocols that judge, the headline
    first.  Names are checked against the registry later (plugin.py), which
    knows the protocols a conftest registers; ``all`` is expanded there too."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise OptionError("expected a protocol name, a comma-separated list of names, or all")
    return names


API_KINDS = ("chat", "responses")


def _api_kind(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in API_KINDS:
        raise OptionError(f"expected chat or responses, got {text!r}")
    return lowered


def _env_name(text: str) -> str:
    text = _text(text)
    if not text.replace("_", "a").isalnum():
        raise OptionError(f"expected an environment variable name, got {text!r}")
    return text


@dataclass(frozen=True)
class Option:
    """One setting: its flag, ini key, parser, default and help text."""

    flag: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = "VALUE"
    is_flag: bool = False
    negative: str | None = None  # a --mia-no-... twin that stores False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("--mia-bench", _bool, False, "collect and run the MIA-Bench samples (and only those)", None, True),
    Option("--mia-demo", _bool, False, "run the built-in demo set against the built-in mock model and judge: no key, no network, no download; its number means nothing", None, True),
    Option("--mia-model", _text, None, "model under test (required with --mia-bench); 'mock': the built-in mock server, no key, no spending", "NAME"),
    Option("--mia-model-revision", _text, None, "the weights under test (checkpoint hash, tag, snapshot): cached answers are reused across runs only under the same revision", "REV"),
    Option("--mia-base-url", _text, None, "model endpoint, OpenAI-compatible (default: OPENAI_BASE_URL, else api.openai.com)", "URL"),
    Option("--mia-api-key-env", _env_name, "OPENAI_API_KEY", "environment variable holding the model endpoint's key", "VAR"),
    Option("--mia-api-version", _text, None, f"api-version of an Azure OpenAI deployment URL that has none in its query (default: ${API_VERSION_ENV})", "VERSION"),
    Option("--mia-api", _api_kind, "chat", "API the model under test is called through: chat (Chat Completions, the default) or responses (the Responses API, for models served only there)", "chat|responses"),
    Option("--mia-judge-model", _text, DEFAULT_JUDGE_MODEL, f"judge model (default {DEFAULT_JUDGE_MODEL}); 'mock': the built-in mock judge", "NAME"),
    Option("--mia-judge-base-url", _text, None, "judge endpoint (default: OPENAI_BASE_URL, else api.openai.com)", "URL"),
    Option("--mia-judge-api-key-env", _env_name, "OPENAI_API_KEY", "environment variable holding the judge endpoint's key", "VAR"),
    Option("--mia-judge-api-version", _text, None, f"api-version of the judge's Azure OpenAI deployment URL, when it has none (default: ${API_VERSION_ENV})", "VERSION"),
    Option("--mia-judge-api", _api_kind, "chat", "API the judge is called through: chat (the default) or responses", "chat|responses"),
    Option("--mia-protocol", _protocol_names, ("evalscope",), "judge protocol(s): evalscope, evalscope-json, lmms-eval, vlmevalkit, apple; a comma-separated list or all judges each answer under every one (the first is the headline)", "NAME[,NAME...]|all"),
    Option("--mia-dataset", _text, DEFAULT_DATASET, "hub dataset id, local hub-layout directory, parquet file or JSON/JSONL file", "ID_OR_PATH"),
    Option("--mia-split", _text, "test", "dataset split (default test)", "NAME"),
    Option("--mia-image-root", _text, None, "also read image files given as paths from DIR (default: only inside the dataset's folder)", "DIR"),
    Option("--mia-limit", _non_negative_int, None, "run only the first N samples", "N"),
    Option("--mia-max-tokens", _positive_int, None, "max_tokens for the model under test (default: the server's)", "N"),
    Option("--mia-temperature", _non_negative_float, None, "temperature for the model under test (default: the server's)", "X"),
    Option("--mia-threshold", unit_float, None, "fail the session when total_score < X (X in [0, 1])", "X"),
    Option("--mia-threshold-on", _threshold_on, "mean", "what --mia-threshold compares: mean (total_score, the default) or lower (the lower bound of its 95% CI)", "mean|lower"),
    Option("--mia-report", _text, None, "write the JSON report to PATH", "PATH"),
    Option("--mia-image-max-side", _positive_int, DEFAULT_IMAGE_MAX_SIDE, f"downscale images whose longer side exceeds N pixels (default {DEFAULT_IMAGE_MAX_SIDE})", "N"),
    Option("--mia-concurrency", _positive_int, DEFAULT_CONCURRENCY, f"samples in flight at once in one pytest process (default {DEFAULT_CONCURRENCY})", "N"),
    Option("--mia-max-retries", _non_negative_int, DEFAULT_MAX_RETRIES, f"retries of a call on 429/5xx/timeouts/connection errors (default {DEFAULT_MAX_RETRIES})", "N"),
    Option("--mia-timeout", _positive_float, DEFAULT_TIMEOUT, f"seconds one HTTP request may take, body included (default {DEFAULT_TIMEOUT:g})", "SECONDS"),
    Option("--mia-rate-limit-wait", _non_negative_float, DEFAULT_RATE_LIMIT_WAIT, f"seconds one call may keep retrying HTTP 429 (default {DEFAULT_RATE_LIMIT_WAIT:g})", "SECONDS"),
    Option("--mia-max-reply-bytes", _positive_int, DEFAULT_MAX_REPLY_BYTES, f"largest reply body read from the model or the judge; a larger reply fails its sample, unread and unstored (default {DEFAULT_MAX_REPLY_BYTES} = 4 MiB)", "N"),
    Option("--mia-rpm", _positive_float, None, "client-side cap on requests per minute to each endpoint, for the whole run", "N"),
    Option("--mia-reasoning-effort", _text, None, "reasoning_effort for the model under test (reasoning models; default: the server's)", "LEVEL"),
    Option("--mia-judge-reasoning-effort", _text, None, "reasoning_effort for the judge (reasoning models; default: the server's)", "LEVEL"),
    Option("--mia-cache-dir", _text, None, "directory of the response cache (default: pytest's cache directory)", "PATH"),
    Option("--mia-no-cache", _bool, False, "neither read nor write the response cache", None, True),
    Option("--mia-rejudge", _bool, False, "ask the judge again, keeping cached model answers", None, True),
    Option("--mia-judge-image", _bool, None, "send the image to the judge (default: as the protocol does); --mia-no-judge-image never sends it", None, True, "--mia-no-judge-image"),
    Option("--mia-judge-temperature", _non_negative_float, None, "judge temperature (default: the protocol's)", "X"),
    Option("--mia-judge-max-tokens", _positive_int, None, "judge max_tokens (default: the protocol's)", "N"),
    Option("--mia-judge-retries", _non_negative_int, 0, "re-ask the judge up to N times when its reply cannot be parsed (default 0: as the references)", "N"),
    Option("--mia-judge-repeats", _positive_int, 1, "judge each response K times and average the verdicts (default 1)", "K"),
    Option("--mia-html", _text, None, "write a self-contained HTML report to PATH", "PATH"),
    Option("--mia-baseline", _text, None, "JSON report of an earlier run to compare with (same protocol and dataset)", "PATH"),
    Option("--mia-max-drop", unit_float, None, "fail the session unless the 95% CI of the paired change (this run - baseline) against --mia-baseline lies at or above -X (non-inferiority)", "X"),
    Option("--mia-baseline-common", _bool, False, "compare with a baseline of other samples on the samples both share (marked partial) instead of refusing it", None, True),
    Option("--mia-price", _prices, None, "estimate cost: NAME=IN/OUT dollars per million input/output tokens, comma-separated", "NAME=IN/OUT"),
    Option("--mia-estimate", _bool, False, "collect as usual, make no API call, and print what the run would call and spend (calls, tokens, cache hits, cost range with --mia-price); the items are skipped", None, True),
    Option("--mia-budget-tokens", _positive_int, None, "stop the run once the endpoints have reported N tokens (model and judge, input and output): no new call starts, calls in flight finish, the run fails", "N"),
    Option("--mia-budget-usd", _positive_float, None, "stop the run once it has spent X dollars at the --mia-price prices (needs --mia-price)", "X"),
    Option("--mia-seed", _seed, 0, "seed of the bootstrap confidence intervals (default 0)", "N"),
)

OPTIONS_BY_DEST = {option.dest: option for option in OPTIONS}


def add_options(parser: pytest.Parser) -> None:
    """Register every option in one group, each with its ini twin."""
    group = parser.getgroup("mia-bench", "MIA-Bench benchmark")
    for option in OPTIONS:
        if option.is_flag:
            group.addoption(option.flag, action="store_true", default=None, dest=option.dest, help=_argparse_help(option.help))
            if option.negative:
                group.addoption(option.negative, action="store_false", default=None, dest=option.dest, help=f"see {option.flag}")
            # Read as text and parsed here, so a bad value names its key.
            parser.addini(option.dest, option.help + " (true/false)", type="string", default=None)
        else:
            group.addoption(option.flag, action="store", default=None, dest=option.dest, metavar=option.metavar, help=_argparse_help(option.help))
            parser.addini(option.dest, option.help, type="string", default=None)


def _argparse_help(text: str) -> str:
    """argparse %-formats option help (``%(default)s``): a literal ``%``
    ("95% CI") must be doubled or ``pytest --help`` fails.  Ini help is
    printed as it is, so only the option's copy is escaped."""
    return text.replace("%", "%%")


def raw_value(config: pytest.Config, option: Option) -> tuple[Any, str]:
    """The unparsed value and where it came from (command line, ini or default)."""
    value = config.getoption(option.dest)
    if value is not None:
        flag = option.negative if value is False and option.negative else option.flag
        return value, f"{flag} on the command line"
    try:
        ini_value = config.getini(option.dest)
    except ValueError as exc:  # pytest's own bool parsing of ini values
        raise pytest.UsageError(f"{option.dest} in {_ini_name(config)}: {exc}") from None
    if ini_value not in (None, ""):
        return ini_value, f"{option.dest} in {_ini_name(config)}"
    return option.default, "default"


def _ini_name(config: pytest.Config) -> str:
    return config.inipath.name if config.inipath else "the ini file"


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


def enabled(config: pytest.Config) -> bool:
    """Whether --mia-bench (or ``mia_bench`` in the ini file) is on.  Only
    then are the other options read: a stray ``mia_*`` ini value must not
    break a plain test run."""
    option = OPTIONS_BY_DEST["mia_bench"]
    value, where = raw_value(config, option)
    if isinstance(value, str):
        try:
            return _bool(value)
        except OptionError as exc:
            raise pytest.UsageError(f"{where}: {exc}") from None
    return bool(value)


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

