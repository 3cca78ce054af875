"""The JSON report from a run's outcome, and writing the reports to files.

The aggregator hands over a ``RunOutcome``: this module reads results, it
does not know where they were collected (``terminal`` makes the summary
lines from the same outcome).
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..config.settings import MOCK_LABEL, Settings, mock_roles
from ..config.text import escape_surrogates_in_json, printable
from ..protocols.base import Protocol
from ..protocols.sampling import judge_settings
from ..result import SampleRecord
from ..summary import SCHEMA_VERSION, JudgeInfo, ModelInfo, Report, ReportSample, Selection, Summary

__all__ = [
    "SCHEMA_VERSION",
    "RunOutcome",
    "build_report",
    "dumps_report",
    "write_html",
    "write_json",
]


@dataclass(frozen=True)
class RunOutcome:
    """What the reports are made from: the aggregate and what the run ran with."""

    summary: Summary
    results: Mapping[str, SampleRecord]  # by node id
    settings: Settings
    protocol: Protocol  # the headline protocol
    protocols: Sequence[Protocol]  # every listed protocol, the headline first
    judge_image: bool
    fingerprint: str | None  # of the dataset's rows
    interrupted: bool
    started: float  # time.time() at the start of the run
    gate_reasons: Sequence[str]  # the aggregate gates that failed: "no_score", "out_of_range", "threshold", "baseline"
    selection: Selection  # which of the dataset's rows the run selected
    estimate: dict[str, Any] | None = None  # --mia-estimate (estimate.py)


def build_report(outcome: RunOutcome) -> Report:
    """Everything a later run or a reader needs; never a key (only the names
    of the variables that hold them)."""
    summary = outcome.summary
    s = outcome.settings
    protocol = outcome.protocol
    samples = [_report_sample(nodeid, record) for nodeid, record in sorted(outcome.results.items(), key=lambda kv: kv[1]["index"])]
    mocked = mock_roles(s)
    return {
        "schema_version": SCHEMA_VERSION,
        "plugin_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "demo": s.demo,
        "mock_roles": list(mocked),
        # Complete: the whole dataset ran; a --mia-limit, -k, --deselect or --lf run is partial.
        "complete": not outcome.interrupted and not summary["missing"] and not is_partial(outcome.selection),
        "partial": is_partial(outcome.selection),
        "selection": outcome.selection,
        "total_score": summary["total_score"],
        "n_samples": summary["n_samples"],
        "n_scored": summary["n_scored"],
        "n_zero": summary["n_zero"],
        "n_dropped": summary["n_dropped"],
        "n_excluded": summary["n_excluded"],
        "n_failed": summary["n_failed"],
        "n_missing": summary["n_missing"],
        "missing": summary["missing"],
        "finished_ahead": summary["finished_ahead"],
        "threshold": s.threshold,
        "threshold_on": s.threshold_on,
        "passed": _passed(outcome),
        "by_type": summary["by_type"],
        "by_component_type": summary["by_component_type"],
        "ci": summary["ci"],
        "protocol_metrics": summary["protocol_metrics"],
        "judge_spread": summary["judge_spread"],
        "baseline": summary["baseline"],
        "usage": summary["usage"],
        "cost": summary["cost"],
        "budget": summary["budget"],
        "estimate": outcome.estimate,
        "model": _model_info(outcome),
        "judge": _judge_info(outcome),
        "protocol": {
            "name": protocol.name,
            "prompt_version": protocol.prompt_version,
            "headline": protocol.headline,
        },
        "protocols": summary["protocols"],
        "dataset": {"source": s.dataset, "split": s.split, "limit": s.limit, "fingerprint": outcome.fingerprint},
        "image_max_side": s.image_max_side,
        "wall_seconds": round(_now() - outcome.started, 3),
        "samples": samples,
    }


def _model_info(outcome: RunOutcome) -> ModelInfo:
    s = outcome.settings
    return {
        "name": s.model,
        "revision": s.model_revision,
        "base_url": MOCK_LABEL if "model" in mock_roles(s) else _endpoint_url(s.base_url),
        "api_key_env": s.api_key_env,
        "api": s.api,
        "max_tokens": s.max_tokens,
        "temperature": s.temperature,
        "reasoning_effort": s.reasoning_effort,
        "sampling_deviations": outcome.summary["sampling_deviations"]["model"],
    }


def _judge_info(outcome: RunOutcome) -> JudgeInfo:
    s = outcome.settings
    judge = judge_settings(s, outcome.protocol)
    return {
        "name": s.judge_model,
        "base_url": MOCK_LABEL if "judge" in mock_roles(s) else _endpoint_url(s.judge_base_url),
        "api_key_env": s.judge_api_key_env,
        "api": s.judge_api,
        "sees_image": outcome.judge_image,
        "temperature": judge.get("temperature"),
        "max_tokens": judge.get("max_tokens"),
        "retries": s.judge_retries,
        "repeats": s.judge_repeats,
        "reasoning_effort": s.judge_reasoning_effort,
        "sampling_deviations": outcome.summary["sampling_deviations"]["judge"],
    }


def is_partial(selection: Selection) -> bool:
    """A subset of the dataset's rows was selected."""
    return selection["selected"] < selection["rows"]


