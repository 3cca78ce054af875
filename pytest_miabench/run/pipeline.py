"""One sample, start to end: image -> model answer -> each protocol's judge verdict(s) -> score.

``run_sample`` is the whole story of a sample and reads top to bottom.  It
fills the sample's record as it goes, so whatever was obtained (an answer
whose judge failed, the calls a cancelled sample already paid for) is kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..calls import cache as cache_mod
from ..calls.budget import Budget
from ..calls.cache import AsyncCache
from ..calls.caller import Caller, CallError, CallStats, EndpointDown
from ..calls.endpoint import endpoints
from ..calls.replies import Completion
from ..config.settings import Settings
from ..config.text import printable
from ..data.images import ImageError, PreparedImage
from ..data.samples import Sample, SampleDataError
from ..protocols import thinking
from ..protocols.base import SCORED, Protocol, SampleSpec, Verdict
from ..result import Component, Role, SampleRecord, blank_result, blank_verdict
from .request import judge_messages, model_messages, request_key

ImageSource = Callable[[Sample], Awaitable[tuple[PreparedImage, "str | None"]]]


class SampleFailure(Exception):
    """The sample could not be run.  ``record`` keeps whatever was obtained;
    ``fatal`` is set when the failure should end the session (a breaker)."""

    def __init__(self, stage: str, message: str, record: SampleRecord, fatal: bool = False) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message
        self.record = record
        self.fatal = fatal


@dataclass(frozen=True)
class Judging:
    """One protocol's judging: the protocol, whether its judge sees the
    image, and a judge caller with the protocol's sampling settings."""

    protocol: Protocol
    judge_image: bool
    judge: Caller


@dataclass(frozen=True)
class Context:
    """What every sample's pipeline shares (one per pytest process)."""

    settings: Settings
    judgings: tuple[Judging, ...]  # every listed protocol, the headline first
    model: Caller
    cache: AsyncCache | None
    image: ImageSource
    # Whose answers the model's cache entries are (journal.py): {"revision": REV}, {"run": ID} or {}.
    weights: dict[str, str] = field(default_factory=dict)
    # --mia-budget-tokens / --mia-budget-usd: consulted before each call starts.
    budget: Budget | None = None


class BudgetSpent(SampleFailure):
    """A call of the sample was not started: the run's budget is spent
    (``spent`` says how, for the run's stop)."""

    def __init__(self, message: str, record: SampleRecord, spent: str) -> None:
        super().__init__("budget", message, record)
        self.spent = spent


