"""The HTTP client both roles share (``bounded_http_client``): every reply
body bounded while it is read (``ReplyTooLarge``), compressed bodies
inflated in bounded steps, no redirect followed (``Redirected``); and which
proxy a URL's requests go through (``proxy_for``)."""

from __future__ import annotations

import sys
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from ..config.urls import origin, shown_url, strip_userinfo
from .scrub import short


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
        where = short(shown_url(str(target)), 200)
        if target.copy_with(fragment=None) == asked.copy_with(fragment=None):
            detail = f"the endpoint redirects (HTTP {status}) {asked.path} to itself: a redirect loop"
            self.systematic = "a redirect loop"
        elif _origin_key(target) != _origin_key(asked):
            detail = (
                f"the endpoint {origin(str(asked))} redirects (HTTP {status}) to another origin, {where}; "
                f"requests go only to the configured endpoint, so it is not followed (give that URL as the base URL if it is meant)"
            )
            self.systematic = f"redirected to another origin ({short(origin(str(target)), 100)})"
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
    client.event_hooks = {"response": [_cap_hook(library, max_reply_bytes)]}
    return client


def _cap_hook(library: Any, max_reply_bytes: int) -> Callable[[Any], Awaitable[None]]:
    """The response hook of ``bounded_http_client``: refuses a redirect, a
    declared length over the cap and a coding not undone here, and puts the
    body behind the capped (and inflating) stream."""
    capped_stream = _capped_stream_class(library, max_reply_bytes)

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
        response.stream = capped_stream(response.stream, inflater)

    return cap


def _capped_stream_class(library: Any, max_reply_bytes: int) -> type:
    """A body stream of the library's that stops once ``max_reply_bytes``
    have come (on the wire, and once decoded)."""

    class CappedStream(library.AsyncByteStream):  # type: ignore[misc]
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

    return CappedStream


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
