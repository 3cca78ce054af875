"""Each protocol's class attributes are the reference defaults (§2), and the
judge message content has the reference's shape."""

from __future__ import annotations

import importlib

import pytest

from pytest_miabench.protocols import DROPPED, EXCLUDED, ZERO, SampleSpec, builtin_protocols

EXPECTED = {
    # name: (sees image, detail, temperature, max_tokens, failure status, headline)
    "apple": (True, None, None, 2000, DROPPED, "total_score"),
    "vlmevalkit": (True, "low", 0.0, 2048, DROPPED, "total_score"),
    "lmms-eval": (False, None, 0.0, 1024, ZERO, "total_score"),
    "evalscope": (False, None, 0.0, 4096, ZERO, "total_score"),
    "evalscope-json": (False, None, 0.0, 4096, EXCLUDED, "judge_score"),
}
URI = "data:image/jpeg;base64,AAAA"


def test_registry_names() -> None:
    protocols = builtin_protocols()
    assert list(protocols) == ["evalscope", "evalscope-json", "lmms-eval", "vlmevalkit", "apple"]
    assert all(cls.name == name for name, cls in protocols.items())


@pytest.mark.parametrize("name", list(EXPECTED))
def test_class_attributes(name: str) -> None:
    cls = builtin_protocols()[name]
    # The failure status is what the parser gives a reply with nothing to read.
    unreadable = cls().parse(SPEC, "I cannot grade this.").status
    actual = (cls.judge_sees_image, cls.image_detail, cls.temperature, cls.max_tokens, unreadable, cls.headline)
    assert actual == EXPECTED[name]
    module = importlib.import_module(cls.__module__)
    assert module.__name__.startswith("pytest_miabench.protocols.")
    assert module.__doc__ and cls.__doc__


def test_prompt_versions_are_distinct() -> None:
    versions = [cls.prompt_version for cls in builtin_protocols().values()]
    assert len(set(versions)) == len(versions)
    assert "1" not in versions  # not the base default


def test_judge_content_shapes() -> None:
    protocols = {name: cls() for name, cls in builtin_protocols().items()}
    # What the engine passes: a URI only when the protocol's judge sees the image.
    content = {n: p.judge_content("P", URI if p.judge_sees_image else None) for n, p in protocols.items()}
    assert content["apple"] == [{"type": "text", "text": "P"}, {"type": "image_url", "image_url": {"url": URI}}]
    assert content["vlmevalkit"] == [
        {"type": "text", "text": "P"},
        {"type": "image_url", "image_url": {"url": URI, "detail": "low"}},
    ]
    for name in ("lmms-eval", "evalscope", "evalscope-json"):
        assert content[name] == "P"


SPEC = SampleSpec(0, "Do it.", "basic", ("Do", "it"), (6, 4), ("describe", "mention"))


def test_lmms_eval_strips_the_response() -> None:
    prompt = builtin_protocols()["lmms-eval"]().build_prompt(SPEC, "  answer\n")
    assert "The response is:' answer' You need" in prompt
    # The others insert it as given.
    assert "The response is:'   answer\n' You need" in builtin_protocols()["apple"]().build_prompt(SPEC, "  answer\n")


@pytest.mark.parametrize("name", list(EXPECTED))
@pytest.mark.parametrize("count", [0, 6])
def test_unsupported_component_counts_raise(name: str, count: int) -> None:
    spec = SampleSpec(0, "x", "basic", ("c",) * count, (1,) * count, ("describe",) * count)
    with pytest.raises(ValueError, match="1 to 5 components"):
        builtin_protocols()[name]().build_prompt(spec, "r")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_one_component_prompts(name: str) -> None:
    spec = SampleSpec(0, "Say hi.", "basic", ("Say hi",), (10,), ("describe",))
    prompt = builtin_protocols()[name]().build_prompt(spec, "hi")
    if name == "vlmevalkit":
        assert "The first component is: 'Say hi'. The response is: 'hi'." in prompt
        assert "The first component is worth: 10 scores. List scores" in prompt
    else:
        assert "The first component is:' Say hi' The response is:' hi'" in prompt
        assert "The first component is worth 10 scores." in prompt


@pytest.mark.parametrize("name", ["lmms-eval", "evalscope"])
def test_no_reply_counts_as_zero(name: str) -> None:
    verdict = builtin_protocols()[name]().parse(SPEC, None)
    assert (verdict.status, verdict.score, verdict.components) == (ZERO, 0.0, (0.0, 0.0))
    assert verdict.reason
