"""The messages a call sends, and the cache key that is that request.

A response is cached under a hash of the request as it goes out: the API
kind, the endpoint as the cache names it, the model and whose answers they
are (journal.py), the messages, the sampling asked for, and which repeat
and re-ask it is.  Whatever changes what is sent (a system message, the
order of the parts, a protocol's own ``judge_content``) changes the key, so
no stale answer is served for it.  The run (pipeline.py) and the estimate
(estimate.py) build messages and keys here, so they cannot drift apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..calls.cache import SCHEMA_VERSION

if TYPE_CHECKING:
    from ..calls.endpoint import Endpoint
    from ..protocols.base import Protocol

Messages = list[dict[str, Any]]


def model_messages(image_uri: str, instruction: str) -> Messages:
    """The model's request: the image, then the instruction."""
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image_uri}}, {"type": "text", "text": instruction}]
    return [{"role": "user", "content": content}]


def judge_messages(protocol: Protocol, prompt: str, image_uri: str | None) -> Messages:
    """The judge's request under ``protocol``: its ``judge_content``."""
    return [{"role": "user", "content": protocol.judge_content(prompt, image_uri)}]


def request_key(
    endpoint: Endpoint,
    api: str,
    messages: Messages,
    sampling: dict[str, Any],
    *,
    weights: dict[str, str] | None = None,
    repeat: int = 0,
    reask: int = 0,
    digests: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The canonical form of a request, which ``cache.cache_key`` hashes
    (sorted keys: dict order does not count; list order does).

    ``sampling`` is as requested (``Sampling.requested``): an adaptation to
    the endpoint does not change what the run means to ask.  ``weights``
    is the model's identity (a revision or a run; None for the judge).
    ``digests``: data URIs whose sha256 is known already (the image's
    ``data_uri_sha256``), so a key does not hash the image again."""
    return {
        "v": SCHEMA_VERSION,
        "api": api,
        "url": endpoint.cache_url,
        "model": endpoint.model,
        "weights": weights,
        "messages": canonical(messages, digests or {}),
        "sampling": sampling,
        "repeat": repeat,
        "reask": reask,
    }


def canonical(value: Any, digests: Mapping[str, str] | None = None) -> Any:
    """``value`` with every base64 data URI replaced by its sha256: the key
    stays small, and another image is another key.  ``digests`` holds the
    sha256 of data URIs already hashed."""
    known = digests or {}
    if isinstance(value, dict):
        return {name: canonical(item, known) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(item, known) for item in value]
    if isinstance(value, str) and value.startswith("data:") and ";base64," in value[:200]:
        digest = known.get(value) or hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        return {"data_uri_sha256": digest}
    return value
