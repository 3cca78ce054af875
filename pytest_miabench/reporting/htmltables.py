"""The tables and charts of the HTML page as plain view data: the means by
type with their intervals, the protocols side by side, the comparison with
the baseline and the samples that moved, and the table of samples.

Values are read defensively (any field may be missing or of a wrong type),
numbers formatted and image URIs checked here (``safe_image_uri``); text
is left as it is: the templates escape it (``html.render_html``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .values import count, fixed, integer, mapping, number, pair, sequence, signed, text

__all__ = ["safe_image_uri", "tables"]

View = dict[str, Any]
_DATA_URI = re.compile(r"data:image/(?:jpeg|png|webp|gif);base64,[A-Za-z0-9+/]+={0,2}")
# A 160 px JPEG at quality 70 is 3-10 kB; anything far larger is not a thumbnail.
MAX_THUMBNAIL_CHARS = 300_000
MAX_CHANGED_SHOWN = 30


def safe_image_uri(value: Any) -> str | None:
    """``value`` if it is a base64 image ``data:`` URI of an allowed type and
    a sane size, else None.  The full match leaves no room for quotes,
    spaces or another scheme."""
    if not isinstance(value, str) or len(value) > MAX_THUMBNAIL_CHARS:
        return None
    return value if _DATA_URI.fullmatch(value) else None


def _pct(value: float) -> str:
    """A CSS percentage for a 0-1 value, clamped."""
    return f"{min(1.0, max(0.0, value)) * 100:.2f}%"


_STATUSES = ("scored", "zero", "dropped", "excluded", "failed")


def _css_token(value: Any) -> str:
    """A class-name-safe token (for status colouring); unknown -> other."""
    return value if isinstance(value, str) and value in _STATUSES else "other"


def _delta_cls(value: Any) -> str:
    """The colour of a change: up, down, or none for no change or n/a."""
    v = number(value)
    return "" if v is None or v == 0 else ("up-t" if v > 0 else "down-t")


# -- breakdowns and protocols --------------------------------------------------


def _group_counts(samples: Sequence[Mapping[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    """Per instruction type: samples in the mean; per component type:
    components with a score in samples in the mean (the aggregation rule)."""
    by_type: dict[str, int] = {}
    by_ctype: dict[str, int] = {}
    for s in samples:
        if s.get("status") == "failed" or number(s.get("score")) is None:
            continue
        t = s.get("type")
        if isinstance(t, str):
            by_type[t] = by_type.get(t, 0) + 1
        for c in map(mapping, sequence(s.get("components"))):
            ct = c.get("type")
            if isinstance(ct, str) and number(c.get("score")) is not None:
                by_ctype[ct] = by_ctype.get(ct, 0) + 1
    return by_type, by_ctype


def _bars(means: Mapping[str, Any], cis: Mapping[str, Any], counts: Mapping[str, int], unit: str) -> View:
    """Per group: its mean as a bar on a 0-1 scale, its interval as a whisker."""
    rows = []
    for name, raw in means.items():
        mean = number(raw)
        ci = pair(cis.get(name)) if isinstance(name, str) else None
        whisker = None
        if mean is not None and ci is not None:
            lo, hi = min(1.0, max(0.0, ci[0])), min(1.0, max(0.0, ci[1]))
            whisker = (_pct(lo), _pct(hi - lo))
        rows.append(
            {
                "name": name,
                "fill": None if mean is None else _pct(mean),
                "whisker": whisker,
                "value": fixed(mean),
                "ci": None if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]",
                "n": counts.get(name),
            }
        )
    return {"rows": rows, "unit": unit}


def _breakdowns(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> View:
    ci_block = mapping(report.get("ci"))
    n_type, n_ctype = _group_counts(samples)
    metrics = mapping(report.get("protocol_metrics"))
    spread = mapping(report.get("judge_spread"))
    return {
        "ctype": _bars(mapping(report.get("by_component_type")), mapping(ci_block.get("by_component_type")), n_ctype, "components"),
        "itype": _bars(mapping(report.get("by_type")), mapping(ci_block.get("by_type")), n_type, "samples"),
        "metrics": [(k, fixed(v) if number(v) is not None else v) for k, v in metrics.items()],
        "spread": [(k, fixed(v) if isinstance(v, float) else v) for k, v in spread.items()],
    }


def _protocol_names(report: Mapping[str, Any]) -> list[str]:
    """The protocols a multi-protocol report holds, the headline first; empty for one protocol."""
    names = [name for name in mapping(report.get("protocols")) if isinstance(name, str)]
    return names if len(names) > 1 else []


def _protocols(report: Mapping[str, Any]) -> View | None:
    """Every protocol's number on the same answers, side by side."""
    names = _protocol_names(report)
    if not names:
        return None
    blocks = {name: mapping(mapping(report.get("protocols")).get(name)) for name in names}
    rows = []
    for name, block in blocks.items():
        counts, judge, base = mapping(block.get("counts")), mapping(block.get("judge")), mapping(block.get("baseline"))
        ci = pair(mapping(block.get("ci")).get("total_score"))
        sees = judge.get("sees_image")
        rows.append(
            {
                "name": name,
                "total": fixed(block.get("total_score")),
                "ci": "n/a" if ci is None else f"[{ci[0]:.4f}, {ci[1]:.4f}]",
                "n_counted": count(block.get("n_counted")),
                "counts": [count(counts.get(key)) for key in ("scored", "zero", "dropped", "excluded")],
                "failed": count(counts.get("failed")),
                "failed_cls": " down-t" if integer(counts.get("failed")) else "",
                "sees": "yes" if sees is True else "no" if sees is False else "n/a",
                "temperature": text(judge.get("temperature")) if number(judge.get("temperature")) is not None else "server's",
                "max_tokens": count(judge.get("max_tokens")) if integer(judge.get("max_tokens")) is not None else "server's",
                "delta_cls": _delta_cls(base.get("delta")),
                "delta": signed(base.get("delta")) if base else "not in the baseline",
            }
        )
    return {"rows": rows, "compared": any(mapping(block.get("baseline")) for block in blocks.values())}


