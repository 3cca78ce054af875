"""Cache keys are the request as sent: what a protocol, a message or the
cache's schema changes is asked again, never served from an old entry; and
the estimate counts the hits the run then gets."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support import data
from support.server import OpenAIServer, Reply, Request

from conftest import Bench
from pytest_miabench.calls.cache import ResponseCache, cache_key
from pytest_miabench.calls.endpoint import Endpoint
from pytest_miabench.calls.replies import Completion
from pytest_miabench.data.images import prepare
from pytest_miabench.run.request import canonical, model_messages, request_key

URI = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
OTHER_URI = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
ENDPOINT = Endpoint("judge", "judge", "http://127.0.0.1:9/v1", "OPENAI_API_KEY")


def _key(messages: list[dict[str, Any]], **extra: Any) -> str:
    return cache_key(request_key(ENDPOINT, "chat", messages, {"temperature": 0.0}, **extra))


def _text_then_image(uri: str = URI) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "grade"}, {"type": "image_url", "image_url": {"url": uri, "detail": "low"}}]}]


# -- the canonical form -------------------------------------------------------


def test_the_canonical_form_holds_each_image_as_the_sha256_of_its_data_uri() -> None:
    form = request_key(ENDPOINT, "chat", model_messages(URI, "Describe it."), {})
    text = json.dumps(form)
    assert "base64" not in text  # the key stays small
    part = form["messages"][0]["content"][0]
    assert part == {"type": "image_url", "image_url": {"url": {"data_uri_sha256": hashlib.sha256(URI.encode()).hexdigest()}}}
    assert form["messages"][0]["content"][1] == {"type": "text", "text": "Describe it."}
    assert (form["api"], form["url"], form["model"]) == ("chat", "http://127.0.0.1:9/v1", "judge")
    # Text is kept as it is, even text that merely mentions a data URI.
    assert canonical({"text": "see data:image/png;base64,AAAA"}) == {"text": "see data:image/png;base64,AAAA"}


def test_an_image_hashed_once_gives_the_key_hashing_its_data_uri_gives() -> None:
    """The pipeline passes each image's ``data_uri_sha256`` so a key does not
    hash the image again (per repeat, re-ask, protocol): the same key, and
    the digest given is the one used."""
    image = prepare(data.image_bytes("png", 64, 48), 2048)
    uri = image.data_uri()
    messages = model_messages(uri, "Describe it.")
    assert image.data_uri_sha256 == hashlib.sha256(uri.encode()).hexdigest()
    assert _key(messages, digests={uri: image.data_uri_sha256}) == _key(messages)
    given = request_key(ENDPOINT, "chat", messages, {}, digests={uri: "given"})
    assert given["messages"][0]["content"][0]["image_url"]["url"] == {"data_uri_sha256": "given"}


def test_the_key_ignores_dict_order_and_follows_part_order_images_and_indices() -> None:
    messages = _text_then_image()
    reordered = [{"content": [{"text": "grade", "type": "text"}, {"image_url": {"detail": "low", "url": URI}, "type": "image_url"}], "role": "user"}]
    assert _key(reordered) == _key(messages)
    swapped = [{"role": "user", "content": list(reversed(messages[0]["content"]))}]
    with_system = [{"role": "system", "content": "Be strict."}, *messages]
    others = [
        _key(swapped),
        _key(with_system),
        _key(_text_then_image(OTHER_URI)),
        _key(messages, repeat=1),
        _key(messages, reask=1),
        _key(messages, weights={"revision": "r1"}),
        cache_key(request_key(ENDPOINT, "responses", messages, {"temperature": 0.0})),
        cache_key(request_key(ENDPOINT, "chat", messages, {"temperature": 0.5})),
    ]
    assert len({_key(messages), *others}) == len(others) + 1


def test_a_changed_part_order_or_an_added_system_message_is_a_miss(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    try:
        messages = _text_then_image()
        cache.put("judge", _key(messages), Completion("total score: 9/10", "stop").to_json())
        assert cache.get("judge", _key(json.loads(json.dumps(messages)))) is not None  # the same request: a hit
        assert cache.get("judge", _key([{"role": "system", "content": "Be strict."}, *messages])) is None
        assert cache.get("judge", _key([{"role": "user", "content": list(reversed(messages[0]["content"]))}])) is None
    finally:
        cache.close()


# -- end to end ------------------------------------------------------------------

_PROTOCOL = """
    from pytest_miabench.protocols import Protocol, Verdict, SCORED

    class Mine(Protocol):
        name = "mine"
        prompt_version = "mine-1"  # the same in both runs
        judge_sees_image = True

        def build_prompt(self, sample, response):
            return f"Grade: {{sample.instruction}}\\n{{response}}"

        def parse(self, sample, reply):
            return Verdict(SCORED, 1.0, tuple(1.0 for _ in sample.components), {{"mine": 1.0}})
    {override}
    def pytest_miabench_register_protocols():
        return [Mine]
