"""Options of the plugin, declared once: ``OPTIONS`` holds every flag with its
ini key, parser, default and help text (``pytest --help`` shows them, the
docs list them from here).

Every command-line flag has an ini twin with the same help text.  A value given
on the command line wins over the ini file, which wins over the default.  A bad
value is a ``pytest.UsageError`` that names the flag or ini key it came from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

# lmms-eval moved MIA-Bench here on 2026-07-30 (its PR #1416); the old id
# names the same data and is still accepted (see dataset.HUB_ALIASES).
DEFAULT_DATASET = "lmms-lab-encoder/MIA-Bench"
DEFAULT_JUDGE_MODEL = "gpt-4o"
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
