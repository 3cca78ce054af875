"""URLs as they may be shown: the one place that removes what must not be.

A base URL may carry ``user:password@``; every URL that is printed, stored
in a report or the cache, or put in a message goes through ``strip_userinfo``
(and a host through ``origin``/``authority``), so all of them agree and an
IPv6 literal keeps its brackets.
"""

from __future__ import annotations

import re

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
