from __future__ import annotations

import base64
import io
import random
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from PIL import Image
from support.imports import heavy_imports

from pytest_miabench.data.images import thumbnail_uri
from pytest_miabench.reporting.html import render_html
from pytest_miabench.reporting.htmltables import safe_image_uri

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
    "</textarea>",
    "&amp;",
]
HOSTILE_TEXT = " | ".join(HOSTILE)
TYPES = ["basic", "intermediate", "advanced", "complex", "creative"]
CTYPES = ["describe", "length_limit", "linguistics", "grammar", "mention", "textual", "math", "perspective"]


# -- a real parse of the page ------------------------------------------------


class Page(HTMLParser):
    """Elements with attributes, text per element path, and errors."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.text_parts: list[str] = []
        self.script_texts: list[str] = []
        self.rows: list[dict[str, Any]] = []  # sample rows: attrs + their text
        self._row_depth: int | None = None

    VOID = {"meta", "img", "br", "input", "col", "hr", "link", "source", "wbr"}

    def handle_starttag(self, tag, attrs):
        d = dict(attrs)
        self.elements.append((tag, d))
        if tag in self.VOID:
            return
        self.stack.append((tag, d))
        if tag == "tr" and "data-index" in d:
            self.rows.append({"attrs": d, "text": []})
            self._row_depth = len(self.stack)

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        # pop to the matching tag (tolerant of implied ends, which we never emit)
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                if self._row_depth is not None and i + 1 <= self._row_depth:
                    self._row_depth = None
                del self.stack[i:]
                return
        raise AssertionError(f"unmatched </{tag}>")

    def handle_data(self, data):
        if self.stack and self.stack[-1][0] == "script":
            self.script_texts.append(data)
            return
        if self.stack and self.stack[-1][0] == "style":
            return
        self.text_parts.append(data)
        if self._row_depth is not None:
            self.rows[-1]["text"].append(data)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.elements if t == tag and all(a.get(k) == v for k, v in attrs.items())]

    def by_id(self, id_: str) -> dict[str, str | None] | None:
        found = [a for _, a in self.elements if a.get("id") == id_]
        assert len(found) <= 1, f"duplicate id {id_}"
        return found[0] if found else None


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    p.close()
    assert not p.stack, f"unclosed elements: {[t for t, _ in p.stack]}"
    return p


class TextInside(HTMLParser):
    def __init__(self, id_: str) -> None:
        super().__init__(convert_charrefs=True)
        self.id_ = id_
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if self.depth:
            if tag not in Page.VOID:
                self.depth += 1
        elif dict(attrs).get("id") == self.id_ and tag not in Page.VOID:
            self.depth = 1

    def handle_endtag(self, tag):
        if self.depth and tag not in Page.VOID:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.parts.append(data)


def text_inside(page: str, id_: str) -> str:
    p = TextInside(id_)
    p.feed(page)
    p.close()
    return "".join(p.parts)


# -- synthetic reports -------------------------------------------------------


def make_image(i: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A JPEG with some structure (gradient, disc, bar), different per i."""
    from PIL import ImageDraw

    w, h = size
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(img)
    colour = ((53 * i) % 256, (97 * i + 80) % 256, (29 * i + 160) % 256)
    draw.ellipse((w // 4, h // 4, w // 4 + h // 2, 3 * h // 4), fill=colour)
    draw.rectangle((0, h - h // 8, (i % 10 + 1) * w // 10, h), fill=(240, 200, 40))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def make_sample(i: int, rng: random.Random, hostile: bool = False, thumb: str | None = "make") -> dict[str, Any]:
    n = rng.randint(2, 5)
    weights = [rng.randint(1, 4) for _ in range(n)]
    status = "scored" if i % 7 else rng.choice(["zero", "dropped", "excluded", "failed"])
    comps = []
    for k in range(n):
        cscore = None if status in ("failed", "dropped", "excluded") else rng.choice([0.0, 0.5, 1.0])
        text = f"component {k} of sample {i}" + (f" {HOSTILE[k % len(HOSTILE)]}" if hostile else "")
        comps.append({"text": text, "type": CTYPES[(i + k) % len(CTYPES)], "weight": weights[k], "score": cscore})
    if status in ("scored", "zero"):
        score = 0.0 if status == "zero" else sum(
            w * (c["score"] or 0.0) for w, c in zip(weights, comps)
        ) / sum(weights)
    else:
        score = None
    return {
        "index": i,
        "nodeid": f"mia_bench.py::test_sample[{i}]",
        "type": TYPES[i % len(TYPES)],
        "instruction": f"Describe image {i} in two sentences." + (f" {HOSTILE_TEXT}" if hostile else ""),
        "score": score,
        "status": status,
        "reason": "" if status == "scored" else f"judge reply unparseable ({status})" + (f" {HOSTILE[1]}" if hostile else ""),
        "components": comps,
        "response": None if status == "failed" else f"Answer {i}.\nSecond line." + (f" {HOSTILE_TEXT}" if hostile else ""),
        "finish_reason": "length" if i % 5 == 3 else "stop",
        "judge_reply": None if status == "failed" else "Score of component 1: 4/4\n" + (HOSTILE_TEXT if hostile else ""),
        "cached": {"model": i % 2 == 0, "judge": False},
        "calls": {"model": 1, "judge": 1},
        "retries": i % 3,
        "usage": {"model": {"prompt_tokens": 100, "completion_tokens": 50}, "judge": {"prompt_tokens": 300, "completion_tokens": 20}},
        "image": {"mime": "image/jpeg", "width": 640, "height": 480, "format": "JPEG", "reencoded": False, "bytes": 12345},
        "thumbnail": thumbnail_uri(make_image(i)) if thumb == "make" else thumb,
        "seconds": 1.5 + i / 10,
    }


def make_report(n: int = 12, hostile: bool = False, baseline: bool = False, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    samples = [make_sample(i, rng, hostile) for i in range(n)]
    counted = [s["score"] for s in samples if s["status"] != "failed" and s["score"] is not None]
    total = sum(counted) / len(counted)
    name = "gpt-test" + (f" {HOSTILE_TEXT}" if hostile else "")
    report: dict[str, Any] = {
        "schema_version": 1,
        "plugin_version": "0.1.0",
        "created": "2025-01-02T03:04:05+00:00",
        "complete": True,
        "total_score": total,
        "ci": {"total_score": [total - 0.0321, total + 0.0279], "by_type": {"basic": [0.05, 0.18]}, "by_component_type": {"describe": [0.85, 0.95]}},
        "n_samples": n,
        "n_scored": sum(s["status"] == "scored" for s in samples),
        "n_zero": sum(s["status"] == "zero" for s in samples),
        "n_dropped": sum(s["status"] == "dropped" for s in samples),
        "n_excluded": sum(s["status"] == "excluded" for s in samples),
        "n_failed": sum(s["status"] == "failed" for s in samples),
        "n_missing": 0,
        "missing": [],
        "threshold": 0.3,
        "passed": True,
        "by_type": {t: 0.1 + 0.15 * k for k, t in enumerate(TYPES)},
        "by_component_type": {c: 0.9 - 0.1 * k for k, c in enumerate(CTYPES)},
        "protocol_metrics": {"total_score": total, "describe": 0.8},
        "usage": {
            "model": {"api_calls": n, "cache_hits": 3, "prompt_tokens": 1000, "completion_tokens": 500},
            "judge": {"api_calls": n, "cache_hits": 0, "prompt_tokens": 3000, "completion_tokens": 200},
            "retries": 2,
        },
        "model": {"name": name, "base_url": "http://localhost:8000/v1", "max_tokens": 512, "temperature": 0.0},
        "judge": {"name": "judge-x" + (f" {HOSTILE[2]}" if hostile else ""), "base_url": "https://api.example.com/v1", "sees_image": False, "temperature": 0.0, "max_tokens": 256},
        "protocol": {"name": "original", "prompt_version": "1"},
        "dataset": {"source": "tests/data/instruction_benchmark_all.json", "split": "test", "limit": None},
        "samples": samples,
    }
    if baseline:
        report["baseline"] = {
            "path": "baseline.json" + (f" {HOSTILE[0]}" if hostile else ""),
            "total_score": total - 0.04,
            "delta": 0.04,
            "by_type": {"basic": 0.1, "complex": -0.05},
            "by_component_type": {"describe": -0.02, "math": 0.07},
            "changed": [
                {"index": 3, "nodeid": samples[3]["nodeid"], "before": 0.2, "after": 0.9, "delta": 0.7},
                {"index": 5, "nodeid": samples[5]["nodeid"] + (HOSTILE[1] if hostile else ""), "before": 1.0, "after": 0.5, "delta": -0.5},
                {"index": 1, "nodeid": samples[1]["nodeid"], "before": None, "after": 0.5, "delta": None},
            ],
            "max_drop": 0.05,
            "gate_failed": False,
        }
    return report


# -- tests -------------------------------------------------------------------


def test_every_sample_is_one_row():
    report = make_report(23)
    page = parse(render_html(report))
    indexes = [r["attrs"]["data-index"] for r in page.rows]
    assert sorted(indexes, key=int) == [str(i) for i in range(23)]
    assert len(set(indexes)) == 23
    for row in page.rows:
        i = int(row["attrs"]["data-index"])
        text = "".join(row["text"])
        assert text.count(f"mia_bench.py::test_sample[{i}]") == 1
        assert row["attrs"]["id"] == f"s-{i}"
        assert f"Describe image {i} in two sentences." in text


def test_row_data_attributes_for_filters():
    report = make_report(10)
    page = parse(render_html(report))
    for row, sample in zip(page.rows, report["samples"]):
        a = row["attrs"]
        assert a["data-type"] == sample["type"]
        assert a["data-status"] == sample["status"]
        if sample["score"] is None:
            assert a["data-score"] == ""
        else:
            assert float(a["data-score"]) == pytest.approx(sample["score"])
        import json

        assert set(json.loads(a["data-ctypes"])) == {c["type"] for c in sample["components"]}


def test_component_scores_weights_and_statuses_are_shown():
    report = make_report(8)
    s = report["samples"][1]
    s["components"] = [
        {"text": "explain the scene", "type": "describe", "weight": 4, "score": 0.75},
        {"text": "in two sentences", "type": "length_limit", "weight": 3, "score": None},
    ]
    page = render_html(report)
    row_text = text_inside(page, "s-1")
    assert "explain the scene" in row_text and "0.75" in row_text and "w 4" in row_text
    assert "length_limit" in row_text and "w 3" in row_text
    assert s["status"] in row_text


def _assert_no_injection(page_html: str) -> Page:
    page = parse(page_html)
    for tag, attrs in page.elements:
        for name in attrs:
            assert not name.lower().startswith("on"), (tag, attrs)
        assert tag not in ("svg", "textarea", "iframe", "object", "embed", "link", "base", "form"), tag
        if tag == "img":
            assert safe_image_uri(attrs.get("src")) is not None, attrs
        for key in ("src", "href"):
            value = attrs.get(key)
            if value is not None:
                assert not value.lower().startswith(("http:", "https:", "javascript:", "//")), (tag, attrs)
                if key == "href":
                    assert value.startswith("#"), (tag, attrs)
    scripts = page.find("script")
    assert len(scripts) == 1 and scripts[0] == {}
    return page


def test_hostile_text_is_inert_and_visible():
    report = make_report(20, hostile=True, baseline=True)
    html = render_html(report)
    page = _assert_no_injection(html)
    text = page.text
    # Each hostile string appears as text, in each place it was put.
    for hostile in HOSTILE:
        assert hostile in text
    assert HOSTILE_TEXT in text_inside(html, "s-1")  # response / instruction / judge reply
    row = text_inside(html, "s-2")
    assert f"Answer 2.\nSecond line. {HOSTILE_TEXT}" in row
    assert f"Score of component 1: 4/4\n{HOSTILE_TEXT}" in row
    assert "component 0 of sample 2 <script>alert(1)</script>" in row
    assert f"gpt-test {HOSTILE_TEXT}" in text
    assert f"judge-x {HOSTILE[2]}" in text
    # The literal "&amp;" survives as the five characters, not as "&".
    assert "&amp;" in text and "| & |" not in text
    # The script content is the constant one: nothing from the report leaked into it.
    assert "alert" not in "".join(page.script_texts)
    # Title is escaped too.
    assert "<title>" in html and "<script>alert" not in html.split("<title>", 1)[1].split("</title>", 1)[0]


# Markup and Jinja2's own syntax: model text is data, never a template.
TEMPLATE_TEXT = "<script>alert(1)</script> {{ 7*7 }} {% raw %}{{ 6*6 }}{% endraw %} {# gone? #} {{ undefined_name }}"


def test_autoescape_escapes_and_template_syntax_in_model_text_is_inert():
    """The page is rendered by Jinja2 with autoescape on: text in an answer,
    a judge reply, an instruction and a sample's id is escaped and shown as
    it is, template syntax included (nothing evaluated, nothing dropped, no
    error for an undefined name).  With autoescape off this fails: the
    script element would be real."""
    report = make_report(3)
    sample = report["samples"][1]
    for key in ("response", "judge_reply", "instruction", "nodeid", "index"):
        sample[key] = TEMPLATE_TEXT  # an index that is not an int is shown as text
    html = render_html(report)
    _assert_no_injection(html)
    assert "<script>alert" not in html
    # Instruction, response, judge reply, the row's link text and the node id.
    assert text_inside(html, "p-1").count(TEMPLATE_TEXT) == 5


def test_no_template_marks_data_safe():
    """Only the page's own stylesheet and script are marked safe, in Python
    (html.py); no template turns escaping off for anything."""
    from importlib.resources import files

    templates = files("pytest_miabench.reporting").joinpath("templates")
    sources = {t.name: t.read_text(encoding="utf-8") for t in templates.iterdir() if t.name.endswith(".html")}
    assert "page.html" in sources
    for name, source in sources.items():
        assert not re.search(r"\|\s*safe\b|autoescape\s+false|\bMarkup\b", source, re.IGNORECASE), name


def test_hostile_type_and_status_values_stay_in_attributes():
    report = make_report(4)
    bad = '"><img src=x onerror=alert(1)>'
    report["samples"][0]["type"] = bad
    report["samples"][0]["status"] = bad
    report["samples"][0]["components"][0]["type"] = bad
    report["by_type"] = {bad: 0.5}
    report["protocol_metrics"] = {bad: bad}
    page = _assert_no_injection(render_html(report))
    row = page.rows[0]["attrs"]
    assert row["data-type"] == bad and row["data-status"] == bad
    options = [a.get("value") for a in page.find("option")]
    assert bad in options


def test_thumbnails_are_small_decodable_jpeg_data_uris():
    report = make_report(6)
    page = parse(render_html(report))
    imgs = page.find("img")
    assert len(imgs) == 6
    for attrs in imgs:
        src = attrs["src"]
        assert src.startswith("data:image/jpeg;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        img.load()
        assert img.format == "JPEG" and max(img.size) <= 160


@pytest.mark.parametrize(
    "value",
    [
        "javascript:alert(1)",
        "http://evil.example/x.png",
        "https://evil.example/x.png",
        "//evil.example/x.png",
        "data:image/svg+xml;base64,PHN2Zz4=",
        "data:text/html;base64,PHNjcmlwdD4=",
        'data:image/jpeg;base64,AAAA" onerror="alert(1)',
        "data:image/jpeg;base64,AAAA x",
        12345,
    ],
)
def test_non_data_thumbnail_is_not_rendered(value):
    report = make_report(3)
    report["samples"][1]["thumbnail"] = value
    page = _assert_no_injection(render_html(report))
    assert len(page.find("img")) == 2
    assert "thumbnail withheld" in "".join(page.rows[1]["text"])


def test_missing_thumbnail_says_so():
    report = make_report(2)
    report["samples"][0]["thumbnail"] = None
    page = parse(render_html(report))
    assert len(page.find("img")) == 1
    assert "no image" in "".join(page.rows[0]["text"])


def test_thumbnail_lightbox_works_without_js():
    page = parse(render_html(make_report(2)))
    details = page.find("details", **{"class": "lb"})
    assert len(details) == 2  # the <details> toggles with a click, no script involved


def test_csp_forbids_network_and_allows_only_our_script():
    html = render_html(make_report(3))
    page = parse(html)
    metas = [a for a in page.find("meta") if (a.get("http-equiv") or "").lower() == "content-security-policy"]
    assert len(metas) == 1
    csp = metas[0]["content"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert set(directives) == {"default-src", "img-src", "style-src", "script-src", "base-uri", "form-action"}
    assert directives["default-src"] == ["'none'"]
    assert directives["img-src"] == ["data:"]
    assert directives["style-src"] == ["'unsafe-inline'"]
    assert directives["base-uri"] == ["'none'"] and directives["form-action"] == ["'none'"]
    (script_src,) = directives["script-src"]
    import hashlib

    (script,) = page.script_texts
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert script_src == f"'sha256-{digest}'"
    # The CSP meta comes before anything that could load.
    assert html.index("Content-Security-Policy") < html.index("<style>")


def test_no_network_references():
    page = parse(render_html(make_report(8, baseline=True)))
    for tag, attrs in page.elements:
        for key in ("src", "href", "action", "srcset", "poster", "data"):
            value = attrs.get(key)
            if value is not None:
                assert "http://" not in value and "https://" not in value, (tag, attrs)
    assert not page.find("link") and not page.find("iframe")


def test_header_shows_total_ci_and_counts():
    report = make_report(14)
    report["total_score"] = 0.7312345
    report["ci"]["total_score"] = [0.70123, 0.76234]
    html = render_html(report)
    assert text_inside(html, "total-score") == "0.7312"
    assert text_inside(html, "total-ci") == "95% CI [0.7012, 0.7623]"
    assert text_inside(html, "count-samples") == "14"
    assert text_inside(html, "count-failed") == str(report["n_failed"])
    page = parse(html)
    assert "PASS" in page.text and "gpt-test" in page.text and "judge-x" in page.text
    assert "2025-01-02T03:04:05+00:00" in page.text and "original" in page.text


def test_header_without_ci_and_failing_gate():
    report = make_report(5)
    del report["ci"]
    report["threshold"] = 0.99
    report["passed"] = False
    html = render_html(report)
    assert text_inside(html, "total-ci") == "95% CI n/a"
    text = parse(html).text
    assert "FAIL" in text and "PASS" not in text and "below the threshold 0.99" in text


def test_no_verdict_without_a_gate():
    report = make_report(5)
    report["threshold"] = None
    text = parse(render_html(report)).text
    assert "PASS" not in text and "FAIL" not in text


def test_breakdown_bars_with_cis():
    report = make_report(6)
    page = parse(render_html(report))
    fills = [a for a in page.find("span") if a.get("class") == "fill"]
    assert len(fills) == len(report["by_type"]) + len(report["by_component_type"])
    widths = sorted(float(a["style"].split("width:")[1].rstrip("%")) for a in fills)
    assert widths[0] == pytest.approx(10.0) and widths[-1] == pytest.approx(90.0)
    whiskers = [a for a in page.find("span") if a.get("class") == "whisker"]
    assert len(whiskers) == 2  # basic and describe have CIs
    assert "[0.050, 0.180]" in page.text and "[0.850, 0.950]" in page.text


def test_baseline_section_iff_baseline():
    without = parse(render_html(make_report(6)))
    assert without.by_id("baseline") is None
    html = render_html(make_report(6, baseline=True))
    page = parse(html)
    assert page.by_id("baseline") is not None
    section = text_inside(html, "baseline")
    assert text_inside(html, "baseline-delta") == "+0.0400"
    assert "+0.7000" in section and "-0.5000" in section and "-0.0500" in section
    # Biggest drop first (what a release gate looks for); links go to the sample rows.
    assert section.index("-0.5000") < section.index("+0.7000")
    links = [a["href"] for a in page.find("a") if a.get("href", "").startswith("#s-")]
    assert "#s-3" in links and "#s-5" in links
    for href in links:
        assert page.by_id(href[1:]) is not None


def test_no_change_is_not_shown_as_a_drop():
    """A change of -0.0 prints +0.0000, as the GitHub job summary prints it
    (both use values.signed)."""
    report = make_report(6, baseline=True)
    report["baseline"]["delta"] = -0.0
    assert text_inside(render_html(report), "baseline-delta") == "+0.0000"


def test_controls_hidden_without_js_and_filter_options():
    report = make_report(12)
    page = parse(render_html(report))
    controls = page.by_id("controls")
    assert controls is not None and "hidden" in controls
    type_options = [a["value"] for a in page.find("option")]
    for t in {s["type"] for s in report["samples"]}:
        assert t in type_options
    for status in {s["status"] for s in report["samples"]}:
        assert status in type_options
    assert "describe" in type_options and "perspective" in type_options


def test_defensive_against_missing_and_odd_fields():
    odd = {
        "total_score": "not a number",
        "ci": {"total_score": ["x", None]},
        "samples": [
            {"index": "7", "components": [None, {"weight": True}], "status": None, "score": float("nan")},
            {},
            None,
        ],
        "by_type": None,
        "baseline": {"changed": [{"delta": "x"}, None]},
        "model": "a string",
    }
    html = render_html(odd)
    page = parse(html)
    assert len(page.rows) == 3
    assert text_inside(html, "total-score") == "n/a"
    assert render_html({})  # nothing at all still renders


def test_thumbnail_uri_modes_and_failures():
    for mode, size in (("RGB", (1600, 900)), ("L", (90, 300)), ("CMYK", (200, 200))):
        img = Image.new(mode, size)
        out = io.BytesIO()
        img.save(out, "JPEG")
        uri = thumbnail_uri(out.getvalue())
        decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert decoded.mode == "RGB" and max(decoded.size) == min(160, max(size))
        if size == (1600, 900):
            assert decoded.size == (160, 90)
    for mode in ("RGBA", "P", "I;16", "LA", "1"):
        img = Image.new(mode, (300, 100))
        out = io.BytesIO()
        img.save(out, "PNG")
        uri = thumbnail_uri(out.getvalue(), max_side=64)
        decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert decoded.mode == "RGB" and decoded.size == (64, 21)
    assert thumbnail_uri(b"") is None
    assert thumbnail_uri(b"not an image at all") is None
    assert thumbnail_uri(make_image(1)[:200]) is None  # truncated JPEG
    # Transparent pixels land on white, not black.
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    out = io.BytesIO()
    img.save(out, "PNG")
    decoded = Image.open(io.BytesIO(base64.b64decode(thumbnail_uri(out.getvalue()).split(",", 1)[1])))
    assert decoded.convert("L").getextrema()[0] > 240


def test_thumbnail_is_small():
    rng = random.Random(0)
    noise = Image.frombytes("RGB", (1200, 900), bytes(rng.getrandbits(8) for _ in range(1200 * 900 * 3)))
    out = io.BytesIO()
    noise.save(out, "JPEG", quality=95)
    uri = thumbnail_uri(out.getvalue())
    assert len(uri) < 30_000 and safe_image_uri(uri) == uri


def test_import_is_cheap():
    assert heavy_imports("pytest_miabench.reporting.html") == []


def _with_comparison(report: dict[str, Any], hostile: bool = False) -> dict[str, Any]:
    """The baseline block of this version: the baseline's own means and both judge replies."""
    base = report["baseline"]
    base["by_type"] = {"basic": 0.1, "complex": -0.05}
    base["baseline_by_type"] = {"basic": report["by_type"]["basic"] - 0.1, "complex": report["by_type"]["complex"] + 0.05, "gone": 0.5}
    base["baseline_by_component_type"] = {c: report["by_component_type"][c] - base["by_component_type"].get(c, 0.0) for c in CTYPES}
    base["diff_ci"] = [-0.03, 0.01]
    base["gate_verdict"] = "inconclusive"
    extra = f" {HOSTILE_TEXT}" if hostile else ""
    for c in base["changed"]:
        c.update(response_before=f"old answer {c['index']}{extra}", response_after=f"new answer {c['index']}{extra}")
        c.update(judge_reply_before=f"old verdict {c['index']}{extra}", judge_reply_after=f"new verdict {c['index']}{extra}")
    return report


def test_candidate_against_baseline_chart_per_type():
    report = _with_comparison(make_report(10, baseline=True))
    html = render_html(report)
    page = parse(html)
    chart = text_inside(html, "chart-by-type")
    basic = report["by_type"]["basic"]
    assert f"basic{basic - 0.1:.4f} \u2192 {basic:.4f} +0.1000" in chart
    complex_ = report["by_type"]["complex"]
    assert f"complex{complex_ + 0.05:.4f} \u2192 {complex_:.4f} -0.0500" in chart
    assert "gone0.5000 \u2192 n/a n/a" in chart  # only in the baseline: shown, not dropped
    assert "describe" in text_inside(html, "chart-by-component-type")
    # Two bars per group that both runs have, on one 0-1 scale.
    fills = [a for a in page.find("span") if (a.get("class") or "").startswith("pfill")]
    bases = [a for a in fills if a["class"] == "pfill base"]
    assert len(bases) == len(report["baseline"]["baseline_by_type"]) + len(CTYPES)
    # The component chart comes first, "describe" first in it: baseline 0.9 - (-0.02).
    assert float(bases[0]["style"].split("width:")[1].rstrip("%")) == pytest.approx(92.0)
    # One sign convention: change = this run - baseline, also in the verdict.
    assert "Change = this run \u2212 baseline" in page.text
    assert "95% CI of the paired change (this run \u2212 baseline) [-0.0300, +0.0100]" in page.text
    assert "paired drop" not in page.text


def test_movers_table_has_both_answers_both_judge_replies_and_the_thumbnail():
    report = _with_comparison(make_report(10, hostile=True, baseline=True), hostile=True)
    html = render_html(report)
    _assert_no_injection(html)
    table = text_inside(html, "baseline-changed")
    # Biggest drop first; each side's answer and judge reply, escaped and visible.
    assert table.index("old answer 5") < table.index("old answer 3")
    for index in (5, 3):
        for text in ("old answer", "new answer", "old verdict", "new verdict"):
            assert f"{text} {index} {HOSTILE_TEXT}" in table
    thumbs = [a for a in parse(html).find("img") if a.get("alt") == "thumbnail of sample 5"]
    assert len(thumbs) == 2  # the sample's row and the movers table
    assert thumbs[0]["src"] == report["samples"][5]["thumbnail"]
    # An older report's comparison has no judge replies: said, not invented.
    for c in report["baseline"]["changed"]:
        del c["judge_reply_before"], c["judge_reply_after"]
    table = text_inside(render_html(report), "baseline-changed")
    assert "not in the baseline report" in table and "Score of component 1: 4/4" in table
