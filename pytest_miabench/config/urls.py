"""URLs as they may be shown: the one place that removes what must not be.

A base URL may carry ``user:password@``, and a query a credential
(``?api-key=``); every URL that is printed, stored in a report or the cache,
or put in a message goes through ``strip_userinfo`` or ``shown_url`` (and a
host through ``origin``/``authority``), so all of them agree and an IPv6
literal keeps its brackets.  Azure OpenAI's URL shapes are recognised here.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

# The authority of a URL: after "scheme://" (or "//"), up to the path, query
# or fragment.  Matched as text, not parsed: a malformed URL (a bad port, an
# unclosed "[") is shown without its userinfo too, and nothing else changes.
_AUTHORITY = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?//([^/?#]*)")
_BARE_AUTHORITY = re.compile(r"^([^/?#]*@)")


def strip_userinfo(url: str) -> str:
    """The URL without ``user:password@``: what may be printed or stored.
    Everything else stays as given (``http://u:p@[::1]:8000/v1`` gives
    ``http://[::1]:8000/v1``); a URL without a scheme (``u:p@host/v1``,
    which is refused, but is quoted in the refusal) loses it too."""
    found = _AUTHORITY.match(url) or _BARE_AUTHORITY.match(url)
    if found is None or "@" not in found.group(1):
        return url
    host = found.group(1).rpartition("@")[2]
    return url[: found.start(1)] + host + url[found.end(1) :]


def authority(url: str) -> str:
    """``host:port`` of a URL as written, without userinfo (an IPv6 host
    keeps its brackets); the URL itself when it has no ``//``."""
    shown = strip_userinfo(url)
    found = _AUTHORITY.match(shown)
    return found.group(1) if found is not None and found.group(1) else shown


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, without userinfo: where requests
    to it go, in the sense of a web origin (as written)."""
    shown = strip_userinfo(url)
    scheme, sep, _ = shown.partition("://")
    return f"{scheme}://{authority(shown)}" if sep and "/" not in scheme else authority(shown)


# Query parameters whose value may be a credential (``?api-key=``,
# ``?key=``, ``?token=``, SAS ``sig=``, APIM ``subscription-key=``): shown
# masked, and scrubbed from everything printed (client.Endpoint.secrets).
_SECRET_PARAM = re.compile(r"key|token|secret|sig|pass|pwd|auth|cred|session|code", re.IGNORECASE)
MASK = "***"


def secret_param(name: str) -> bool:
    """Whether a query parameter's value is treated as a secret."""
    return name.lower() != "api-version" and _SECRET_PARAM.search(name) is not None


def shown_url(url: str) -> str:
    """The URL as it may be printed or stored: no userinfo, and the value of
    every query parameter that may hold a credential masked.  Matched as
    text: nothing else in the URL changes (no re-encoding)."""
    shown = strip_userinfo(url)
    head, sep, rest = shown.partition("?")
    if not sep:
        return shown
    query, hash_sep, fragment = rest.partition("#")
    pairs = []
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        pairs.append(f"{name}={MASK}" if eq and value and secret_param(unquote_plus(name)) else pair)
    return f"{head}?{'&'.join(pairs)}{hash_sep}{fragment}"


def query_secrets(url: str) -> list[str]:
    """The values of the URL's credential-like query parameters, decoded
    and as written (either form may be echoed)."""
    found = []
    for pair in urlsplit(url).query.split("&"):
        name, eq, value = pair.partition("=")
        if eq and value and secret_param(unquote_plus(name)):
            found += [value, unquote_plus(value)]
    return list(dict.fromkeys(found))


def query_pairs(url: str) -> list[tuple[str, str]]:
    """The URL's query, decoded, in order (a name may repeat)."""
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def without_query(url: str) -> str:
    """The URL without its query and fragment (userinfo kept)."""
    return url.partition("#")[0].partition("?")[0]


# Azure OpenAI's classic route: the deployment in the path, as the portal
# shows it (with or without the operation's ``/chat/completions``).
_AZURE_DEPLOYMENT = re.compile(r"^(?P<base>.*/openai/deployments/(?P<name>[^/]+))(?:/chat/completions)?/?$")
_AZURE_V1 = re.compile(r"/openai/v1/?$")


def azure_deployment(url: str) -> tuple[str, str] | None:
    """``(base URL, deployment name)`` of an Azure deployment URL: the base
    without the query, userinfo or a trailing ``/chat/completions``; None for
    any other URL."""
    path = urlsplit(url).path
    found = _AZURE_DEPLOYMENT.match(path)
    if found is None:
        return None
    head = without_query(url)
    return head[: len(head) - len(path)] + found.group("base"), unquote(found.group("name"))


def azure_deployment_problem(url: str) -> str | None:
    """Why a URL whose path names Azure deployments is not a chat
    deployment's URL, or None."""
    if "/openai/deployments" not in urlsplit(url).path or azure_deployment(url) is not None:
        return None
    return (
        f"{shown_url(url)!r} is not the URL of an Azure OpenAI deployment: give "
        "https://RESOURCE.openai.azure.com/openai/deployments/NAME (optionally with /chat/completions and ?api-version=...)"
    )


def is_azure_v1(url: str) -> bool:
    """Whether the URL is Azure OpenAI's OpenAI-compatible ``/openai/v1`` route."""
    return _AZURE_V1.search(urlsplit(url).path) is not None
