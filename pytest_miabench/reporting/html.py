"""One self-contained HTML page from the JSON report.

Security model: the report carries text written by a model and a judge (and
by whoever made the dataset), so it is hostile input.

- Every piece of report text goes through ``html.escape(..., quote=True)``,
  in element content and in attribute values alike; numbers are formatted
  from floats/ints, never copied as strings.
- The only script is the static ``assets/report.js``: no report text is ever
  interpolated into it.  What it needs is read from escaped ``data-*``
  attributes.  The Content-Security-Policy allows exactly that script (by
  its SHA-256), so even a hypothetical injection could not run code, and
  ``default-src 'none'`` forbids every network load: opening the page
  fetches nothing and leaks nothing.
- An image ``src`` is only ever a ``data:image/(jpeg|png|webp|gif);base64,``
  URI that passes a strict pattern; anything else is dropped.

Without JavaScript the page is complete: the table is rendered on the
server; filter controls stay hidden and the sort buttons do nothing.  The
thumbnail lightbox is a ``<details>`` element styled with CSS, so it works
without JavaScript too.

Thumbnails are made by ``images.thumbnail_uri`` on the process that has the
image; this module only checks and embeds them.  Importing it is cheap.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from ..result import DEMO_WARNING, mock_warning

__all__ = ["CSP", "render_html", "safe_image_uri"]

_DATA_URI = re.compile(r"data:image/(?:jpeg|png|webp|gif);base64,[A-Za-z0-9+/]+={0,2}")
# A 160 px JPEG at quality 70 is 3-10 kB; anything far larger is not a thumbnail.
MAX_THUMBNAIL_CHARS = 300_000
MAX_CHANGED_SHOWN = 30
MAX_MISSING_SHOWN = 200


def safe_image_uri(value: Any) -> str | None:
    """``value`` if it is a base64 image ``data:`` URI of an allowed type and
    a sane size, else None.  The full match leaves no room for quotes,
    spaces or another scheme."""
    if not isinstance(value, str) or len(value) > MAX_THUMBNAIL_CHARS:
        return None
    return value if _DATA_URI.fullmatch(value) else None


# -- value helpers (defensive: any field may be missing or of a wrong type) --


# Bidirectional-override and isolate controls let model text reorder what
# a reader sees ("evil" shown as "live"); they are shown as visible codes.
_BIDI = {cp: f"<U+{cp:04X}>" for cp in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}


def _e(value: Any) -> str:
    """Escaped text of any value; None is empty."""
    if value is None:
        return ""
    text = (value if isinstance(value, str) else str(value)).translate(_BIDI)
    return escape(text, quote=True)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _fmt(value: Any, digits: int = 4) -> str:
    v = _num(value)
    return "n/a" if v is None else f"{v:.{digits}f}"


def _signed(value: Any, digits: int = 4) -> str:
    v = _num(value)
    return "n/a" if v is None else f"{v:+.{digits}f}"


def _count(value: Any) -> str:
    v = _int(value)
    return "n/a" if v is None else str(v)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seq(value: Any) -> Sequence[Any]:
    return value if isinstance(value, (list, tuple)) else ()


def _pair(value: Any) -> tuple[float, float] | None:
    seq = _seq(value)
    if len(seq) != 2:
        return None
    lo, hi = _num(seq[0]), _num(seq[1])
    if lo is None or hi is None:
        return None
    return (lo, hi) if lo <= hi else (hi, lo)


def _pct(value: float) -> str:
    """A CSS percentage for a 0-1 value, clamped."""
    return f"{min(1.0, max(0.0, value)) * 100:.2f}%"


def _css_token(value: Any) -> str:
    """A class-name-safe token (for status colouring); unknown -> other."""
    return value if isinstance(value, str) and value in _STATUSES else "other"


_STATUSES = ("scored", "zero", "dropped", "excluded", "failed")


# -- page pieces ------------------------------------------------------------

def _asset(name: str) -> str:
    from importlib.resources import files

    # One name per joinpath: Traversable takes several only from Python 3.11.
    return files("pytest_miabench.reporting.assets").joinpath(name).read_text(encoding="utf-8")


# The page's stylesheet and its one script are static files next to this
# module; the script's hash goes into the Content-Security-Policy, so no
# other script (e.g. one smuggled in through report text) can run.
_CSS = _asset("report.css")
_JS = _asset("report.js")

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_JS.encode("utf-8")).digest()).decode("ascii")
CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)


def _bar_rows(means: Mapping[str, Any], cis: Mapping[str, Any], counts: Mapping[str, int], unit: str) -> str:
    if not means:
        return '<p class="none">no data</p>'
    out = ['<div class="bars">']
    for name, raw in means.items():
        mean = _num(raw)
        ci = _pair(cis.get(name)) if isinstance(name, str) else None
        n = counts.get(name)
        label = f'<span class="bar-label">{_e(name)}</span>'
        if mean is None:
            bar = '<span class="track"></span>'
        else:
            bar = f'<span class="track"><span class="fill" style="width:{_pct(mean)}"></span>'
            if ci is not None:
                lo = min(1.0, max(0.0, ci[0]))
                hi = min(1.0, max(0.0, ci[1]))
                bar += f'<span class="whisker" style="left:{_pct(lo)};width:{_pct(hi - lo)}"></span>'
            bar += "</span>"
        value = _fmt(mean)
        if ci is not None:
            value += f" <small>[{ci[0]:.3f}, {ci[1]:.3f}]</small>"
        if n is not None:
            value += f' <small>n={n} {_e(unit)}</small>'
        out.append(f'{label}{bar}<span class="bar-val">{value}</span>')
    out.append("</div>")
    return "".join(out)


def _pair_rows(candidate: Mapping[str, Any], baseline: Mapping[str, Any], changes: Mapping[str, Any], chart_id: str) -> str:
    """Per group: the baseline's mean (grey) over this run's (blue) on one
    0-1 scale, and the change (this run - baseline) in words."""
    names = sorted({str(k) for k in (*candidate, *baseline, *changes)})
    if not names:
        return '<p class="none">no data</p>'
    out = [f'<div class="bars pairs" id="{_e(chart_id)}">']
    for name in names:
        before, after, change = _num(baseline.get(name)), _num(candidate.get(name)), _num(changes.get(name))
        if change is None and before is not None and after is not None:
            change = after - before
        bars = "".join(
            f'<span class="pfill {cls}" style="width:{_pct(value)}" title="{label} {_fmt(value)}"></span>'
            for value, cls, label in ((before, "base", "baseline"), (after, "cand", "this run"))
            if value is not None
        )
        out.append(
            f'<span class="bar-label">{_e(name)}</span><span class="ptrack">{bars}</span>'
            f'<span class="bar-val">{_fmt(before)} &rarr; {_fmt(after)} '
            f'<b class="{_delta_cls(change)}">{_signed(change)}</b></span>'
        )
    out.append("</div>")
    return "".join(out)


def _delta_cls(value: Any) -> str:
    v = _num(value)
    return "" if v is None or v == 0 else ("up-t" if v > 0 else "down-t")


def _row_anchor(index: Any) -> str | None:
    i = _int(index)
    return None if i is None else f"s-{i}"


def _counted(sample: Mapping[str, Any]) -> bool:
    return sample.get("status") != "failed" and _num(sample.get("score")) is not None


def _group_counts(samples: Sequence[Mapping[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    """Per instruction type: samples in the mean; per component type:
    components with a score in samples in the mean (the aggregation rule)."""
    by_type: dict[str, int] = {}
    by_ctype: dict[str, int] = {}
    for s in samples:
        if not _counted(s):
            continue
        t = s.get("type")
        if isinstance(t, str):
            by_type[t] = by_type.get(t, 0) + 1
        for c in _seq(s.get("components")):
            c = _map(c)
            ct = c.get("type")
            if isinstance(ct, str) and _num(c.get("score")) is not None:
                by_ctype[ct] = by_ctype.get(ct, 0) + 1
    return by_type, by_ctype


def _verdict(report: Mapping[str, Any]) -> str:
    threshold = _num(report.get("threshold"))
    baseline = _map(report.get("baseline"))
    gate = threshold is not None or bool(baseline) and (
        baseline.get("max_drop") is not None or baseline.get("gate_failed") is not None
    )
    passed = report.get("passed")
    total = _num(report.get("total_score"))
    why: list[str] = []
    if threshold is not None:
        ok = total is not None and total >= threshold
        why.append(
            f"total_score {_fmt(total)} {'meets' if ok else 'is below'} the threshold {threshold:g}"
        )
    if baseline:
        verdict = baseline.get("gate_verdict")
        drop = f"95% CI of the paired change (this run \u2212 baseline) {_change_ci(baseline)}, max drop {_fmt(baseline.get('max_drop'))}"
        if verdict == "refused":
            why.append(f"the baseline is not comparable: {baseline.get('refused')}")
        elif verdict == "regression":
            why.append(f"the score dropped more than allowed against the baseline ({drop})")
        elif verdict == "inconclusive":
            why.append(f"a drop larger than allowed against the baseline cannot be ruled out ({drop})")
        elif verdict == "pass":
            why.append(f"no drop larger than allowed against the baseline ({drop})")
        elif baseline.get("gate_failed") is True:  # a report of an older version
            why.append(
                f"the score dropped more than allowed against the baseline "
                f"(delta {_signed(baseline.get('delta'))}, max drop {_fmt(baseline.get('max_drop'))})"
            )
        elif baseline.get("max_drop") is not None:
            why.append(
                f"delta against the baseline {_signed(baseline.get('delta'))} is within "
                f"the allowed drop {_fmt(baseline.get('max_drop'))}"
            )
    if _int(report.get("n_failed")):
        why.append(f"{_count(report.get('n_failed'))} sample(s) failed")
    if _int(report.get("n_missing")):
        why.append(f"{_count(report.get('n_missing'))} sample(s) not run")
    stopped = _map(report.get("budget")).get("stopped")
    if stopped:
        why.append(f"stopped by the budget: {stopped}")
    if passed is True and gate:
        badge = '<span class="verdict pass">PASS</span>'
    elif passed is False:
        badge = '<span class="verdict fail">FAIL</span>'
    else:
        return ""
    items = "".join(f"<li>{_e(w)}</li>" for w in why)
    return badge + (f'<ul class="why">{items}</ul>' if items else "")


def _endpoint(info: Mapping[str, Any], extra: Sequence[tuple[str, str]]) -> str:
    name = info.get("name")
    parts = [f"<b>{_e(name)}</b>" if name is not None else '<span class="none">unknown</span>']
    if info.get("base_url"):
        parts.append(f'<span class="mono">{_e(info.get("base_url"))}</span>')
    for key, label in extra:
        if key in info and info.get(key) is not None:
            parts.append(f"{_e(label)} {_e(info.get(key))}")
    return " &middot; ".join(parts)


def _header(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> str:
    """Title, headline number with its interval and verdict, run facts, counts."""
    title = _e(_map(report.get("model")).get("name")) or "model"
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in _meta(report))
    return (
        f"<h1>MIA-Bench report &mdash; {'DEMO' if report.get('demo') is True else title}</h1>{_demo_banner(report)}"
        '<header class="top">'
        '<div class="headline"><div class="label">total_score</div>'
        f'<div class="big" id="total-score">{_fmt(_num(report.get("total_score")))}</div>{_total_ci(report)}{_verdict(report)}</div>'
        f'<dl class="meta">{dl}</dl>'
        "</header>"
        f'<ul class="counts">{_counts(report, samples)}</ul>{_banners(report)}{_missing(report)}'
    )


def _total_ci(report: Mapping[str, Any]) -> str:
    ci_block = _map(report.get("ci"))
    ci = _pair(ci_block.get("total_score"))
    level = _num(ci_block.get("level"))
    level_txt = f"{level * 100:g}%" if level is not None and 0 < level < 1 else "95%"
    if ci is not None:
        return f'<div class="ci" id="total-ci">{level_txt} CI [{ci[0]:.4f}, {ci[1]:.4f}]</div>'
    return f'<div class="ci" id="total-ci">{level_txt} CI n/a</div>'


def _meta(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(term, HTML) pairs: what ran, on what, when, and what it used."""
    meta: list[tuple[str, str]] = [
        ("model", _endpoint(_map(report.get("model")), (("temperature", "temperature"), ("max_tokens", "max_tokens")))),
        (
            "judge",
            _endpoint(
                _map(report.get("judge")),
                (("sees_image", "sees image:"), ("temperature", "temperature"), ("max_tokens", "max_tokens")),
            ),
        ),
        ("protocol", _protocol_meta(_map(report.get("protocol")))),
        ("dataset", _dataset_meta(_map(report.get("dataset")))),
        ("date", _e(report.get("created")) or '<span class="none">unknown</span>'),
    ]
    threshold = _num(report.get("threshold"))
    if threshold is not None:
        meta.append(("threshold", f"{threshold:g}"))
    usage = _usage_meta(_map(report.get("usage")))
    if usage:
        meta.append(("usage", usage))
    budget = _budget_meta(_map(report.get("budget")))
    if budget:
        meta.append(("budget", budget))
    run = _run_meta(report)
    if run:
        meta.append(("run", run))
    return meta


