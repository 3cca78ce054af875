"""What a run would call and spend, known before it runs (``--mia-estimate``).

No API call is made and no engine is started.  For each selected sample the
estimate builds the same requests and cache keys the run would (request.py)
and asks the response cache whether it holds them: those calls will not be
paid.  A verdict's key holds the judge prompt, which
holds the model's answer, so a verdict can be found only when the answer is.

How tokens are counted (documented in the README):

* text: exactly with ``tiktoken`` (o200k_base) when it is importable and its
  encoding loads, else about 4 characters per token; plus
  ``MESSAGE_OVERHEAD`` tokens of message framing per request;
* images: OpenAI's rule for the prepared image (fit inside 2048x2048, then
  the short side scaled down to 768; 85 + 170 per 512-pixel tile; 85 for
  ``detail: low``): stated for OpenAI's GPT-4o family, approximate for others;
* output: the typical lengths below (the low end of the cost range) and the
  max tokens the call is sent with (the high end; none without one);
* a judge prompt whose answer is not cached holds an answer of the model's
  typical length; re-asks (``--mia-judge-retries``) are not counted, since
  they happen only when a reply cannot be read.

Image sizes are read from the image headers (Pillow's lazy open, no decode);
only when the cache must be asked is an image prepared as the run would
(its data URI is in the key), which decodes only what the run re-encodes.
"""

from __future__ import annotations

import io
import math
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..calls import cache as cache_mod
from ..calls import client
from ..calls.budget import dollars, role_prices
from ..calls.cache import CacheError, ResponseCache
from ..calls.endpoint import endpoints
from ..calls.replies import Completion
from ..config.settings import Settings
from ..config.text import printable
from ..data.images import PreparedImage, prepare
from ..data.samples import Sample, Source
from ..protocols.base import Protocol
from ..protocols.sampling import judge_sees_image
from .pipeline import lineage
from .request import judge_messages, model_messages, request_key

#: Typical reply lengths in tokens, the low end of the cost range: a MIA-Bench
#: answer is a paragraph or two; a verdict a few score lines.
TYPICAL_OUTPUT = {"model": 300, "judge": 120}
#: Tokens of message framing per request (role markers, the reply's priming).
MESSAGE_OVERHEAD = 7
CHARS_PER_TOKEN = 4
IMAGE_NOTE = "images by OpenAI's tile rule for the prepared size: stated for OpenAI models, approximate for others"


def image_tokens(width: int, height: int, detail: str | None) -> int:
    """OpenAI's count for an image of this size (GPT-4o family)."""
    if detail == "low":
        return 85
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def text_counter() -> tuple[Callable[[str], int], str]:
    """A token counter for text and how it counts."""
    try:
        import tiktoken  # type: ignore[import-not-found]  # optional

        encoding = tiktoken.get_encoding("o200k_base")
    except Exception:  # not installed, or its encoding cannot be loaded
        return (lambda text: math.ceil(len(text) / CHARS_PER_TOKEN)), f"text ~{CHARS_PER_TOKEN} characters per token"
    return (lambda text: len(encoding.encode(text, disallowed_special=()))), "text by tiktoken o200k_base"


class _Line:
    """One role (and protocol): calls, cache hits, tokens of the paid calls."""

    def __init__(self, role: str, protocol: str | None, max_tokens: int | None) -> None:
        self.role, self.protocol, self.max_tokens = role, protocol, max_tokens
        self.calls = self.cache_hits = self.input_tokens = 0

    def add(self, hit: bool, input_tokens: int) -> None:
        self.calls += 1
        if hit:
            self.cache_hits += 1
        else:
            self.input_tokens += input_tokens

    def as_dict(self, prices: dict[str, tuple[float, float]]) -> dict[str, Any]:
        paid = self.calls - self.cache_hits
        typical = paid * TYPICAL_OUTPUT[self.role]
        # No cap on the output is an unbounded high end, unless nothing is paid.
        most = 0 if paid == 0 else None if self.max_tokens is None else paid * self.max_tokens
        cost = None
        if self.role in prices:
            cost = [dollars(prices, self.role, self.input_tokens, typical), None if most is None else dollars(prices, self.role, self.input_tokens, most)]
        return {
            "role": self.role,
            "protocol": self.protocol,
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "paid_calls": paid,
            "input_tokens": self.input_tokens,
            "output_tokens_typical": typical,
            "output_tokens_max": most,
            "cost": cost,
        }


