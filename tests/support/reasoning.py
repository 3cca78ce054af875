"""Scripts that make the loopback server behave like OpenAI's reasoning models.

o1/o3/o4 and gpt-5 models answer HTTP 400 to ``max_tokens`` and to any
temperature but the default, with the error objects OpenAI sends.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from support.server import Reply, Request, Script

OPENAI_REASONING = re.compile(r"^(o1|o3|o4|gpt-5)")

MAX_TOKENS_ERROR = {
    "message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
    "type": "invalid_request_error",
    "param": "max_tokens",
    "code": "unsupported_parameter",
}
TEMPERATURE_ERROR = {
    "message": "Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) value is supported.",
    "type": "invalid_request_error",
    "param": "temperature",
    "code": "unsupported_value",
}


def strict_reasoning(inner: Script, is_reasoning: Callable[[str], bool] = lambda name: bool(OPENAI_REASONING.match(name))) -> Script:
    """Refuse what a reasoning model refuses; pass everything else to ``inner``."""

    def script(request: Request) -> Reply:
        if is_reasoning(request.model):
            body = request.json
            if "max_tokens" in body:
                return Reply(status=400, error=MAX_TOKENS_ERROR)
            if "temperature" in body and body["temperature"] != 1:
                return Reply(status=400, error=TEMPERATURE_ERROR)
        return inner(request)

    return script