# -- the baseline --------------------------------------------------------------


def _baseline(report: Mapping[str, Any]) -> View | None:
    """This run against the baseline; None without one."""
    base = mapping(report.get("baseline"))
    if not base:
        return None
    delta = number(base.get("delta"))
    return {
        "path": base.get("path"),
        "before": fixed(base.get("total_score")),
        "after": fixed(report.get("total_score")),
        "delta_cls": _delta_cls(delta),
        "delta": signed(delta),
        "max_drop": None if base.get("max_drop") is None else fixed(base.get("max_drop")),
        "gate": "failed" if base.get("gate_failed") is True else "passed" if base.get("gate_failed") is False else None,
        "paired": _paired(base),
        "by_component_type": _chart(report, base, "by_component_type"),
        "by_type": _chart(report, base, "by_type"),
        "movers": _movers(report, base),
    }


def _paired(base: Mapping[str, Any]) -> View:
    """The paired statistics and whether the comparison was partial or refused."""
    refused = base.get("refused")
    table = None
    if integer(base.get("n_paired")) is not None:
        level = number(base.get("ci_level"))
        p_value = number(base.get("p_value"))
        ci = pair(base.get("diff_ci"))
        table = {
            "n_paired": count(base.get("n_paired")),
            "mean_diff": signed(base.get("mean_diff")),
            "ci_label": f"{'' if level is None else f'{level:.0%} '}CI (paired bootstrap)",
            "ci": "n/a" if ci is None else f"[{signed(ci[0])}, {signed(ci[1])}]",
            "p_value": "n/a" if p_value is None else f"{p_value:.4g}",
            "p_value_test": base.get("p_value_test"),
            "mde": fixed(base.get("mde")),
            "gate_rule": base.get("gate_rule") or None,
        }
    return {
        "refused": None if refused is None else text(refused),
        "partial": refused is None and base.get("partial") is True,
        "n_common": count(base.get("n_common")),
        "differences": mapping(base.get("differences")).get("text"),
        "table": table,
    }


