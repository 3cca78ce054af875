"""The built-in mock model and judge: an OpenAI-compatible server on 127.0.0.1.

``--mia-demo`` and ``--mia-model mock`` / ``--mia-judge-model mock`` send
their calls here, so everything but the model runs for real: the openai
client over HTTP, image preparation, the response cache, the protocol's
prompt and parser, the reports.  Nothing leaves the machine and no key is
needed.  (inspect_ai's ``mockllm/model`` plays the same part there.)

One server per pytest process that runs samples (the single process, or each
xdist worker); it starts in ``pytest_configure`` and stops through
``config.add_cleanup``.  Answers depend only on the request, so which worker
answers never matters and the response cache hits on a rerun.

* The model (a request that is not a judge prompt) answers with a few
  sentences chosen by a hash of the instruction and the image, naming the
  image's size and main colour (the image is decoded, so a broken upload shows).
* The judge (a prompt that starts like every protocol's judge prompt) answers
  in the format the prompt asks for: the JSON object of evalscope-json's
  contract, or the one-sentence ``score of component 1: x/W, ..., total
  score: z/T.`` the text protocols parse, with per-component scores drawn
  from a hash of the prompt (between about a third and full marks).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..config.settings import MOCK_MODEL

# Every built-in protocol's judge prompt opens with these words.
_JUDGE_OPENING = "Here is an instruction for a multimodal LLM:"
_JSON_BOUND = re.compile(r'"component_(\d+)": a number >= 0(?:\.0)? and <= (\d+(?:\.\d+)?)')
# The weights sentence: "... is worth 4 scores." / "... each worth 4, 3 and 3 scores." (VLMEvalKit: "worth: 4").
_WEIGHTS = re.compile(r"worth:? (\d+(?:(?:,? and |, )\d+)*) scores")
_TOTAL_OF = re.compile(r"total score: z/(\d+)")
_COLOURS = {
    "red": (200, 40, 40),
    "green": (50, 160, 60),
    "blue": (40, 70, 200),
    "yellow": (220, 200, 50),
    "orange": (230, 130, 40),
    "purple": (130, 60, 160),
    "white": (235, 235, 235),
    "black": (20, 20, 20),
    "grey": (128, 128, 128),
    "brown": (120, 80, 40),
    "sky blue": (120, 180, 230),
}
_SENTENCES = (
    "The scene is calm and evenly lit.",
    "A few simple shapes stand out against the background.",
    "The horizon divides the picture into sky and ground.",
    "Nothing in the picture moves; it feels like a still afternoon.",
    "Bright patches draw the eye towards the centre.",
    "Soft edges give the picture a hand-drawn look.",
)


def _rng(*parts: bytes | str) -> random.Random:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8") if isinstance(part, str) else part)
        digest.update(b"\0")
    return random.Random(int.from_bytes(digest.digest()[:8], "big"))


def _text_and_images(messages: Any) -> tuple[str, list[bytes]]:
    """All text parts of the last message, and the decoded image parts."""
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return "", []
    content = messages[-1].get("content")
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") in ("text", "input_text"):  # chat's part, the Responses API's
            texts.append(str(part.get("text", "")))
        elif part.get("type") in ("image_url", "input_image"):
            image = part.get("image_url")
            url = image.get("url", "") if isinstance(image, dict) else str(image)
            _, _, data = url.partition(",")
            try:
                images.append(base64.b64decode(data, validate=True))
            except ValueError:
                images.append(b"")
    return "\n".join(texts), images


def _describe(data: bytes) -> str:
    """The image's size and nearest named colour, or why it cannot be read."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            mean = im.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    except Exception as exc:  # noqa: BLE001 - any decoder error is a finding to report, not a crash
        return f"I could not read the image ({type(exc).__name__})."
    assert isinstance(mean, tuple)
    colour = min(_COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(_COLOURS[name], mean)))
    return f"The picture is {size[0]} by {size[1]} pixels and mostly {colour}."


def model_answer(instruction: str, images: list[bytes]) -> str:
    """The mock model's answer: deterministic in the instruction and image."""
    rng = _rng(instruction, *images)
    parts = [_describe(data) for data in images]
    parts += rng.sample(_SENTENCES, k=rng.randint(1, 3))
    return "(mock answer) " + " ".join(parts)


def judge_reply(prompt: str) -> str:
    """A verdict in the format ``prompt`` asks for, scores drawn from its hash."""
    rng = _rng(prompt)
    bounds = _JSON_BOUND.findall(prompt)
    if bounds:
        weights = [float(w) for _, w in sorted(bounds, key=lambda b: int(b[0]))]
        values = {f"component_{i}": float(_draw(rng, w)) for i, w in enumerate(weights, start=1)}
        return json.dumps({"reasoning": "mock judge: scores are drawn, not judged", **values})
    found = _WEIGHTS.findall(prompt)
    # The last weights sentence is the protocol's own: the answer it embeds comes earlier.
    weights = [float(w) for w in re.findall(r"\d+", found[-1])] if found else [10.0]
    total_of = _TOTAL_OF.findall(prompt)
    denominator = int(total_of[-1]) if total_of else 10
    scores = [_draw(rng, w) for w in weights]
    total = round(sum(scores) / sum(weights) * denominator) if sum(weights) else 0
    parts = [f"score of component {k}: {s}/{w:g}" for k, (s, w) in enumerate(zip(scores, weights), start=1)]
    parts.append(f"total score: {total}/{denominator}")
    # One sentence, commas between scores and no '.' before its end: the
    # split parser of apple / vlmevalkit reads exactly that.
    return ", ".join(parts) + ". Mock judge: these scores are drawn at random, not judged."


def _draw(rng: random.Random, weight: float) -> int:
    top = int(weight)
    return rng.randint(min(top, max(1, round(top / 3))), top) if top else 0


def reply_for(body: dict[str, Any]) -> str:
    """What the mock says to one chat-completions (or responses) request body."""
    text, images = _text_and_images(body.get("messages", body.get("input")))
    if text.lstrip().startswith(_JUDGE_OPENING):
        return judge_reply(text)
    return model_answer(text, images)


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a burst of new connections
    # overflows it and the client waits out a 1 s SYN retry.
    request_queue_size = 128
    daemon_threads = True


class MockServer:
    """``ThreadingHTTPServer`` on an ephemeral 127.0.0.1 port, in a daemon thread."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="mia-bench-mock", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else ~40 ms per keep-alive round trip (delayed ACK)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": MOCK_MODEL, "object": "model", "owned_by": "pytest-miabench"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        responses = self.path.rstrip("/").endswith("/responses")
        if not responses and not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": f"the mock serves /v1/chat/completions and /v1/responses, not {self.path}", "type": "not_found"}})
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self._send(400, {"error": {"message": f"request body is not a JSON object: {exc}", "type": "invalid_request_error"}})
            return
        text = reply_for(body)
        prompt_tokens, completion_tokens = max(1, len(raw) // 4), max(1, len(text) // 4)
        if responses:
            self._send(
                200,
                {
                    "id": "resp-mock-" + hashlib.sha256(raw).hexdigest()[:12],
                    "object": "response",
                    "created_at": int(time.time()),
                    "model": str(body.get("model", MOCK_MODEL)),
                    "status": "completed",
                    "output": [{"type": "message", "id": "msg-mock", "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                    "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt_tokens + completion_tokens},
                },
            )
            return
        self._send(
            200,
            {
                "id": "chatcmpl-mock-" + hashlib.sha256(raw).hexdigest()[:12],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": str(body.get("model", MOCK_MODEL)),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
            },
        )

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up; nothing to answer