def _protocol_meta(protocol: Mapping[str, Any]) -> str:
    version = protocol.get("prompt_version")
    return f"<b>{_e(protocol.get('name'))}</b>" + (f" &middot; prompt version {_e(version)}" if version is not None else "")


def _dataset_meta(dataset: Mapping[str, Any]) -> str:
    return (
        " &middot; ".join(
            f"{_e(label)} {_e(dataset.get(key))}"
            for key, label in (("source", ""), ("split", "split"), ("limit", "limit"))
            if dataset.get(key) is not None
        ).strip()
        or '<span class="none">unknown</span>'
    )


def _usage_meta(usage: Mapping[str, Any]) -> str:
    """Calls, cache hits and tokens per role, and retries; empty when unknown."""
    parts = []
    for role in ("model", "judge"):
        u = _map(usage.get(role))
        if u:
            parts.append(
                f"{role}: {_count(u.get('api_calls'))} calls, {_count(u.get('cache_hits'))} cache hits, "
                f"{_count(u.get('prompt_tokens'))} prompt + {_count(u.get('completion_tokens'))} completion tokens"
            )
    if _int(usage.get("retries")) is not None:
        parts.append(f"retries: {usage.get('retries')}")
    return "<br>".join(parts)


def _budget_meta(budget: Mapping[str, Any]) -> str:
    """Spend against --mia-budget-tokens / --mia-budget-usd; empty without a budget."""
    if not budget:
        return ""
    parts = []
    if _int(budget.get("tokens")) is not None:
        parts.append(f"{_count(budget.get('spent_tokens'))} of {_count(budget.get('tokens'))} tokens spent")
    if _num(budget.get("usd")) is not None:
        spent = _num(budget.get("spent_usd"))
        parts.append(f"{'n/a' if spent is None else f'${spent:.4f}'} of ${_num(budget.get('usd')):g} spent")
    if budget.get("stopped"):
        parts.append(f'<b class="fail" id="budget-stopped">stopped: {_e(budget.get("stopped"))}; {_count(budget.get("n_not_run"))} sample(s) not run</b>')
    return '<span id="budget">' + "<br>".join(parts) + "</span>"