def _chart(report: Mapping[str, Any], base: Mapping[str, Any], key: str) -> View:
    """``key`` (by_type, by_component_type) per group: the baseline's mean
    (grey) over this run's (blue) on one 0-1 scale, and the change (this run
    - baseline).  A report without the baseline's own means (older versions)
    has them back from this run's means and the changes."""
    after, changes = mapping(report.get(key)), mapping(base.get(key))
    before = mapping(base.get(f"baseline_{key}"))
    if not before:
        before = {
            name: a - d for name in changes if (a := number(after.get(name))) is not None and (d := number(changes.get(name))) is not None
        }
    rows = []
    for name in sorted({str(k) for k in (*after, *before, *changes)}):
        was, now, change = number(before.get(name)), number(after.get(name)), number(changes.get(name))
        if change is None and was is not None and now is not None:
            change = now - was
        bars = [(cls, _pct(v), f"{label} {fixed(v)}") for v, cls, label in ((was, "base", "baseline"), (now, "cand", "this run")) if v is not None]
        rows.append({"name": name, "bars": bars, "before": fixed(was), "after": fixed(now), "change_cls": _delta_cls(change), "change": signed(change)})
    return {"id": f"chart-{key.replace('_', '-')}", "rows": rows}


def _movers(report: Mapping[str, Any], base: Mapping[str, Any]) -> View | None:
    """The samples that moved, biggest drops first: image, both scores, the
    change, both answers and both judge replies side by side."""
    changed = [mapping(c) for c in sequence(base.get("changed"))]
    # Biggest drops first (a release gate looks for those), then gains; no change last.
    changed.sort(key=lambda c: (number(c.get("delta")) is None, number(c.get("delta")) or 0.0))
    if not changed:
        return None
    samples = {integer(s.get("index")): s for s in map(mapping, sequence(report.get("samples")))}
    rows = []
    for c in changed[:MAX_CHANGED_SHOWN]:
        index = integer(c.get("index"))
        sample = mapping(samples.get(index))
        rows.append(
            {
                "index": text(c.get("index")),
                "anchor": None if index is None else f"s-{index}",
                "thumb": _thumb(sample, text(c.get("index"))),
                "before": fixed(c.get("before")),
                "after": fixed(c.get("after")),
                "delta_cls": _delta_cls(c.get("delta")),
                "delta": signed(c.get("delta")),
                "cells": [
                    (c.get("response_before"), "not in the baseline report"),
                    (c.get("response_after"), "no answer"),
                    (c.get("judge_reply_before"), "not in the baseline report"),
                    (c.get("judge_reply_after") if "judge_reply_after" in c else sample.get("judge_reply"), "no judge reply"),
                ],
            }
        )
    listed = integer(base.get("n_changed")) or len(changed)
    return {"rows": rows, "more": max(0, listed - len(rows))}


def _thumb(sample: Mapping[str, Any], index_txt: str) -> View:
    """The sample's thumbnail when it is a safe image URI; else why not."""
    raw = sample.get("thumbnail")
    uri = safe_image_uri(raw)
    note = None if uri is not None else "no image" if raw is None else "thumbnail withheld"
    return {"uri": uri, "note": note, "index": index_txt}


# -- the samples ---------------------------------------------------------------


def _verdict_cells(verdict: Mapping[str, Any], protocol: str | None) -> View:
    """A status, score and judge reply: the sample's own, or one protocol's."""
    status, score, reason = verdict.get("status"), number(verdict.get("score")), verdict.get("reason")
    return {
        "protocol": protocol,
        "status": text(status),
        "status_cls": _css_token(status),
        "reason": text(reason) if reason else None,
        "score": fixed(score),
        "score_pct": None if score is None else _pct(score),
        "data_score": repr(score) if score is not None else "",
        "judge_reply": verdict.get("judge_reply"),
    }