def lineage(settings: Settings) -> str:
    """One model identity without a revision: where it is served and its
    name (journal.py keeps its runs; the model's ``request_key`` holds the run)."""
    model, _ = endpoints(settings)
    text = json.dumps({"url": model.cache_url, "model": model.model}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def new_record(sample: Sample) -> SampleRecord:
    """The record of a sample before anything was obtained (status ``failed``)."""
    spec = sample.spec
    components: list[Component] = []
    if spec is not None:
        components = [
            {"text": text, "type": ctype, "weight": weight, "score": None}
            for text, ctype, weight in zip(spec.components, spec.component_types, spec.weights)
        ]
    record = blank_result(sample.index, sample.type, components)
    record["instruction"] = spec.instruction if spec is not None else None
    return record


async def run_sample(ctx: Context, sample: Sample, record: SampleRecord) -> SampleRecord:
    """Run one sample; returns its record or raises ``SampleFailure``."""
    started = time.perf_counter()
    record["protocols"] = {judging.protocol.name: blank_verdict() for judging in ctx.judgings}
    try:
        if sample.problem is not None or sample.spec is None:
            raise SampleFailure("dataset", sample.problem or f"row {sample.index}: unusable", record)
        spec = sample.spec
        image = await _image(ctx, sample, record)
        # One answer, whatever the number of protocols: only the judge differs.
        answer = await _model_answer(ctx, spec, image, record)
        # The judge gets U+FFFD for a lone surrogate: a request body is UTF-8.
        text = printable(answer.text or "")
        if len(ctx.judgings) == 1:
            await _judge(ctx, ctx.judgings[0], spec, text, image, record, headline=True)
        else:
            await _judge_all(ctx, spec, text, image, record)
    except SampleFailure as failure:
        record["reason"], record["failed_stage"] = failure.message, failure.stage
        _explain_failed_protocols(record, failure.message)
        raise
    except Exception as exc:
        # A bug or an unforeseen reply must not lose the sample: it is
        # reported as failed with the cause, and the run goes on.
        message = f"row {sample.index}: unexpected {type(exc).__name__}: {exc}"
        record["reason"], record["failed_stage"] = message, "internal"
        _explain_failed_protocols(record, message)
        raise SampleFailure("internal", message, record) from exc
    finally:
        record["seconds"] = round(time.perf_counter() - started, 4)
    return record


def _explain_failed_protocols(record: SampleRecord, message: str) -> None:
    """A protocol left without a verdict (the model failed, say) says why."""
    for entry in record["protocols"].values():
        if entry["status"] == "failed" and not entry["reason"]:
            entry["reason"] = message


async def _judge(
    ctx: Context, judging: Judging, spec: SampleSpec, answer: str, image: PreparedImage, record: SampleRecord, headline: bool
) -> None:
    """One protocol judges the answer; its verdict goes into the record (the
    headline's also into the record's own fields)."""
    verdicts = await _verdicts(ctx, judging, spec, judging.protocol.judge_answer(answer), image, record, headline)
    verdict = combine(verdicts)
    entry = record["protocols"][judging.protocol.name]
    entry["status"], entry["score"], entry["reason"] = verdict.status, verdict.score, verdict.reason
    entry["components"], entry["metrics"] = list(verdict.components), dict(verdict.metrics)
    if headline:
        _apply(record, verdict)


async def _judge_all(ctx: Context, spec: SampleSpec, answer: str, image: PreparedImage, record: SampleRecord) -> None:
    """Every protocol judges at once.  One protocol's failed judge call
    does not stop the others: their verdicts are kept, and the sample then
    fails naming the protocol(s) whose call failed."""
    prefix = f"row {record['index']}: "

    async def one(position: int, judging: Judging) -> SampleFailure | None:
        try:
            await _judge(ctx, judging, spec, answer, image, record, headline=position == 0)
        except SampleFailure as failure:
            record["protocols"][judging.protocol.name]["reason"] = failure.message
            return failure
        except Exception as exc:  # a protocol's bug costs that protocol, not the others
            message = f"{prefix}unexpected {type(exc).__name__}: {exc}"
            record["protocols"][judging.protocol.name]["reason"] = message
            return SampleFailure("internal", message, record)
        return None

    outcomes = await asyncio.gather(*(one(position, judging) for position, judging in enumerate(ctx.judgings)))
    failed = [(judging.protocol.name, failure) for judging, failure in zip(ctx.judgings, outcomes) if failure is not None]
    if not failed:
        return
    names = ", ".join(name for name, _ in failed)
    causes = "; ".join(f"{name}: {failure.message.removeprefix(prefix)}" for name, failure in failed)
    stages = {failure.stage for _, failure in failed}
    spent = next((failure.spent for _, failure in failed if isinstance(failure, BudgetSpent)), None)
    if spent is not None:
        # A protocol's judge call refused by the budget: the run stops, as for the headline.
        raise BudgetSpent(f"{prefix}{'; '.join(f'{name}: ' + f.message.removeprefix(prefix) for name, f in failed)}", record, spent)
    stage = stages.pop() if len(stages) == 1 else "judge"
    kept = len(ctx.judgings) - len(failed)
    message = (
        f"{prefix}judge failed under protocol{'s' if len(failed) > 1 else ''} {names} "
        f"({kept} other protocol{'s' if kept != 1 else ''} judged it): {causes}"
    )
    raise SampleFailure(stage, message, record, fatal=any(failure.fatal for _, failure in failed))


async def _image(ctx: Context, sample: Sample, record: SampleRecord) -> PreparedImage:
    try:
        image, thumbnail = await ctx.image(sample)
    except (ImageError, SampleDataError) as exc:
        text, prefix = str(exc), f"row {sample.index}: "
        raise SampleFailure("image", text if text.startswith(prefix) else f"{prefix}image: {text}", record) from None
    record["image"] = {
        "mime": image.mime,
        "width": image.width,
        "height": image.height,
        "format": image.source_format,
        "reencoded": image.reencoded,
        "bytes": len(image.data),
        "sha256": image.source_sha256,
    }
    record["thumbnail"] = thumbnail
    return image


async def _model_answer(ctx: Context, spec: SampleSpec, image: PreparedImage, record: SampleRecord) -> Completion:
    caller = ctx.model
    uri = image.data_uri()
    messages = model_messages(uri, spec.instruction)

    def key() -> dict[str, Any]:
        digests = {uri: image.data_uri_sha256}
        return request_key(caller.endpoint, caller.api, messages, caller.sampling.requested(), weights=ctx.weights, digests=digests)

    answer = await _cached_call(ctx, "model", caller, key, messages, record)
    record["response"] = answer.text
    record["finish_reason"] = answer.finish_reason
    record["reasoning"] = answer.reasoning if answer.reasoning is not None else thinking.first_block(answer.text or "")
    return answer


async def _verdicts(
    ctx: Context, judging: Judging, spec: SampleSpec, answer: str, image: PreparedImage, record: SampleRecord, headline: bool
) -> list[Verdict]:
    """One protocol's verdicts: ``judge_repeats`` independent ones, asked at once."""
    prompt = judging.protocol.build_prompt(spec, answer)
    judge_image = image if judging.judge_image else None
    pairs = await asyncio.gather(
        *(_verdict(ctx, judging, spec, prompt, judge_image, r, record) for r in range(ctx.settings.judge_repeats))
    )
    replies = [reply for reply, _ in pairs]
    record["protocols"][judging.protocol.name]["judge_reply"] = replies[0]
    if headline:
        record["judge_reply"] = replies[0]
        if len(replies) > 1:
            record["judge_replies"] = replies
            record["judge_scores"] = [verdict.score for _, verdict in pairs]
    return [verdict for _, verdict in pairs]


async def _verdict(
    ctx: Context, judging: Judging, spec: SampleSpec, prompt: str, image: PreparedImage | None, repeat: int, record: SampleRecord
) -> tuple[str | None, Verdict]:
    """One verdict, re-asking up to ``judge_retries`` times while the reply
    cannot be parsed.  Each re-ask and repeat is its own cache entry."""
    caller, protocol = judging.judge, judging.protocol
    uri = digests = None
    if image is not None:
        uri = image.data_uri()
        digests = {uri: image.data_uri_sha256}
    messages = judge_messages(protocol, prompt, uri)
    reply: str | None = None
    verdict: Verdict | None = None
    for reask in range(ctx.settings.judge_retries + 1):
        if reask:
            record["judge_reasks"] = record.get("judge_reasks", 0) + 1

        def key(reask: int = reask) -> dict[str, Any]:
            return request_key(caller.endpoint, caller.api, messages, caller.sampling.requested(), repeat=repeat, reask=reask, digests=digests)

        completion = await _cached_call(ctx, "judge", caller, key, messages, record, read_cache=not ctx.settings.rejudge)
        reply = completion.text
        verdict = protocol.parse(spec, reply)
        if verdict.status == SCORED:
            break
    assert verdict is not None  # judge_retries >= 0: the loop ran
    return reply, verdict


async def _cached_call(
    ctx: Context,
    layer: Role,
    caller: Caller,
    key_parts: Callable[[], dict[str, Any]],
    messages: list[dict[str, Any]],
    record: SampleRecord,
    read_cache: bool = True,
) -> Completion:
    """A call answered from the cache when it holds the key, else from the API
    (and then stored).  Keys are hashed only when there is a cache."""
    usage = record["usage"][layer]
    key = cache_mod.cache_key(key_parts()) if ctx.cache is not None else ""
    if ctx.cache is not None and read_cache:
        hit = await ctx.cache.get(layer, key)
        if hit is not None:
            try:
                completion = Completion.from_json(hit)
            except (ValueError, TypeError):
                completion = None  # an entry of another shape is a miss
            if completion is not None:
                record["cached"][layer] = True
                usage["cached_prompt_tokens"] += completion.prompt_tokens
                usage["cached_completion_tokens"] += completion.completion_tokens
                return completion
    if ctx.budget is not None and (spent := await ctx.budget.check()) is not None:
        # No new call once the budget is spent; what the sample obtained stays in its record.
        raise BudgetSpent(f"row {record['index']}: not run to the end: {spent}; no {layer} call was started", record, spent)
    stats = CallStats()
    try:
        completion = await caller.complete(messages, stats)
    except CallError as exc:
        down = isinstance(exc, EndpointDown)
        raise SampleFailure("endpoint" if down else layer, f"row {record['index']}: {exc}", record, fatal=down) from None
    finally:
        # Every attempt sent may be paid for, even one that failed.
        record["calls"][layer] += stats.attempts
        record["retries"] += max(0, stats.attempts - 1 - stats.resent)
        record["rate_limited"] = record.get("rate_limited", 0) + stats.rate_limited
        deviations = record["sampling_deviations"]
        for deviation in caller.sampling.deviations:
            entry = f"{caller.endpoint.role}: {deviation}"
            if entry not in deviations:
                deviations.append(entry)
    usage["prompt_tokens"] += completion.prompt_tokens
    usage["completion_tokens"] += completion.completion_tokens
    usage["reasoning_tokens"] += completion.reasoning_tokens
    if ctx.cache is not None:
        await ctx.cache.put(layer, key, completion.to_json())
    if ctx.budget is not None:
        await ctx.budget.spend(layer, completion.prompt_tokens, completion.completion_tokens)
    return completion


def _apply(record: SampleRecord, verdict: Verdict) -> None:
    record["status"] = verdict.status
    record["score"] = verdict.score
    record["reason"] = verdict.reason
    record["metrics"] = dict(verdict.metrics)
    for component, value in zip(record["components"], verdict.components):
        component["score"] = value


def combine(verdicts: list[Verdict]) -> Verdict:
    """Several verdicts on one response (``--mia-judge-repeats``) -> one:
    the mean of the usable ones.  With none usable, the first one stands."""
    if len(verdicts) == 1:
        return verdicts[0]
    usable = [v for v in verdicts if v.score is not None]
    if not usable:
        return verdicts[0]

    def mean(values: list[float]) -> float:
        return math.fsum(values) / len(values)

    components = []
    for i in range(len(usable[0].components)):
        values = [c for v in usable if i < len(v.components) and (c := v.components[i]) is not None]
        components.append(mean(values) if values else None)
    keys = sorted({key for v in usable for key in v.metrics})
    metrics = {key: mean([v.metrics[key] for v in usable if key in v.metrics]) for key in keys}
    status = SCORED if any(v.status == SCORED for v in usable) else usable[0].status
    score = mean([v.score for v in usable if v.score is not None])
    dropped = len(verdicts) - len(usable)
    reason = f"{dropped} of {len(verdicts)} verdicts unusable" if dropped else ""
    return Verdict(status, score, tuple(components), metrics, reason)
