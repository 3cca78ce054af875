"""What a reply holds: the ``Completion`` the benchmark keeps, read from a
chat completion (``completion_of``) or a Responses API reply
(``response_completion_of``) without trusting its shape (``MalformedReply``),
and chat messages as the Responses API's input (``responses_input``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .scrub import short


class MalformedReply(Exception):
    """An HTTP 200 whose body is not a usable chat completion (retried).

    ``systematic``: the reply is not from a chat-completions API at all (an
    HTML page): every call will get the same, so the breaker counts it."""

    def __init__(self, message: str, *, systematic: bool = False) -> None:
        super().__init__(message)
        self.systematic = systematic


@dataclass
class Completion:
    """The parts of a chat completion the benchmark keeps."""

    text: str | None
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    reasoning: str | None = None  # ``reasoning_content`` / ``reasoning`` of the message

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "reasoning": self.reasoning,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Completion:
        text, reason, reasoning = data.get("text"), data.get("finish_reason"), data.get("reasoning")
        if not all(v is None or isinstance(v, str) for v in (text, reason, reasoning)):
            raise ValueError("cached completion has non-text fields")
        return cls(
            text,
            reason,
            _count(data.get("prompt_tokens")),
            _count(data.get("completion_tokens")),
            _count(data.get("reasoning_tokens")),
            reasoning,
        )


def completion_of(reply: Any) -> Completion:
    """The first choice of a parsed reply.  The SDK builds its objects
    without validation, so nothing is trusted: anything but a choice with a
    message is malformed."""
    choices = getattr(reply, "choices", None)
    if not isinstance(choices, list) or not choices:
        error = (getattr(reply, "model_extra", None) or {}).get("error")
        if error:
            raise MalformedReply(f"reply carries an error instead of choices: {short(str(error))}")
        raise MalformedReply("reply has no choices")
    choice = choices[0]
    message = getattr(choice, "message", None)
    if message is None or isinstance(message, (str, int, float, list)):
        raise MalformedReply("reply's first choice has no message")
    text = getattr(message, "content", None)
    if text is not None and not isinstance(text, str):
        raise MalformedReply(f"message content is {type(text).__name__}, not text")
    extra = getattr(message, "model_extra", None) or {}
    reasoning = extra.get("reasoning_content") or extra.get("reasoning")
    reason = getattr(choice, "finish_reason", None)
    usage = getattr(reply, "usage", None)
    details = getattr(usage, "completion_tokens_details", None)
    return Completion(
        text=text,
        finish_reason=reason if isinstance(reason, str) else None,
        prompt_tokens=_count(getattr(usage, "prompt_tokens", 0)),
        completion_tokens=_count(getattr(usage, "completion_tokens", 0)),
        reasoning_tokens=_count(getattr(details, "reasoning_tokens", 0)),
        reasoning=reasoning if isinstance(reasoning, str) else None,
    )


def responses_input(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as the Responses API's input items, part for part and
    in order: text parts become ``input_text``, image parts ``input_image``
    (the data URI and its detail; ``auto``, the API's default, when chat
    left it to the server), text content stays the same string, and every
    role (system included) stays a message of that role."""
    items = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [_input_part(part) for part in content]
        items.append({"role": message["role"], "content": content})
    return items


def _input_part(part: Mapping[str, Any]) -> dict[str, Any]:
    if part["type"] == "text":
        return {"type": "input_text", "text": part["text"]}
    if part["type"] == "image_url":
        image = part["image_url"]
        return {"type": "input_image", "image_url": image["url"], "detail": image.get("detail") or "auto"}
    raise ValueError(f"no Responses API form for a message part of type {part['type']!r}")


# A response's ``incomplete_details.reason`` as chat's finish_reason says it.
_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


def response_completion_of(reply: Any) -> Completion:
    """The answer of a parsed Responses API reply (``responses.create``).
    As in ``completion_of`` nothing is trusted: a reply that is not a
    finished response with a list of output items is malformed."""
    output = getattr(reply, "output", None)
    if not isinstance(output, list) or getattr(reply, "object", "response") != "response":
        error = getattr(reply, "error", None) or (getattr(reply, "model_extra", None) or {}).get("error")
        if error:
            raise MalformedReply(f"reply carries an error instead of output: {short(str(error))}")
        raise MalformedReply("reply is not a response with a list of output items")
    status = getattr(reply, "status", None)
    if status not in ("completed", "incomplete"):
        error = getattr(reply, "error", None)
        raise MalformedReply(f"response status {short(str(status), 40)}" + (f": {short(str(error))}" if error else ""))
    if status == "completed":
        reason: str | None = "stop"
    else:
        why = _part(getattr(reply, "incomplete_details", None), "reason")
        reason = _INCOMPLETE_REASONS.get(why, why) if isinstance(why, str) else "incomplete"
    usage = getattr(reply, "usage", None)
    return Completion(
        text=_output_text(output, completed=status == "completed"),
        finish_reason=reason,
        prompt_tokens=_count(getattr(usage, "input_tokens", 0)),
        completion_tokens=_count(getattr(usage, "output_tokens", 0)),
        reasoning_tokens=_count(getattr(getattr(usage, "output_tokens_details", None), "reasoning_tokens", 0)),
        reasoning="\n\n".join(_texts(output, "reasoning", "summary", "summary_text")) or None,
    )


def _output_text(output: list[Any], *, completed: bool) -> str | None:
    """What the SDK's ``Response.output_text`` gives, every ``output_text``
    part of every message joined, read here item by item: the SDK's property
    fails on an item type its version does not know.  None for a message
    without text: a refusal, or an incomplete response whose tokens went to
    reasoning (as chat's empty ``length`` reply); a completed response with
    neither text nor refusal is malformed."""
    texts = _texts(output, "message", "content", "output_text")
    if texts:
        return "".join(texts)
    if completed and not _texts(output, "message", "content", "refusal", field="refusal"):
        raise MalformedReply("completed response has no output text")
    return None


def _texts(output: list[Any], item_type: str, parts_field: str, part_type: str, field: str = "text") -> list[str]:
    """The ``field`` of every ``part_type`` part of every ``item_type`` item;
    such a part without text is malformed."""
    found = []
    for item in output:
        if _part(item, "type") != item_type:
            continue
        parts = _part(item, parts_field)
        for part in parts if isinstance(parts, list) else ():
            if _part(part, "type") != part_type:
                continue
            if not isinstance(text := _part(part, field), str):
                raise MalformedReply(f"{part_type} part of the reply holds no text")
            found.append(text)
    return found


def _part(obj: Any, name: str) -> Any:
    """A field of an item the SDK built without validation: a model, or a
    plain dict where the union of item types did not match."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