def _details(sample: Mapping[str, Any]) -> list[str]:
    """Calls, cache, retries, time and image facts of one sample."""
    details = []
    cached, calls = mapping(sample.get("cached")), mapping(sample.get("calls"))
    for role in ("model", "judge"):
        bits = []
        if cached.get(role) is True:
            bits.append("cached")
        if integer(calls.get(role)) is not None:
            bits.append(f"{calls.get(role)} call{'s' if calls.get(role) != 1 else ''}")
        if bits:
            details.append(f"{role}: {', '.join(bits)}")
    if integer(sample.get("retries")):
        details.append(f"retries: {sample.get('retries')}")
    seconds = number(sample.get("seconds"))
    if seconds is not None:
        details.append(f"{seconds:.1f} s")
    image = mapping(sample.get("image"))
    if image:
        w, h = integer(image.get("width")), integer(image.get("height"))
        bits = [f"{w}\u00d7{h}" if w is not None and h is not None else ""]
        if image.get("format"):
            bits.append(text(image.get("format")))
        if image.get("reencoded") is True:
            bits.append("re-encoded")
        details.append("image " + " ".join(b for b in bits if b))
    return details


def _sample_row(sample: Mapping[str, Any], position: int, names: Sequence[str]) -> View:
    """One row of the table: its data-* attributes (read by the script), the
    sample's texts, and its status, score and judge reply, once per protocol
    in ``names`` when there are several."""
    index = integer(sample.get("index"))
    score = number(sample.get("score"))
    components = [mapping(c) for c in sequence(sample.get("components"))]
    instruction, finish, reason = sample.get("instruction"), sample.get("finish_reason"), sample.get("reason")
    index_txt = str(index) if index is not None else text(sample.get("index"))
    verdicts = mapping(sample.get("protocols"))
    return {
        "anchor": f"s-{index}" if index is not None else f"p-{position}",
        "data_index": index if index is not None else position,
        "index": index_txt,
        "type": sample.get("type"),
        "status": sample.get("status"),
        "data_score": repr(score) if score is not None else "",
        "ctypes": json.dumps(sorted({str(c["type"]) for c in components if isinstance(c.get("type"), str)})),
        "thumb": _thumb(sample, index_txt),
        "nodeid": sample.get("nodeid"),
        "instruction": text(instruction) if instruction else None,
        "components": [
            {
                "type": c.get("type"),
                "weight": text(integer(c.get("weight"))) or "?",
                "score": fixed(c.get("score"), 2) if number(c.get("score")) is not None else "\u2013",
                "text": c.get("text"),
            }
            for c in components
        ],
        "response": sample.get("response"),
        "finish": None if finish is None or finish == "stop" else text(finish),
        # Several protocols: one cell per protocol; the item's own reason (which names a failed protocol) below them.
        "multi": bool(names),
        "verdicts": [_verdict_cells(mapping(verdicts.get(name)), name) for name in names] or [_verdict_cells(sample, None)],
        "item_reason": text(reason) if names and reason and sample.get("status") != "failed" else None,
        "details": _details(sample),
    }


def _samples_table(samples: Sequence[Mapping[str, Any]], names: Sequence[str]) -> View:
    """The rows, and the values the filter controls offer."""
    def strings(values: Any) -> list[str]:
        return sorted({str(v) for v in values if isinstance(v, str)})

    statuses = [s.get("status") for s in samples]
    if names:
        statuses += [mapping(v).get("status") for s in samples for v in mapping(s.get("protocols")).values()]
    return {
        "n": len(samples),
        "protocols": list(names),
        "types": strings(s.get("type") for s in samples),
        "ctypes": strings(mapping(c).get("type") for s in samples for c in sequence(s.get("components"))),
        "statuses": strings(statuses),
        "rows": [_sample_row(s, pos, names) for pos, s in enumerate(samples)],
    }


def tables(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> View:
    """Everything below the page's header, by section (None: not shown)."""
    return {
        "protocols": _protocols(report),
        "breakdowns": _breakdowns(report, samples),
        "baseline": _baseline(report),
        "samples": _samples_table(samples, _protocol_names(report)),
    }
