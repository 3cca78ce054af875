"""A rate-limited endpoint for the loopback server: at most ``rps`` requests
per 1-second window, OpenAI-style 429s and x-ratelimit-* headers.

    script = limited(20, inner)
    with OpenAIServer(script) as server: ...
    script.rate_limited, script.succeeded   # counts, for assertions

The windows are fixed, aligned on the first request.  A token limit is
reported too, per 60-second window and never the binding one: its reset is
up to a minute away while it still has room, as OpenAI's often is, so a
client that waits for every reset it sees waits far too long.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Literal

from support.server import Reply, Request, Script

HeadersMode = Literal["full", "reset-requests-only"]

TOKENS_PER_MINUTE = 1_000_000


def go_duration(seconds: float) -> str:
    """How OpenAI writes a reset: "20ms" under a second, else "1m2.5s"."""
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.3g}s" if minutes else f"{rest:.3g}s"


class Limited:
    """The script; thread-safe (the server answers on one thread per request)."""

    def __init__(self, rps: int, inner: Script, headers_mode: HeadersMode = "full") -> None:
        self.rps = rps
        self.inner = inner
        self.headers_mode = headers_mode
        self.rate_limited = 0
        self.succeeded = 0
        self._lock = threading.Lock()
        self._start: float | None = None
        self._window = -1
        self._in_window = 0
        self._tokens_minute = -1
        self._tokens_used = 0

    def __call__(self, request: Request) -> Reply:
        with self._lock:
            now = time.monotonic()
            if self._start is None:
                self._start = now
            elapsed = now - self._start
            window = int(elapsed)
            if window != self._window:
                self._window, self._in_window = window, 0
            minute = int(elapsed // 60)
            if minute != self._tokens_minute:
                self._tokens_minute, self._tokens_used = minute, 0
            reset_requests = window + 1 - elapsed
            reset_tokens = (minute + 1) * 60 - elapsed
            allowed = self._in_window < self.rps
            if allowed:
                self._in_window += 1
                self._tokens_used += max(1, len(request.raw) // 4)
                self.succeeded += 1
            else:
                self.rate_limited += 1
            remaining = self.rps - self._in_window
            tokens_left = TOKENS_PER_MINUTE - self._tokens_used
        if self.headers_mode == "reset-requests-only":
            headers = {"x-ratelimit-reset-requests": go_duration(reset_requests)}
        else:
            headers = {
                "x-ratelimit-limit-requests": str(self.rps),
                "x-ratelimit-remaining-requests": str(remaining),
                "x-ratelimit-reset-requests": go_duration(reset_requests),
                "x-ratelimit-limit-tokens": str(TOKENS_PER_MINUTE),
                "x-ratelimit-remaining-tokens": str(tokens_left),
                "x-ratelimit-reset-tokens": go_duration(reset_tokens),
            }
            if not allowed:
                headers["retry-after-ms"] = str(math.ceil(reset_requests * 1000))
        if not allowed:
            return Reply(f"Rate limit reached for requests: limit {self.rps} per 1s. Please try again later.", status=429, headers=headers)
        reply = self.inner(request)
        reply.headers = {**headers, **reply.headers}
        return reply


def limited(rps: int, inner: Script, headers_mode: HeadersMode = "full") -> Limited:
    """``inner`` behind a limit of ``rps`` requests per second.

    "full": every reply carries x-ratelimit-{limit,remaining,reset}-{requests,tokens}
    and a 429 also retry-after-ms.  "reset-requests-only": every reply carries
    x-ratelimit-reset-requests and nothing else (a terse proxy).
    """
    return Limited(rps, inner, headers_mode)
