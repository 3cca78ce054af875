"""Running the built-in mock (mock.py) for a process: starting its server,
routing the roles that name it there, and the HTTP client their calls use.

Which roles are the mock is the settings' to say (``settings.mock_roles``:
the option is parsed there); everything about serving them is here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..config.settings import Settings, mock_roles, tls_urls
from .transport import bounded_http_client


def start(settings: Settings, add_cleanup: Callable[[Callable[[], None]], None]) -> Settings:
    """Start the built-in mock server when a role is ``mock`` and route that
    role to it.  Only processes that run samples start one (the single
    process, or each xdist worker: answers depend only on the request, so
    workers need not share a server, and nothing crosses processes); it stops
    when pytest cleans up (``add_cleanup``: ``config.add_cleanup``), after the
    engine (cleanups run last-in first-out)."""
    roles = mock_roles(settings)
    if not roles:
        return settings
    from .mock import MockServer

    server = MockServer()
    add_cleanup(server.stop)
    return dataclasses.replace(
        settings,
        base_url=server.url if "model" in roles else settings.base_url,
        judge_base_url=server.url if "judge" in roles else settings.judge_base_url,
    )


def http_clients(settings: Settings) -> dict[str, Any]:
    """The HTTP client of each role ("model", "judge"): one connection pool
    and TLS context for both, replies bounded.  The built-in mock is on
    127.0.0.1: its calls never go through a proxy the environment names (the
    demo must work behind any proxy), so a mocked role gets a local client."""
    mocked = mock_roles(settings)
    # SSL_CERT_FILE/SSL_CERT_DIR are read (and checked at start-up) only when an endpoint uses TLS.
    shared = bounded_http_client(settings.max_reply_bytes, tls=bool(tls_urls(settings))) if len(mocked) < 2 else None
    local = bounded_http_client(settings.max_reply_bytes, trust_env=False, tls=False) if mocked else None
    return {role: local if role in mocked else shared for role in ("model", "judge")}