"""

_OVERRIDES = {
    # A protocol of the user's that puts its own instructions first...
    "added part": """
        def judge_content(self, prompt, image_uri):
            return [{"type": "text", "text": "Answer in English."}, *super().judge_content(prompt, image_uri)]
    """,
    # ... or sends the image before the prompt.
    "image first": """
        def judge_content(self, prompt, image_uri):
            return list(reversed(super().judge_content(prompt, image_uri)))
    """,
}


def _protocol(override: str = "") -> str:
    return textwrap.dedent(_PROTOCOL).format(override=textwrap.indent(textwrap.dedent(override), "    "))


@pytest.mark.parametrize(("override", "xdist"), [("added part", ()), ("image first", ("-n", "2"))])
def test_a_protocol_that_changes_its_judge_content_is_not_served_the_old_verdicts(bench: Bench, override: str, xdist: tuple[str, ...]) -> None:
    bench.server.script = lambda r: Reply("fine") if r.role == "judge" else Reply("an answer")
    args = ("--mia-protocol=mine", "--mia-limit=3", "--mia-model-revision=r1")
    bench.pytester.makeconftest(_protocol())
    bench.run(*args).assert_outcomes(passed=3)
    assert [r.role for r in bench.server.requests].count("judge") == 3
    bench.server.requests.clear()

    bench.pytester.makeconftest(_protocol(_OVERRIDES[override]))
    bench.run(*xdist, *args).assert_outcomes(passed=3)
    roles = [r.role for r in bench.server.requests]
    # The model's answers are the same requests (cached); every verdict is asked again.
    assert (roles.count("model"), roles.count("judge")) == (0, 3)
    first = bench.server.by_role("judge")[0].messages[0]["content"]
    assert first[0]["type"] == ("text" if override == "added part" else "image_url") and len(first) == (3 if override == "added part" else 2)
    bench.server.requests.clear()
    bench.run(*xdist, *args).assert_outcomes(passed=3)
    assert bench.server.requests == []  # and the new requests' verdicts are cached in turn


def _schema_2_model_key(server: OpenAIServer, raw_image: bytes, instruction: str) -> str:
    """How schema 2 keyed a model answer (--mia-model-revision=r1, default
    sampling): the image's hash and the instruction, not the messages."""
    image = prepare(raw_image, 2048)
    endpoint = Endpoint("model", "vlm", server.url, "OPENAI_API_KEY")
    parts = {
        "v": 2,
        "url": endpoint.cache_url,
        "model": "vlm",
        "weights": {"revision": "r1"},
        "settings": {},
        "image": {"sha256": image.sha256, "mime": image.mime},
        "text": instruction,
    }
    return cache_key(parts)


def test_an_entry_of_the_old_schema_is_a_miss_and_the_endpoint_is_asked(
    pytester: pytest.Pytester, server: OpenAIServer, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    raw = data.image_bytes("png", 40, 30, seed=3)
    bench = Bench(pytester, server, data.write_parquet(tmp_path / "one.parquet", rows[:1], [raw]))
    old = ResponseCache(pytester.path / "old-cache")
    try:
        old.put("model", _schema_2_model_key(server, raw, rows[0]["instruction"]), Completion("STALE answer", "stop").to_json())
    finally:
        old.close()

    bench.run("--mia-model-revision=r1", "--mia-cache-dir=old-cache").assert_outcomes(passed=1)
    assert [r.role for r in server.requests] == ["model", "judge"]
    assert bench.report()["samples"][0]["response"] != "STALE answer"
    assert bench.report()["samples"][0]["cached"] == {"model": False, "judge": False}


def test_the_estimate_counts_the_hits_the_run_then_gets(bench: Bench) -> None:
    """Protocols whose judge sees the image, repeats, and a judge setting
    that changes only some requests: each row's paid calls are the calls
    the run then makes."""
    bench.server.script = lambda r: Reply("total score: 7/10") if r.role == "judge" else Reply(f"Answer to: {r.text[:40]}")
    base = ("-p", "no:randomly", "--mia-model-revision=r1", "--mia-protocol=evalscope,apple")
    bench.run(*base, "--mia-judge-repeats=2").assert_outcomes(passed=6)
    for extra in (("--mia-judge-repeats=3",), ("--mia-judge-repeats=2", "--mia-protocol=apple,vlmevalkit")):
        bench.run(*base, *extra, "--mia-estimate")
        rows = {(row["role"], row["protocol"]): row for row in bench.report()["estimate"]["calls"]}
        assert rows[("model", None)]["cache_hits"] == 6
        bench.server.requests.clear()
        bench.run(*base, *extra)
        for (role, protocol), row in rows.items():
            asked = [r for r in bench.server.requests if r.role == role and (protocol is None or _protocol_of(r) == protocol)]
            assert len(asked) == row["paid_calls"], (extra, role, protocol)
        assert sum(row["paid_calls"] for row in rows.values()) > 0


def _protocol_of(request: Request) -> str:
    """Which built-in protocol a judge request is: each asks its own max_tokens."""
    return {4096: "evalscope", 2000: "apple", 2048: "vlmevalkit"}[request.json["max_tokens"]]
