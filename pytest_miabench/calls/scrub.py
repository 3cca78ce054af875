"""Text from a server made fit for a message: secrets removed (``scrub``,
and ``ScrubFilter`` for the HTTP libraries' log records) and length cut
(``short``).  Error bodies and replies may echo the key back at us."""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Sequence
from urllib.parse import quote, quote_plus


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


def short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
