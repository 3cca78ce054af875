"""The per-sample record an item produces, and the words every room uses
about a run (its roles, the demo and mock warnings).  The run's summary and
the JSON report made from the records are described in summary.py.

Plain dicts of builtins on purpose: a record crosses the xdist channel, which
only serializes builtin types, and records and the report are written to
JSON as they are.  The TypedDicts here only describe them to the type
checker; nothing is converted at runtime.

This module is the bottom layer (see ``.importlinter``): it imports nothing
from the package, so every other module may use these types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypedDict

#: A --mia-demo run's plain statement, in the terminal and both reports.
DEMO_WARNING = (
    "DEMO RUN: the built-in demo set (20 real MIA-Bench instructions, drawn images) answered and graded by the "
    "built-in mock model and judge. The score is drawn at random and means nothing about any model."
)


def mock_warning(roles: Sequence[str]) -> str:
    """What a run with ``--mia-model mock`` / ``--mia-judge-model mock`` says."""
    who = " and ".join(f"the {role}" for role in roles)
    return (
        f"MOCK: {who} {'is' if len(roles) == 1 else 'are'} the built-in mock on 127.0.0.1 (a dry run: nothing was "
        "spent). The score means nothing about any model."
    )

Role = Literal["model", "judge"]
ROLES: tuple[Role, Role] = ("model", "judge")


# -- the per-sample record -------------------------------------------------


class Component(TypedDict):
    """One part of a layered instruction and the score the judge gave it."""

    text: str
    type: str
    weight: int
    score: float | None


class ImageInfo(TypedDict):
    """The image as it was sent to the model."""

    mime: str
    width: int
    height: int
    format: str  # the source format (JPEG, PNG, ...), before any re-encoding
    reencoded: bool
    bytes: int
    sha256: str  # of the image as stored in the dataset (before any re-encoding): what a baseline is matched on


class TokenUsage(TypedDict):
    """A role's tokens for one sample: of this run's API calls, and of answers
    served from the cache."""

    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int  # part of completion_tokens (usage.completion_tokens_details)
    cached_prompt_tokens: int
    cached_completion_tokens: int


class RoleFlags(TypedDict):
    model: bool
    judge: bool


class RoleCounts(TypedDict):
    model: int
    judge: int


class RoleUsage(TypedDict):
    model: TokenUsage
    judge: TokenUsage


class ProtocolVerdict(TypedDict):
    """One protocol's verdict on a sample.  The headline protocol's is also
    the record's own ``status``/``score``/``components``/``judge_reply``."""

    status: str  # a verdict status, or "failed": this protocol's judge call failed
    score: float | None
    components: list[float | None]  # per component position
    judge_reply: str | None
    reason: str
    metrics: dict[str, float]


def blank_verdict() -> ProtocolVerdict:
    """A protocol's verdict before (or without) a judge reply."""
    return {"status": "failed", "score": None, "components": [], "judge_reply": None, "reason": "", "metrics": {}}


class _SampleRecordKeys(TypedDict):
    # Always present: ``blank_result`` sets every one of them.
    index: int
    type: str
    status: str  # a verdict status (protocols.base) or "failed"
    score: float | None
    components: list[Component]
    response: str | None
    finish_reason: str | None
    reasoning: str | None  # the model's thinking text, when the server returns it apart
    judge_reply: str | None
    reason: str
    failed_stage: str | None  # dataset, image, model, judge, internal, worker
    cached: RoleFlags
    calls: RoleCounts
    retries: int
    usage: RoleUsage
    sampling_deviations: list[str]  # sampling settings the server did not honour
    instruction: str | None
    image: ImageInfo | None
    thumbnail: str | None  # a data: URI, made only for the HTML report
    seconds: float


class SampleRecord(_SampleRecordKeys, total=False):
    """What one sample produced: an item's result, also for a failed sample."""

    metrics: dict[str, float]  # the sample's share of the protocol's reference metrics
    protocols: dict[str, ProtocolVerdict]  # every listed protocol's verdict, the headline's first
    judge_replies: list[str | None]  # every reply, with --mia-judge-repeats > 1
    judge_scores: list[float | None]  # the score of each of those replies
    judge_reasks: int  # re-asks after unreadable judge replies
    rate_limited: int  # HTTP 429 replies met on the way
    concurrency_limit: int  # the model endpoint's adaptive limit when the sample ended


def blank_result(index: int, type_: str, components: list[Component] | None = None) -> SampleRecord:
    """A result with nothing obtained yet (status ``failed`` until judged)."""
    return {
        "index": index,
        "type": type_,
        "status": "failed",
        "score": None,
        "components": components or [],
        "response": None,
        "finish_reason": None,
        "reasoning": None,
        "judge_reply": None,
        "reason": "",
        "failed_stage": None,
        "metrics": {},
        "cached": {"model": False, "judge": False},
        "calls": {"model": 0, "judge": 0},
        "retries": 0,
        "usage": {"model": _no_tokens(), "judge": _no_tokens()},
        "sampling_deviations": [],
        "instruction": None,
        "image": None,
        "thumbnail": None,
        "seconds": 0.0,
    }


def is_finished(record: SampleRecord) -> bool:
    """The sample's pipeline ran to its end: judged, or failed at a named
    stage.  A record still ``failed`` with no stage was cut short."""
    return record["status"] != "failed" or record["failed_stage"] is not None


def _no_tokens() -> TokenUsage:
    return {"prompt_tokens": 0, "completion_tokens": 0, "reasoning_tokens": 0, "cached_prompt_tokens": 0, "cached_completion_tokens": 0}

