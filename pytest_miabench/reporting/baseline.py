"""Compare a run with an earlier JSON report (``--mia-baseline``).

Only like can be compared: a baseline of another protocol, dataset or split
measures something else, so it is refused with a usage error rather than
producing a meaningless delta.  Within one dataset, the two runs must have
run the same samples (indices, instruction texts, images); a baseline of
other samples is refused unless ``--mia-baseline-common`` asks for the
comparison on the samples both share, which is then marked partial.

The comparison is paired: per sample (by dataset index), this run's score
minus the baseline's.  ``--mia-max-drop X`` is a non-inferiority gate on
those differences: it passes only when the lower bound of the 95 % paired
bootstrap interval of the change (candidate - baseline) is at least -X
(see ``gate``; ``verdict`` says it in words).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from pydantic import ValidationError

from ..config.settings import MOCK_LABEL
from ..result import SampleRecord
from ..summary import SCHEMA_VERSION, BaselineComparison, ChangedSample, SampleSetDifference, Tally, gate_rule

# The verdict in words lives with the report's types (every layer reads it); offered here too.
from ..summary import BaselineVerdict as BaselineVerdict
from ..summary import verdict as verdict
from . import schema, stats

CHANGED_LISTED = 20
#: Indices of each kind of difference a message and the report name.
EXAMPLES = 5
#: The level of the paired interval the gate reads.
GATE_LEVEL = 0.95


class BaselineSample(TypedDict):
    index: int
    score: float | None
    instruction: str | None
    image_sha256: str | None  # None: not known (an older report, or the image failed)
    response: str | None
    judge_reply: str | None


#: What this run knows of a sample to match it: its instruction text and
#: image hash (None where not known, e.g. before the image was read).
RunSamples = Mapping[int, tuple["str | None", "str | None"]]


class Baseline(TypedDict):
    """What a comparison reads from a baseline report, checked by ``load``."""

    created: object
    total_score: float
    by_type: dict[str, float | None]
    by_component_type: dict[str, float | None]
    samples: list[BaselineSample]


class BaselineError(ValueError):
    """The baseline report cannot be used; the message says why."""


def load(path: str, protocol: str, dataset: str, split: str, fingerprint: str | None = None) -> Baseline:
    """Read and check a baseline report; keep what ``compare`` reads for
    ``protocol``, the headline of this run: the baseline must hold it, as
    its own headline or among its ``protocols``."""
    return load_protocols(path, (protocol,), dataset, split, fingerprint)[protocol]


def load_protocols(
    path: str, protocols: Sequence[str], dataset: str, split: str, fingerprint: str | None = None
) -> dict[str, Baseline]:
    """``load`` for each of ``protocols`` the baseline holds (the first,
    this run's headline, it must hold): a run judged under several
    protocols is compared protocol by protocol with a baseline that was too."""
    data = read_report(path)
    theirs = (data.get("protocol") or {}).get("name")
    held = data.get("protocols") or {}
    # Only a block that holds the report's own headline is one this plugin
    # wrote (older reports have none; an edited headline name voids it).
    held = held if theirs in held else {}
    headline = protocols[0]
    if theirs != headline and (held.get(headline) or {}).get("total_score") is None:
        also = f" (and {', '.join(repr(name) for name in held if name != theirs)})" if len(held) > 1 else ""
        raise BaselineError(f"{path}: made with protocol {theirs!r}{also}, this run uses {headline!r}; scores are not comparable")
    their_data = data.get("dataset") or {}
    same_source = (their_data.get("source"), their_data.get("split")) == (dataset, split)
    # The same rows under another path (a CI checkout, a relative path) match too.
    same_rows = fingerprint is not None and their_data.get("fingerprint") == fingerprint
    if not (same_source or same_rows):
        raise BaselineError(
            f"{path}: made on dataset {their_data.get('source')!r} split {their_data.get('split')!r}, "
            f"this run uses {dataset!r} split {split!r} (and the rows differ)"
        )
    _check_scores(data, path)
    out: dict[str, Baseline] = {}
    for name in protocols:
        if name == theirs:
            block: dict[str, Any] = data
        elif (held.get(name) or {}).get("total_score") is not None:
            block = held[name]
            _check_unit(block["total_score"], f"{path}: protocols.{name}: total_score")
            _check_breakdowns(block, f"{path}: protocols.{name}")
            for sample in data.get("samples") or []:
                _check_unit(_protocol_score(sample, name), f"{path}: sample {sample['index']}: protocols.{name}.score")
        else:
            continue  # the baseline did not judge under this protocol (or it has no number)
        out[name] = {
            "created": data.get("created"),
            "total_score": block["total_score"],
            "by_type": block.get("by_type") or {},
            "by_component_type": block.get("by_component_type") or {},
            "samples": [
                {
                    "index": s["index"],
                    "score": s.get("score") if name == theirs else _protocol_score(s, name),
                    "instruction": s.get("instruction"),
                    "image_sha256": (s.get("image") or {}).get("sha256") or None,
                    "response": s.get("response"),
                    "judge_reply": s.get("judge_reply") if name == theirs else _protocol_reply(s, name),
                }
                for s in data.get("samples") or []
            ],
        }
    return out


def _protocol_score(sample: dict[str, Any], name: str) -> float | None:
    """A sample's score under a protocol other than the report's headline (None: not known)."""
    score = ((sample.get("protocols") or {}).get(name) or {}).get("score")
    return None if score is None else float(score)


def _protocol_reply(sample: dict[str, Any], name: str) -> str | None:
    """A sample's judge reply under a protocol other than the report's headline (None: not known)."""
    reply: str | None = ((sample.get("protocols") or {}).get(name) or {}).get("judge_reply")
    return reply


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_unit(value: Any, where: str) -> None:
    """A score a report holds is null or a finite number in [0, 1]: JSON
    reads ``-Infinity`` and ``1e300`` as numbers, and either would end the
    run after every call (an infinite mean) or let any run pass the gate."""
    if value is not None and not (_number(value) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise BaselineError(f"{where} is {value!r}, not a score in [0, 1]; this report cannot be a baseline")


def read_report(path: str) -> dict[str, Any]:
    """A JSON report of this schema from a real run, or BaselineError:
    unreadable, not JSON, not a report, another schema, or a run whose
    numbers mean nothing (the demo, the built-in mock).  What a baseline and
    both reports of ``pytest-miabench compare`` must be."""
    try:
        data = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{path}: not a JSON report: {exc}") from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise BaselineError(f"{path}: not a pytest-miabench JSON report (no schema_version)")
    if data["schema_version"] != SCHEMA_VERSION:
        raise BaselineError(f"{path}: schema_version {data['schema_version']!r}, this version reads {SCHEMA_VERSION}")
    # Every key it has must have the type the report's models give it: a
    # hand-edited or foreign file fails here, at start-up, not after every
    # sample has been paid for.
    if problem := shape_problem(data):
        raise BaselineError(f"{path}: {problem}")
    _check_not_mocked(data, path)
    return data


#: Errors a report read back may have: a key it lacks (an older report of
#: this schema_version, which only ever gains keys) or one it adds.  What a
#: reader needs of a missing key, it checks itself.
_TOLERATED = ("missing", "extra_forbidden")

_EXPECTED = {
    "float_type": "a number",
    "int_type": "an integer",
    "string_type": "text",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
}


def shape_problem(data: dict[str, Any]) -> str | None:
    """Where a report read back has a key of the wrong type, or None.  Keys
    it lacks or adds are let be (see ``_TOLERATED``), except a sample's index."""
    try:
        schema.Report.model_validate(data)
    except ValidationError as exc:
        # Kept though missing: a sample's index, what samples are matched on.
        errors = [e for e in exc.errors() if e["type"] not in _TOLERATED or (e["loc"][0], e["loc"][2:]) == ("samples", ("index",))]
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            return _shape_message(errors[0]["loc"], errors[0]["type"], errors[0]["input"], errors[0]["msg"], data) + more
    return None


def _shape_message(loc: Sequence[int | str], kind: str, value: Any, msg: str, data: dict[str, Any]) -> str:
    where = _field_path(loc, data)
    if kind == "missing":
        return f"{where} is missing"
    expected = _EXPECTED.get(kind) or msg.removeprefix("Input should be ")
    return f"{where} is {value!r}, not {expected}"


def _field_path(loc: Sequence[int | str], data: dict[str, Any]) -> str:
    """The key's path as the report's messages name it: "sample 12: image.sha256", "by_type.advanced"."""
    if len(loc) > 2 and loc[0] == "samples" and isinstance(loc[1], int) and loc[2] != "index":
        index = data["samples"][loc[1]].get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            return f"sample {index}: " + ".".join(str(part) for part in loc[2:])
    return ".".join(str(part) for part in loc)


def _check_not_mocked(data: dict[str, Any], path: str) -> None:
    """The built-in mock's scores are random: a gate against them compares a
    real run with noise.  A --mia-demo report, or one where either role was
    the mock, is no baseline."""
    if data.get("demo") is True:
        raise BaselineError(f"{path}: made by --mia-demo (the built-in mock model and judge: its scores are random); its numbers compare with nothing")
    roles = data.get("mock_roles") or []
    mocked = [role for role in ("model", "judge") if role in roles or (data.get(role) or {}).get("base_url") == MOCK_LABEL]
    if mocked:
        raise BaselineError(
            f"{path}: the {' and the '.join(mocked)} of that run {'was' if len(mocked) == 1 else 'were'} the built-in mock "
            "(its scores are random); its numbers compare with nothing"
        )


def _check_scores(data: dict[str, Any], path: str) -> None:
    """What a comparison needs beyond the report's shape (``read_report``
    checked the types): a total_score, and every score in [0, 1]."""
    if data.get("total_score") is None:
        raise BaselineError(f"{path}: total_score is None, not a number")
    _check_unit(data["total_score"], f"{path}: total_score")
    _check_breakdowns(data, path)
    for sample in data.get("samples", []):
        _check_unit(sample.get("score"), f"{path}: sample {sample['index']}: score")


def _check_breakdowns(data: dict[str, Any], where: str) -> None:
    for key in ("by_type", "by_component_type"):
        for name, value in data.get(key, {}).items():
            _check_unit(value, f"{where}: {key}.{name}")


def _split(baseline: Baseline, run: RunSamples) -> tuple[list[int], list[int], list[int], list[int]]:
    """Indices only in the baseline, only in the run, and common ones whose
    instruction text or image hash differ (where both sides know it)."""
    theirs = {s["index"]: s for s in baseline["samples"]}
    instruction: list[int] = []
    image: list[int] = []
    for index in sorted(set(theirs) & set(run)):
        text, sha = run[index]
        before = theirs[index]
        if text is not None and before["instruction"] is not None and text != before["instruction"]:
            instruction.append(index)
        if sha and before["image_sha256"] and sha != before["image_sha256"]:
            image.append(index)
    return sorted(set(theirs) - set(run)), sorted(set(run) - set(theirs)), instruction, image


def differences(baseline: Baseline, run: RunSamples) -> SampleSetDifference | None:
    """How the baseline's samples differ from this run's, or None when they
    are the same.  A sample matches by index, then by instruction text and
    image hash where both sides know them (an older report has no image
    hashes: ``images_compared`` is then False)."""
    only_baseline, only_run, instruction, image = _split(baseline, run)
    if not (only_baseline or only_run or instruction or image):
        return None
    counts = (len(only_baseline), len(only_run), len(instruction), len(image))
    examples = {
        "only_baseline": only_baseline[:EXAMPLES],
        "only_run": only_run[:EXAMPLES],
        "instruction": instruction[:EXAMPLES],
        "image": image[:EXAMPLES],
    }
    return {
        "n_only_baseline": len(only_baseline),
        "n_only_run": len(only_run),
        "n_instruction": len(instruction),
        "n_image": len(image),
        "images_compared": any(s["image_sha256"] for s in baseline["samples"]),
        "examples": examples,
        "text": _describe(counts, examples),
    }


def _describe(counts: tuple[int, int, int, int], examples: dict[str, list[int]]) -> str:
    """One line: what differs, with counts and a few indices."""
    parts = []
    for count, key, what in zip(
        counts,
        ("only_baseline", "only_run", "instruction", "image"),
        ("only in the baseline", "only in this run", "with another instruction text", "with another image"),
    ):
        if count:
            shown = ", ".join(str(i) for i in examples[key])
            more = ", ..." if count > len(examples[key]) else ""
            parts.append(f"{count} sample{'s' if count != 1 else ''} {what} (index {shown}{more})")
    return "the sample sets differ: " + "; ".join(parts)


REFUSAL_HINT = (
    "rerun the baseline's selection (same --mia-limit, -k, --deselect), or pass --mia-baseline-common "
    "to compare on the samples both share (the comparison is then marked partial)"
)


def refusal(diff: SampleSetDifference) -> str:
    return f"{diff['text']}; {REFUSAL_HINT}"


def _deltas(now: Mapping[str, float | None], before: Mapping[str, float | None]) -> dict[str, float | None]:
    keys = sorted(set(now) | set(before))
    out: dict[str, float | None] = {}
    for key in keys:
        a, b = now.get(key), before.get(key)
        out[key] = None if a is None or b is None else a - b
    return out


def gate(diff_ci: list[float] | None, max_drop: float) -> str:
    """The --mia-max-drop verdict from the paired interval ``[low, high]`` of
    the change (candidate - baseline: negative is a drop).

    - ``pass``: ``low >= -max_drop``: a drop larger than allowed is ruled
      out at the interval's level (non-inferiority);
    - ``regression``: ``high < -max_drop``: the run is worse than allowed;
    - ``inconclusive``: the interval straddles ``-max_drop`` (or nothing was
      paired): too noisy to rule a larger drop out, so the gate fails too.
    """
    if diff_ci is None:
        return "inconclusive"
    low, high = diff_ci
    # A hair of slack: a drop of exactly max_drop, computed in floating point, is allowed.
    if low >= -max_drop - 1e-12:
        return "pass"
    if high < -max_drop - 1e-12:
        return "regression"
    return "inconclusive"


def compare(
    summary: Tally,
    results: Mapping[str, SampleRecord],
    baseline: Baseline,
    path: str,
    max_drop: float | None,
    *,
    run_samples: RunSamples | None = None,
    common: bool = False,
    seed: int = 0,
) -> BaselineComparison:
    """The ``baseline`` block of a report: deltas, paired statistics, biggest
    movers, the gate.  ``results`` maps node ids to this run's records;
    ``run_samples`` is every sample this run selected (default: those in
    ``results``); ``common`` is --mia-baseline-common."""
    known = _known(run_samples or {}, results)
    diff = differences(baseline, known)
    _, only_run, other_text, other_image = _split(baseline, known)
    # Pairs are made only of samples that are the same in both runs.
    common_indexes = set(known) - set(only_run) - set(other_text) - set(other_image)
    changed, pairs = _changes(results, baseline, common_indexes)
    total = summary["total_score"]
    before_total = baseline["total_score"]
    delta = None if total is None else total - before_total
    paired = stats.paired_stats(pairs, seed=seed, level=GATE_LEVEL)
    refused = None if diff is None or common else refusal(diff)
    verdict = "refused" if refused is not None else None if max_drop is None else gate(paired["ci"], max_drop)
    return {
        "path": path,
        "created": baseline["created"],
        "total_score": before_total,
        "delta": delta,
        "by_type": _deltas(summary["by_type"], baseline["by_type"]),
        "by_component_type": _deltas(summary["by_component_type"], baseline["by_component_type"]),
        "baseline_by_type": dict(baseline["by_type"]),
        "baseline_by_component_type": dict(baseline["by_component_type"]),
        "n_changed": len(changed),
        "n_only_baseline": 0 if diff is None else diff["n_only_baseline"],
        "n_only_run": 0 if diff is None else diff["n_only_run"],
        "differences": diff,
        "partial": diff is not None and common,
        "refused": refused,
        "n_common": len(common_indexes),
        "n_paired": paired["n"],
        "mean_diff": paired["mean_diff"],
        "sd_diff": paired["sd_diff"],
        "diff_ci": paired["ci"],
        "ci_level": GATE_LEVEL,
        "p_value": paired["p_value"],
        "p_value_test": "two-sided paired sign-flip permutation test, "
        + ("exact (every sign pattern)" if paired["p_exact"] else f"{stats.PERMUTATIONS} permutations seeded by --mia-seed"),
        "mde": paired["mde"],
        "changed": changed[:CHANGED_LISTED],
        "max_drop": max_drop,
        "gate_rule": None if max_drop is None else gate_rule(max_drop, GATE_LEVEL),
        "gate_verdict": verdict,
        "gate_failed": None if verdict is None else verdict != "pass",
    }


def _known(run_samples: RunSamples, results: Mapping[str, SampleRecord]) -> dict[int, tuple[str | None, str | None]]:
    """What this run knows of each sample: every selected one, and those with results."""
    known = dict(run_samples)
    for record in results.values():
        image = record["image"]
        known[record["index"]] = (record["instruction"], image.get("sha256") if image else None)
    return known


def _changes(
    results: Mapping[str, SampleRecord], baseline: Baseline, common_indexes: set[int]
) -> tuple[list[ChangedSample], list[float]]:
    """The common samples whose score changed (biggest drops first), and the
    paired differences (this run - baseline, by index) of those scored in both."""
    before_by_index = {s["index"]: s for s in baseline["samples"] if s["index"] in common_indexes}
    changed: list[ChangedSample] = []
    pairs: list[tuple[int, float]] = []
    for nodeid, record in results.items():
        index = record["index"]
        if index not in common_indexes:
            continue
        sample = before_by_index[index]
        before, after = sample["score"], record["score"]
        if record["status"] != "failed" and before is not None and after is not None:
            pairs.append((index, after - before))
        if before == after:
            continue
        changed.append(
            {
                "index": index,
                "nodeid": nodeid,
                "before": before,
                "after": after,
                "delta": None if before is None or after is None else after - before,
                "response_before": sample["response"],
                "response_after": record["response"],
                "judge_reply_before": sample["judge_reply"],
                "judge_reply_after": record["judge_reply"],
            }
        )
    # Biggest drops first: that is what a release gate is looking for.
    changed.sort(key=lambda c: (c["delta"] is None, c["delta"] if c["delta"] is not None else 0.0, c["index"]))
    pairs.sort()
    return changed, [d for _, d in pairs]