class _Cache:
    """Read-only lookups in the response cache, if there is one."""

    def __init__(self, directory: Path | None, settings: Settings) -> None:
        self.db: ResponseCache | None = None
        self.weights: dict[str, str] | None = None  # None: no model answer can be reused
        if directory is None or not (directory / ResponseCache.FILENAME).is_file():
            return
        try:
            self.db = ResponseCache(directory)
            if settings.model_revision:
                self.weights = {"revision": settings.model_revision}
            elif (run := self.db.peek_run(lineage(settings), settings.rejudge)) is not None:
                self.weights = {"run": run}
        except (CacheError, sqlite3.Error):  # an unusable cache is a miss, as in the run
            self.db = None

    def get(self, layer: str, parts: dict[str, Any]) -> Completion | None:
        if self.db is None:
            return None
        try:
            value = self.db.get(layer, cache_mod.cache_key(parts))
            return Completion.from_json(value) if value is not None else None
        except Exception:  # a damaged entry or database is a miss, as in the run
            return None

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def estimate(settings: Settings, protocols: Sequence[Protocol], source: Source, indices: Sequence[int], directory: Path | None) -> dict[str, Any]:
    """The estimate of a run over the samples ``indices``."""
    count, text_method = text_counter()
    model, judge = endpoints(settings)
    # The sampling each role's calls are sent with (and their API kind), as the engine builds it.
    model_sampling = client.model_sampling(settings)
    judge_sampling = {protocol.name: client.judge_sampling(settings, protocol) for protocol in protocols}
    lines = [_Line("model", None, settings.max_tokens)]
    lines += [_Line("judge", protocol.name, judge_sampling[protocol.name].max_tokens) for protocol in protocols]
    cache = _Cache(directory, settings)
    by_index = {sample.index: sample for sample in source.samples}
    unusable = 0
    try:
        for index in indices:
            sample = by_index.get(index)
            if sample is None or sample.spec is None or sample.problem is not None:
                unusable += 1
                continue
            try:
                size, image = _image(source, sample, settings, keyed=cache.weights is not None)
            except Exception:  # the run fails this sample before any call
                unusable += 1
                continue
            spec = sample.spec
            answer: str | None = None
            uri = digests = None
            if image is not None:
                uri = image.data_uri()
                digests = {uri: image.data_uri_sha256}
            if cache.weights is not None and uri is not None:
                messages = model_messages(uri, spec.instruction)
                hit = cache.get("model", request_key(model, model_sampling.api, messages, model_sampling.requested(), weights=cache.weights, digests=digests))
                answer = printable(hit.text or "") if hit is not None else None
            lines[0].add(answer is not None, MESSAGE_OVERHEAD + count(spec.instruction) + image_tokens(*size, None))
            for protocol, line in zip(protocols, lines[1:]):
                sees = judge_sees_image(settings, protocol)
                prompt = protocol.build_prompt(spec, protocol.judge_answer(answer if answer is not None else ""))
                tokens = MESSAGE_OVERHEAD + count(prompt) + (0 if answer is not None else TYPICAL_OUTPUT["model"])
                tokens += image_tokens(*size, protocol.image_detail) if sees else 0
                for repeat in range(settings.judge_repeats):
                    verdict = None
                    if answer is not None and not settings.rejudge:
                        messages = judge_messages(protocol, prompt, uri if sees else None)
                        sampling = judge_sampling[protocol.name]
                        parts = request_key(judge, sampling.api, messages, sampling.requested(), repeat=repeat, digests=digests)
                        verdict = cache.get("judge", parts)
                    line.add(verdict is not None, tokens)
    finally:
        cache.close()
    return _totals(settings, lines, len(indices), unusable, text_method)


def _image(source: Source, sample: Sample, settings: Settings, keyed: bool) -> tuple[tuple[int, int], PreparedImage | None]:
    """The prepared image's size, and with ``keyed`` the image itself (its
    data URI is in the cache key: it is prepared as the run prepares it)."""
    raw = source.image_bytes(sample.index)
    if keyed:
        image = prepare(raw, settings.image_max_side)
        return (image.width, image.height), image
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as opened:  # the header only: no decode
        width, height = opened.size
    scale = min(1.0, settings.image_max_side / max(width, height))
    return (max(1, round(width * scale)), max(1, round(height * scale))), None


def _totals(settings: Settings, lines: list[_Line], samples: int, unusable: int, text_method: str) -> dict[str, Any]:
    prices = role_prices(settings)
    rows = [line.as_dict(prices) for line in lines]
    cost = None
    if prices:
        low = math.fsum(row["cost"][0] for row in rows if row["cost"] is not None)
        highs = [row["cost"][1] for row in rows if row["cost"] is not None]
        cost = {
            "low": low,
            "high": None if any(h is None for h in highs) else math.fsum(highs),
            "unpriced": [role for role in ("model", "judge") if role not in prices],
        }
    return {
        "samples": samples,
        "unusable": unusable,
        "judge_repeats": settings.judge_repeats,
        "protocols": [line.protocol for line in lines if line.protocol is not None],
        "method": {"text": text_method, "images": IMAGE_NOTE, "typical_output": dict(TYPICAL_OUTPUT), "message_overhead": MESSAGE_OVERHEAD},
        "calls": rows,
        "totals": {
            key: sum(row[key] for row in rows)
            for key in ("calls", "cache_hits", "paid_calls", "input_tokens", "output_tokens_typical")
        }
        | {"output_tokens_max": None if any(row["output_tokens_max"] is None for row in rows) else sum(row["output_tokens_max"] for row in rows)},
        "cost": cost,
    }