def _run_meta(report: Mapping[str, Any]) -> str:
    """Wall time, plugin version and schema; empty when none is known."""
    wall = _num(report.get("wall_seconds"))
    bits = []
    if wall is not None:
        bits.append(f"{wall:.1f} s wall")
    if report.get("plugin_version") is not None:
        bits.append(f"pytest-miabench {_e(report.get('plugin_version'))}")
    if _int(report.get("schema_version")) is not None:
        bits.append(f"schema {report.get('schema_version')}")
    return " &middot; ".join(bits)


_COUNTS = (
    ("n_samples", "samples"),
    ("n_scored", "scored"),
    ("n_failed", "failed"),
    ("n_zero", "zero"),
    ("n_dropped", "dropped"),
    ("n_excluded", "excluded"),
    ("n_missing", "missing"),
)


def _counts(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> str:
    """One list item per count; those that flag a problem are highlighted."""
    items = []
    for key, label in _COUNTS:
        value = report.get(key)
        if value is None and key == "n_samples":
            value = len(samples)
        warn = key not in ("n_samples", "n_scored") and (_int(value) or 0) > 0
        items.append(f'<li class="{"nz" if warn else ""}">{label} <b id="count-{label}">{_count(value)}</b></li>')
    return "".join(items)


def _demo_banner(report: Mapping[str, Any]) -> str:
    """Above everything: a demo or mock run's number means nothing."""
    roles = [str(r) for r in _seq(report.get("mock_roles"))]
    if report.get("demo") is True:
        text = DEMO_WARNING
    elif roles:
        text = mock_warning(roles)
    else:
        return ""
    return f'<p class="banner demo" id="demo-banner"><b>{_e(text.split(":", 1)[0])}</b>:{_e(text.split(":", 1)[1])}</p>'


def _banners(report: Mapping[str, Any]) -> str:
    banners = []
    if report.get("partial") is True:
        selection = _map(report.get("selection"))
        how = ", ".join(str(f) for f in _seq(selection.get("filters")) if isinstance(f, str))
        banners.append(
            f"Partial run: {_count(selection.get('selected'))} of {_count(selection.get('rows'))} rows selected"
            + (f" ({how})" if how else "")
            + "; the numbers cover only those samples."
        )
    elif report.get("complete") is False:
        banners.append("This run is incomplete: the numbers cover only the samples that ran.")
    if (_int(report.get("n_zero")) or 0) + (_int(report.get("n_dropped")) or 0) + (_int(report.get("n_excluded")) or 0):
        banners.append(
            "The protocol's failure policy moved the number: unparseable judge replies were counted as 0 "
            "(zero) or left out of the mean (dropped / excluded)."
        )
    return "".join(f'<p class="banner">{_e(b)}</p>' for b in banners)


def _missing(report: Mapping[str, Any]) -> str:
    missing = list(_seq(report.get("missing")))
    if not missing:
        return ""
    shown = "".join(f"<li class=\"mono\">{_e(m)}</li>" for m in missing[:MAX_MISSING_SHOWN])
    more = f"<li>&hellip; and {len(missing) - MAX_MISSING_SHOWN} more</li>" if len(missing) > MAX_MISSING_SHOWN else ""
    return f"<details><summary>{len(missing)} sample(s) not run</summary><ul>{shown}{more}</ul></details>"


def _breakdowns(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> str:
    ci_block = _map(report.get("ci"))
    n_type, n_ctype = _group_counts(samples)
    ctype = _bar_rows(_map(report.get("by_component_type")), _map(ci_block.get("by_component_type")), n_ctype, "components")
    itype = _bar_rows(_map(report.get("by_type")), _map(ci_block.get("by_type")), n_type, "samples")
    out = [
        '<section id="breakdowns"><div class="grid2">'
        f"<div><h2>Mean by component type</h2>{ctype}</div>"
        f"<div><h2>Mean by instruction type</h2>{itype}</div>"
        "</div>"
    ]
    metrics = _map(report.get("protocol_metrics"))
    spread = _map(report.get("judge_spread"))
    if metrics or spread:
        out.append('<div class="grid2">')
        if metrics:
            rows = "".join(
                f"<tr><th>{_e(k)}</th><td>{_fmt(v) if _num(v) is not None else _e(v)}</td></tr>"
                for k, v in metrics.items()
            )
            out.append(f'<div><h2>Protocol metrics</h2><table class="kv">{rows}</table></div>')
        if spread:
            rows = "".join(
                f"<tr><th>{_e(k)}</th><td>{_fmt(v) if isinstance(v, float) else _e(v)}</td></tr>"
                for k, v in spread.items()
            )
            out.append(f'<div id="judge-spread"><h2>Judge spread (repeated judging)</h2><table class="kv">{rows}</table></div>')
        out.append("</div>")
    out.append("</section>")
    return "".join(out)


def _protocol_names(report: Mapping[str, Any]) -> list[str]:
    """The protocols a multi-protocol report holds, the headline first; empty for one protocol."""
    names = [name for name in _map(report.get("protocols")) if isinstance(name, str)]
    return names if len(names) > 1 else []


def _protocols(report: Mapping[str, Any]) -> str:
    """Every protocol's number on the same answers, side by side."""
    names = _protocol_names(report)
    if not names:
        return ""
    blocks = _map(report.get("protocols"))
    compared = any(_map(_map(blocks.get(name)).get("baseline")) for name in names)
    rows = []
    for position, name in enumerate(names):
        block = _map(blocks.get(name))
        counts = _map(block.get("counts"))
        judge = _map(block.get("judge"))
        ci = _pair(_map(block.get("ci")).get("total_score"))
        base = _map(block.get("baseline"))
        failed = _int(counts.get("failed")) or 0
        sees = judge.get("sees_image")
        rows.append(
            f'<tr data-protocol="{_e(name)}"><th>{_e(name)}{" <small>(headline)</small>" if position == 0 else ""}</th>'
            f'<td class="num">{_fmt(block.get("total_score"))}</td>'
            f"<td>{'n/a' if ci is None else f'[{ci[0]:.4f}, {ci[1]:.4f}]'}</td>"
            f'<td class="num">{_count(block.get("n_counted"))}</td>'
            + "".join(f'<td class="num">{_count(counts.get(key))}</td>' for key in ("scored", "zero", "dropped", "excluded"))
            + f'<td class="num{" down-t" if failed else ""}">{_count(counts.get("failed"))}</td>'
            f"<td>{'yes' if sees is True else 'no' if sees is False else 'n/a'}</td>"
            f'<td class="num">{_e(judge.get("temperature")) if _num(judge.get("temperature")) is not None else "server&#39;s"}</td>'
            f'<td class="num">{_count(judge.get("max_tokens")) if _int(judge.get("max_tokens")) is not None else "server&#39;s"}</td>'
            + (f'<td class="num {_delta_cls(base.get("delta"))}">{_signed(base.get("delta")) if base else "not in the baseline"}</td>' if compared else "")
            + "</tr>"
        )
    return (
        '<section id="protocols"><h2>Protocols on the same answers</h2>'
        '<p class="small">The model answered each sample once; each protocol judged the answers with its own prompt, '
        "sampling, image policy, parser and failure policy. The numbers are each protocol&#39;s published metric, "
        "and are not comparable with each other.</p>"
        '<table class="changed" id="protocol-table"><thead><tr><th>protocol</th><th>total_score</th><th>95% CI</th>'
        "<th>in the mean</th><th>scored</th><th>zero</th><th>dropped</th><th>excluded</th><th>failed</th>"
        "<th>judge sees image</th><th>judge temperature</th><th>judge max_tokens</th>"
        f"{'<th>delta vs baseline</th>' if compared else ''}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _change_ci(base: Mapping[str, Any]) -> str:
    """The paired interval of the change (this run - baseline): the gate
    passes when its lower bound is at least -max_drop."""
    ci = _pair(base.get("diff_ci"))
    return "n/a" if ci is None else f"[{ci[0] + 0.0:+.4f}, {ci[1] + 0.0:+.4f}]"  # + 0.0: never "-0.0000"


def _paired(base: Mapping[str, Any]) -> str:
    """The paired statistics and whether the comparison was partial or refused."""
    out = []
    refused = base.get("refused")
    differences = _map(base.get("differences"))
    if refused is not None:
        out.append(f'<p class="banner" id="baseline-refused"><b>Not comparable</b>: {_e(refused)}</p>')
    elif base.get("partial") is True:
        out.append(
            f'<p class="banner" id="baseline-partial"><b>Partial comparison</b> on the {_count(base.get("n_common"))} '
            f"common samples: {_e(differences.get('text'))}</p>"
        )
    ci = _pair(base.get("diff_ci"))
    if _int(base.get("n_paired")) is not None:
        level = _num(base.get("ci_level"))
        p_value = _num(base.get("p_value"))
        out.append(
            '<table class="kv" id="baseline-paired"><tbody>'
            f"<tr><th>paired samples</th><td>{_count(base.get('n_paired'))}</td></tr>"
            f"<tr><th>mean change (this run &minus; baseline)</th><td>{_signed(base.get('mean_diff'))}</td></tr>"
            f"<tr><th>{'' if level is None else f'{level:.0%} '}CI (paired bootstrap)</th>"
            f"<td>{'n/a' if ci is None else f'[{ci[0]:+.4f}, {ci[1]:+.4f}]'}</td></tr>"
            f"<tr><th>p-value</th><td>{'n/a' if p_value is None else f'{p_value:.4g}'} "
            f"<span class=\"small\">({_e(base.get('p_value_test'))})</span></td></tr>"
            f"<tr><th>smallest detectable drop</th><td>{_fmt(base.get('mde'))} "
            '<span class="small">(80% power, alpha 0.05)</span></td></tr>'
            + (f"<tr><th>gate rule</th><td>{_e(base.get('gate_rule'))}</td></tr>" if base.get("gate_rule") else "")
            + "</tbody></table>"
        )
    return "".join(out)


def _baseline(report: Mapping[str, Any]) -> str:
    base = _map(report.get("baseline"))
    if not base:
        return ""
    total = _num(report.get("total_score"))
    delta = _num(base.get("delta"))
    head = (
        f'<p>Baseline <span class="mono">{_e(base.get("path"))}</span>: total_score '
        f'{_fmt(base.get("total_score"))} &rarr; {_fmt(total)} '
        f'(<b class="{_delta_cls(delta)}" id="baseline-delta">{_signed(delta)}</b>)'
    )
    if base.get("max_drop") is not None:
        head += f" &middot; max allowed drop {_fmt(base.get('max_drop'))}"
    if base.get("gate_failed") is True:
        head += ' &middot; <b class="down-t">baseline gate failed</b>'
    elif base.get("gate_failed") is False:
        head += ' &middot; <b class="up-t">baseline gate passed</b>'
    head += "</p>" + _paired(base)
    grids = (
        '<p class="small">Change = this run &minus; baseline, everywhere on this page.</p><div class="grid2">'
        f"<div><h3>This run against the baseline, by component type</h3>{_chart(report, base, 'by_component_type')}</div>"
        f"<div><h3>This run against the baseline, by instruction type</h3>{_chart(report, base, 'by_type')}</div>"
        "</div>"
    )
    return f'<section id="baseline"><h2>Compared with the baseline</h2>{head}{grids}{_movers(report, base)}</section>'


def _chart(report: Mapping[str, Any], base: Mapping[str, Any], key: str) -> str:
    """``key`` (by_type, by_component_type): baseline and this run side by
    side.  A report without the baseline's own means (older versions) has
    them back from this run's means and the changes."""
    after, changes = _map(report.get(key)), _map(base.get(key))
    before = _map(base.get(f"baseline_{key}"))
    if not before:
        before = {
            name: a - d for name in changes if (a := _num(after.get(name))) is not None and (d := _num(changes.get(name))) is not None
        }
    return _pair_rows(after, before, changes, f"chart-{key.replace('_', '-')}")


def _movers(report: Mapping[str, Any], base: Mapping[str, Any]) -> str:
    """The samples that moved, biggest drops first: image, both scores, the
    change, both answers and both judge replies side by side."""
    changed = [_map(c) for c in _seq(base.get("changed"))]
    # Biggest drops first (a release gate looks for those), then gains; no change last.
    changed.sort(key=lambda c: (_num(c.get("delta")) is None, _num(c.get("delta")) or 0.0))
    if not changed:
        return '<p class="none">No sample changed its score.</p>'
    samples = {_int(s.get("index")): s for s in map(_map, _seq(report.get("samples")))}
    rows = []
    for c in changed[:MAX_CHANGED_SHOWN]:
        anchor = _row_anchor(c.get("index"))
        idx = f'<a href="#{anchor}">{_e(c.get("index"))}</a>' if anchor else _e(c.get("index"))
        sample = _map(samples.get(_int(c.get("index"))))
        reply_after = c.get("judge_reply_after") if "judge_reply_after" in c else sample.get("judge_reply")
        rows.append(
            f'<tr><td class="thumb">{idx}{_thumb_cell(sample, _e(c.get("index")))}</td>'
            f"<td>{_fmt(c.get('before'))}</td><td>{_fmt(c.get('after'))}</td>"
            f"<td class=\"{_delta_cls(c.get('delta'))}\">{_signed(c.get('delta'))}</td>"
            f"<td class=\"answer\">{_text_cell(c.get('response_before'), 'not in the baseline report')}</td>"
            f"<td class=\"answer\">{_text_cell(c.get('response_after'), 'no answer')}</td>"
            f"<td class=\"answer\">{_text_cell(c.get('judge_reply_before'), 'not in the baseline report')}</td>"
            f"<td class=\"answer\">{_text_cell(reply_after, 'no judge reply')}</td></tr>"
        )
    listed = _int(base.get("n_changed")) or len(changed)
    shown = min(len(changed), MAX_CHANGED_SHOWN)
    more = f'<p class="small">{listed - shown} more changed samples not listed (see the table of samples).</p>' if listed > shown else ""
    return (
        "<h3>Samples that moved most, biggest drops first</h3>"
        '<div class="tablewrap"><table class="changed" id="baseline-changed"><thead><tr><th>#</th><th>baseline</th>'
        "<th>this run</th><th>change</th><th>baseline&#39;s answer</th><th>this run&#39;s answer</th>"
        "<th>baseline&#39;s judge reply</th><th>this run&#39;s judge reply</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>{more}"
    )


def _text_cell(value: Any, empty: str) -> str:
    if value is None:
        return f'<span class="none">{_e(empty)}</span>'
    if value == "":
        return '<span class="none">(empty)</span>'
    return f'<div class="txt">{_e(value)}</div>'


def _thumb_cell(sample: Mapping[str, Any], index_txt: str) -> str:
    raw = sample.get("thumbnail")
    uri = safe_image_uri(raw)
    if uri is None:
        note = "no image" if raw is None else "thumbnail withheld"
        return f'<span class="none small">{note}</span>'
    return (
        '<details class="lb"><summary title="click to enlarge">'
        f'<img src="{_e(uri)}" alt="thumbnail of sample {index_txt}" decoding="async"></summary></details>'
    )


def _score_html(score: float | None) -> str:
    html = _fmt(score)
    if score is not None:
        html += f'<span class="mini"><span style="width:{_pct(score)}"></span></span>'
    return html


def _per_protocol(sample: Mapping[str, Any], names: Sequence[str], cell: str) -> str:
    """A cell's content once per protocol, each marked with its protocol and
    score/status; only the headline's shows unless the page's protocol
    switch (JavaScript) shows another."""
    verdicts = _map(sample.get("protocols"))
    out = []
    for position, name in enumerate(names):
        verdict = _map(verdicts.get(name))
        status = verdict.get("status")
        score = _num(verdict.get("score"))
        if cell == "score":
            inner = _score_html(score)
        elif cell == "status":
            reason = verdict.get("reason")
            inner = f'<span class="status {_css_token(status)}">{_e(status) or "unknown"}</span>' + (
                f'<div class="reason">{_e(reason)}</div>' if reason else ""
            )
        else:
            inner = _text_cell(verdict.get("judge_reply"), "no judge reply")
        out.append(
            f'<div class="pv" data-protocol="{_e(name)}" data-status="{_e(status)}" '
            f'data-score="{repr(score) if score is not None else ""}"{" hidden" if position else ""}>{inner}</div>'
        )
    return "".join(out)


def _sample_row(sample: Mapping[str, Any], position: int, names: Sequence[str] = ()) -> str:
    index = _int(sample.get("index"))
    index_txt = str(index) if index is not None else _e(sample.get("index"))
    anchor = f"s-{index}" if index is not None else f"p-{position}"
    status = sample.get("status")
    score = _num(sample.get("score"))
    components = [_map(c) for c in _seq(sample.get("components"))]
    ctypes = sorted({str(c["type"]) for c in components if isinstance(c.get("type"), str)})

    comp_items = []
    for c in components:
        cscore = _num(c.get("score"))
        weight = _int(c.get("weight"))
        comp_items.append(
            "<li>"
            f'<span class="tag">{_e(c.get("type"))}</span> '
            f'<span class="tag" title="weight">w {_e(weight) if weight is not None else "?"}</span> '
            f'<span class="cscore">{_fmt(cscore, 2) if cscore is not None else "&ndash;"}</span> '
            f"{_e(c.get('text'))}</li>"
        )
    comps = f'<ol class="comps">{"".join(comp_items)}</ol>' if comp_items else ""
    instruction = sample.get("instruction")
    instr = f'<div class="txt">{_e(instruction)}</div>' if instruction else '<span class="none">instruction not recorded</span>'

    finish = sample.get("finish_reason")
    response = _text_cell(sample.get("response"), "no response")
    if finish is not None and finish != "stop":
        response += f'<div class="small flag">finish_reason: {_e(finish)}</div>'

    details = []
    cached = _map(sample.get("cached"))
    calls = _map(sample.get("calls"))
    for role in ("model", "judge"):
        bits = []
        if cached.get(role) is True:
            bits.append("cached")
        if _int(calls.get(role)) is not None:
            bits.append(f"{calls.get(role)} call{'s' if calls.get(role) != 1 else ''}")
        if bits:
            details.append(f"{role}: {', '.join(bits)}")
    if _int(sample.get("retries")):
        details.append(f"retries: {sample.get('retries')}")
    seconds = _num(sample.get("seconds"))
    if seconds is not None:
        details.append(f"{seconds:.1f} s")
    image = _map(sample.get("image"))
    if image:
        w, h = _int(image.get("width")), _int(image.get("height"))
        img_bits = [f"{w}&times;{h}" if w is not None and h is not None else ""]
        if image.get("format"):
            img_bits.append(_e(image.get("format")))
        if image.get("reencoded") is True:
            img_bits.append("re-encoded")
        details.append("image " + " ".join(b for b in img_bits if b))
    reason = sample.get("reason")
    if names:
        # Several protocols: the item's own reason (which names a failed protocol) stays below them.
        status_html = _per_protocol(sample, names, "status") + (
            f'<div class="reason">{_e(reason)}</div>' if reason and status != "failed" else ""
        )
        score_html = _per_protocol(sample, names, "score")
        judge_html = _per_protocol(sample, names, "judge_reply")
    else:
        status_html = f'<span class="status {_css_token(status)}">{_e(status) or "unknown"}</span>' + (
            f'<div class="reason">{_e(reason)}</div>' if reason else ""
        )
        score_html = _score_html(score)
        judge_html = _text_cell(sample.get("judge_reply"), "no judge reply")
    status_html += f'<div class="small">{"<br>".join(details)}</div>' if details else ""
    data_score = repr(score) if score is not None else ""
    return (
        f'<tr id="{anchor}" data-index="{_e(index if index is not None else position)}" '
        f'data-type="{_e(sample.get("type"))}" data-status="{_e(status)}" data-score="{data_score}" '
        f'data-ctypes="{_e(json.dumps(ctypes))}">'
        f'<td class="thumb">{_thumb_cell(sample, index_txt)}</td>'
        f'<td><a href="#{anchor}">{index_txt}</a><div class="nodeid">{_e(sample.get("nodeid"))}</div></td>'
        f"<td>{_e(sample.get('type'))}</td>"
        f"<td>{instr}{comps}</td>"
        f"<td>{response}</td>"
        f"<td>{judge_html}</td>"
        f"<td>{status_html}</td>"
        f'<td class="score">{score_html}</td>'
        "</tr>"
    )


def _options(values: Sequence[str]) -> str:
    return '<option value="">all</option>' + "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)


def _samples_table(samples: Sequence[Mapping[str, Any]], names: Sequence[str] = ()) -> str:
    types = sorted({str(s["type"]) for s in samples if isinstance(s.get("type"), str)})
    statuses = sorted(
        {str(s["status"]) for s in samples if isinstance(s.get("status"), str)}
        | {str(v["status"]) for s in samples for v in map(_map, _map(s.get("protocols")).values()) if isinstance(v.get("status"), str)}
        if names
        else {str(s["status"]) for s in samples if isinstance(s.get("status"), str)}
    )
    switch = (
        '<label>protocol <select id="f-protocol">'
        + "".join(f'<option value="{_e(n)}"{" selected" if i == 0 else ""}>{_e(n)}</option>' for i, n in enumerate(names))
        + "</select></label>"
        if names
        else ""
    )
    ctypes = sorted(
        {
            str(_map(c)["type"])
            for s in samples
            for c in _seq(s.get("components"))
            if isinstance(_map(c).get("type"), str)
        }
    )
    controls = (
        '<div id="controls" class="controls" hidden>'
        f'{switch}<label>type <select id="f-type">{_options(types)}</select></label>'
        f'<label>component type <select id="f-ctype">{_options(ctypes)}</select></label>'
        f'<label>status <select id="f-status">{_options(statuses)}</select></label>'
        '<label>search <input id="f-q" type="search" placeholder="text in any column"></label>'
        '<button type="button" id="f-reset">reset</button>'
        '<span id="f-count" class="muted"></span>'
        "</div>"
    )
    rows = "".join(_sample_row(s, pos, names) for pos, s in enumerate(samples))
    return (
        f'<section id="samples-section"><h2>Samples ({len(samples)})</h2>{controls}'
        '<div class="tablewrap"><table class="samples" id="samples">'
        '<colgroup><col style="width:88px"><col style="width:116px"><col style="width:106px">'
        '<col style="width:26%"><col style="width:29%"><col style="width:21%">'
        '<col style="width:150px"><col style="width:84px"></colgroup>'
        "<thead><tr>"
        "<th>image</th>"
        '<th aria-sort="none"><button type="button" class="sort" data-sort="index">#</button></th>'
        '<th aria-sort="none"><button type="button" class="sort" data-sort="type">type</button></th>'
        "<th>instruction &amp; components</th><th>response</th><th>judge reply</th>"
        '<th aria-sort="none"><button type="button" class="sort" data-sort="status">status</button></th>'
        '<th aria-sort="none"><button type="button" class="sort" data-sort="score">score</button></th>'
        f"</tr></thead><tbody>{rows}</tbody></table></div></section>"
    )


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page (no network needed)."""
    report = _map(report)
    samples = [_map(s) for s in _seq(report.get("samples"))]
    model = _map(report.get("model"))
    title = f"MIA-Bench {'DEMO ' if report.get('demo') is True else ''}{_fmt(report.get('total_score'))}"
    if model.get("name") is not None:
        title += f" \u2014 {_e(model.get('name'))}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        f"{_header(report, samples)}{_protocols(report)}{_breakdowns(report, samples)}{_baseline(report)}"
        f"{_samples_table(samples, _protocol_names(report))}"
        '<footer>Generated by pytest-miabench. Self-contained: no network access is needed or allowed '
        "(Content-Security-Policy). Filtering and sorting need JavaScript; everything else does not.</footer>"
        f"<script>{_JS}</script></body></html>\n"
    )