def _report_sample(nodeid: str, record: SampleRecord) -> ReportSample:
    """A record as the report shows it: its node id added, and the optional
    fields null when absent (so every sample has the same keys)."""
    return {
        "index": record["index"],
        "nodeid": nodeid,
        "type": record["type"],
        "score": record["score"],
        "status": record["status"],
        "reason": record["reason"],
        "components": record["components"],
        "response": record["response"],
        "finish_reason": record["finish_reason"],
        "judge_reply": record["judge_reply"],
        "judge_replies": record.get("judge_replies"),
        "judge_scores": record.get("judge_scores"),
        "judge_reasks": record.get("judge_reasks"),
        "reasoning": record["reasoning"],
        "instruction": record["instruction"],
        "cached": record["cached"],
        "calls": record["calls"],
        "retries": record["retries"],
        "rate_limited": record.get("rate_limited"),
        "usage": record["usage"],
        "image": record["image"],
        "thumbnail": record["thumbnail"],
        "seconds": record["seconds"],
        "protocols": {
            name: {
                "score": verdict["score"],
                "status": verdict["status"],
                "components": verdict["components"],
                "judge_reply": verdict["judge_reply"],
                "reason": verdict["reason"],
            }
            for name, verdict in (record.get("protocols") or {}).items()
        },
    }


def _now() -> float:
    import time

    return time.time()


def _endpoint_url(url: str | None) -> str:
    from ..config.settings import DEFAULT_BASE_URL
    from ..config.urls import shown_url

    # Any user:password@ a URL may carry is dropped, and a credential in its
    # query masked, as everywhere a URL is shown.
    return shown_url(url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)


def _passed(outcome: RunOutcome) -> bool:
    summary = outcome.summary
    if summary["n_failed"] or summary["missing"] or outcome.interrupted:
        return False
    # A sample whose judge call failed under any listed protocol failed its test.
    if any(block["counts"]["failed"] for block in summary["protocols"].values()):
        return False
    return not outcome.gate_reasons


def write_html(path: str, report: Report) -> None:
    from .html import render_html

    _write_atomic(path, printable(render_html(report)))


def write_json(path: str, data: Report) -> None:
    _write_atomic(path, dumps_report(data))


def dumps_report(data: Report) -> str:
    """The report as JSON: indented, except that each sample is one line.

    ``json`` indents only with its pure-Python encoder, ~0.1 s for 400
    samples at the end of every run; one compact line per sample uses the C
    encoder and still diffs and greps sample by sample.
    """
    parts = []
    for key, value in data.items():
        if key == "samples" and isinstance(value, list) and value:
            lines = ",\n".join("    " + json.dumps(sample, ensure_ascii=False) for sample in value)
            text = "[\n" + lines + "\n  ]"
        else:
            text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        parts.append(f"  {json.dumps(key)}: {text}")
    text = "{\n" + ",\n".join(parts) + "\n}\n"
    return escape_surrogates_in_json(text)


def output_path_problem(path: str) -> str | None:
    """Why a report could not be written to ``path``, or None.  Checked
    before the run, so an unwritable path costs no API call: the nearest
    existing ancestor must be a directory where a file can be made (missing
    directories below it are made when the report is written).  A FIFO or a
    character device (``/dev/stdout``) is written through; what cannot be
    opened for writing, or must never be overwritten, is refused."""
    target = Path(path).expanduser()
    kind = _special_kind(target)
    if kind == "directory":
        return f"{path} is a directory; give a file path"
    if kind in _REFUSED_KINDS:
        return f"it is a {kind}; give a file path, a FIFO or a character device"
    if kind is not None:
        return None if os.access(target, os.W_OK) else f"{target} is a {kind} not open for writing"
    # Through a link: what is checked (and replaced) is the file it names.
    target = _resolved(target)
    ancestor = target.parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor.parent != ancestor:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(prefix=".mia-probe-", dir=ancestor)
    except OSError as exc:  # read-only, no permission, or a /proc or /sys path
        return f"cannot create a file in {ancestor} ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(probe)
    return None


# Special files a report never goes to: a socket cannot be opened, and a
# block device is a disk.
_REFUSED_KINDS = ("socket", "block device")


def _special_kind(target: Path) -> str | None:
    """What ``target`` (followed through links) is when it exists and is not
    a regular file: "directory", "FIFO", "character device", ...; else None."""
    try:
        mode = target.stat().st_mode
    except (OSError, ValueError):  # missing, a dangling link, a NUL byte
        return None
    if stat.S_ISREG(mode):
        return None
    for test, kind in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return kind
    return "special file"


def _resolved(target: Path) -> Path:
    """The file a link names (the link itself survives a report written
    there); dangling, the file it would name."""
    return Path(os.path.realpath(target)) if target.is_symlink() else target


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file, through links and ``..``, existing or not."""
    return os.path.realpath(Path(a).expanduser()) == os.path.realpath(Path(b).expanduser())


def _write_atomic(path: str, text: str) -> None:
    """Write atomically: a reader never sees half a report.  Only a regular
    file is replaced, beside the file a link names (the link stays); a FIFO
    or a device is written through, never replaced by a file."""
    target = Path(path).expanduser()
    kind = _special_kind(target)
    if kind is not None:
        _write_through(target, kind, text)
        return
    target = _resolved(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mia-report-", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        # mkstemp makes the file private; a report gets the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_through(target: Path, kind: str, text: str) -> None:
    """Write into a FIFO or a character device as it is.  Opened without
    blocking: a FIFO nobody reads fails at once (ENXIO) instead of hanging
    the end of the run; then written in blocking mode."""
    if kind in _REFUSED_KINDS or kind == "directory":
        raise OSError(f"{target} is a {kind}")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO and kind == "FIFO":
            raise OSError(exc.errno, "no process has the FIFO open for reading") from None
        raise
    try:
        os.set_blocking(fd, True)
        handle = os.fdopen(fd, "w", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        handle.write(text)
