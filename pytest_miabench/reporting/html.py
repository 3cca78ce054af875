"""One self-contained HTML page from the JSON report.

Security model: the report carries text written by a model and a judge (and
by whoever made the dataset), so it is hostile input.

- The page is made of Jinja2 templates (``templates/``) filled with plain
  view data (``htmlhead``, ``htmltables``: numbers formatted there, text
  left as it is).  The environment escapes every value it prints
  (``autoescape=True``), in element content and in attribute values alike;
  the only values marked safe are the page's own static stylesheet and
  script (and the macros' output, built from those).  No template uses
  ``|safe``.  Numbers are formatted from floats/ints, never copied as
  strings.  Bidirectional controls in text are shown as visible codes.
- The only script is the static ``assets/report.js``: no report text is ever
  interpolated into it.  What it needs is read from escaped ``data-*``
  attributes.  The Content-Security-Policy allows exactly that script (by
  its SHA-256), so even a hypothetical injection could not run code, and
  ``default-src 'none'`` forbids every network load: opening the page
  fetches nothing and leaks nothing.
- An image ``src`` is only ever a ``data:image/(jpeg|png|webp|gif);base64,``
  URI that passes a strict pattern (``htmltables.safe_image_uri``);
  anything else is dropped.

Without JavaScript the page is complete: the table is rendered on the
server; filter controls stay hidden and the sort buttons do nothing.  The
thumbnail lightbox is a ``<details>`` element styled with CSS, so it works
without JavaScript too.

Thumbnails are made by ``images.thumbnail_uri`` on the process that has the
image; this page only checks and embeds them.  Importing this module
loads Jinja2, none of the heavy libraries (Pillow, numpy, openai, datasets).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Mapping
from typing import Any

# From their own modules: jinja2 3.0's __init__ does not re-export them for mypy.
from jinja2.environment import Environment
from jinja2.ext import Extension
from jinja2.loaders import PackageLoader
from jinja2.runtime import StrictUndefined
from markupsafe import Markup

from .htmlhead import header
from .htmltables import tables
from .values import fixed, mapping, sequence, text

__all__ = ["CSP", "render_html"]


# -- the environment -----------------------------------------------------------


def _asset(name: str) -> str:
    from importlib.resources import files

    # One name per joinpath: Traversable takes several only from Python 3.11.
    return files("pytest_miabench.reporting.assets").joinpath(name).read_text(encoding="utf-8")


# The page's stylesheet and its one script are static files next to this
# module; the script's hash goes into the Content-Security-Policy, so no
# other script (e.g. one smuggled in through report text) can run.  They are
# our own markup: the only values the templates print unescaped.
_CSS = Markup(_asset("report.css"))
_JS = Markup(_asset("report.js"))

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_JS.encode("utf-8")).digest()).decode("ascii")
CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)

# Bidirectional-override and isolate controls let model text reorder what
# a reader sees ("evil" shown as "live"); they are shown as visible codes.
_BIDI = {cp: f"<U+{cp:04X}>" for cp in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}
_LINE_BREAK = re.compile(r"\n[ \t]*")


class _JoinLines(Extension):
    """The templates are written one element per line, to be read; the page
    has no whitespace between its elements (a label and its value read
    "basic0.3000", as they always did).  So a line break and the next line's
    indentation are dropped as a template loads: a line break inside a tag
    needs a space before it, and a newline the page needs is ``{{ "\\n" }}``."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return _LINE_BREAK.sub("", source)


def _finalize(value: Any) -> Any:
    """What each ``{{ }}`` prints, before autoescape escapes it: None is
    empty, text has its bidi controls made visible; our own markup (the
    stylesheet, the script, the macros' output) passes as it is."""
    if isinstance(value, Markup):
        return value
    return text(value).translate(_BIDI)


@functools.cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("pytest_miabench.reporting", "templates"),
        autoescape=True,  # every value escaped; nothing in templates/ marks data safe
        undefined=StrictUndefined,  # a misspelt name is an error, not an empty cell
        finalize=_finalize,
        extensions=[_JoinLines],
    )


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page (no network needed)."""
    report = mapping(report)
    samples = [mapping(s) for s in sequence(report.get("samples"))]
    name = mapping(report.get("model")).get("name")
    title = f"MIA-Bench {'DEMO ' if report.get('demo') is True else ''}{fixed(report.get('total_score'))}"
    if name is not None:
        title += f" \u2014 {name}"
    page = _environment().get_template("page.html")
    return page.render(csp=CSP, css=_CSS, js=_JS, title=title, header=header(report, samples), **tables(report, samples))
