"""``pytest-miabench compare BASELINE.json CANDIDATE.json``: the release gate
on two existing reports, without running anything again.

The comparison is the plugin's own (``baseline.load_protocols`` then
``baseline.compare``), on the candidate's headline protocol, seeded with the
candidate's ``--mia-seed``: the pair gives the numbers, the verdict line and
the HTML page that ``pytest --mia-bench --mia-baseline=BASELINE.json`` gave
when it produced the candidate.

Exit codes: 0 the gate holds (or none was asked for), 1 it fails, 2 the
input cannot be compared (not a report, another schema, protocol or dataset,
a demo or mock run, other samples, an unwritable ``--html``), with one line
on stderr saying why.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any, cast

from ..config.options import OptionError, unit_float
from ..config.text import printable
from ..result import SampleRecord
from ..summary import BaselineComparison, Tally
from . import values
from .baseline import BaselineError, compare, load, load_protocols, read_report
from .report import output_path_problem, write_html
from .terminal import comparison_lines

OK, GATE_FAILED, UNUSABLE = 0, 1, 2


class Unusable(Exception):
    """The input cannot be compared; the message says why, in one line."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytest-miabench", description="Tools for pytest-miabench's JSON reports.")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser(
        "compare",
        help="apply the --mia-max-drop gate to two existing reports",
        description=(
            "Compare CANDIDATE with BASELINE sample by sample, as --mia-baseline does: the paired change "
            "(candidate - baseline), its 95%% CI and, with --max-drop, the non-inferiority verdict. "
            "Exit 0 when the gate holds or none is set, 1 when it fails, 2 when the reports cannot be compared."
        ),
    )
    cmd.add_argument("baseline", metavar="BASELINE.json", help="the earlier run's JSON report (--mia-report)")
    cmd.add_argument("candidate", metavar="CANDIDATE.json", help="the run to judge")
    cmd.add_argument("--max-drop", type=_max_drop, metavar="X", help="fail unless the lower bound of the 95%% CI of the paired change (candidate - baseline) is at least -X")
    cmd.add_argument("--common", action="store_true", help="compare on the samples both share (as --mia-baseline-common)")
    cmd.add_argument("--html", metavar="PATH", help="write the candidate's HTML report with this comparison")
    return parser


def _max_drop(text: str) -> float:
    try:
        return unit_float(text)  # what --mia-max-drop takes
    except OptionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _read(path: str) -> dict[str, Any]:
    """The report as a dict, or Unusable: what a baseline must be (a real
    run's report of this schema) goes for the candidate too."""
    try:
        return read_report(path)
    except BaselineError as exc:
        raise Unusable(str(exc)) from None


def _records(path: str, candidate: Mapping[str, Any]) -> dict[str, SampleRecord]:
    """The candidate's samples as the records ``baseline.compare`` reads, by node id."""
    out: dict[str, SampleRecord] = {}
    for sample in candidate.get("samples") or []:
        index, status = sample["index"], sample.get("status")  # index: checked by ``load``
        if not isinstance(status, str):
            raise Unusable(f"{path}: sample {index}: status must be text")
        nodeid = sample.get("nodeid")
        record = {
            "index": index,
            "status": status,
            "score": sample.get("score"),
            "instruction": sample.get("instruction"),
            "image": sample.get("image") or None,
            "response": sample.get("response"),
            "judge_reply": sample.get("judge_reply"),
        }
        out[nodeid if isinstance(nodeid, str) else f"mia-bench::{index:04d}"] = cast(SampleRecord, record)
    return out


def comparison(baseline_path: str, candidate_path: str, max_drop: float | None, common: bool) -> tuple[dict[str, Any], BaselineComparison]:
    """The candidate report and its comparison with the baseline, or Unusable."""
    candidate = _read(candidate_path)
    _read(baseline_path)
    protocol = (candidate.get("protocol") or {}).get("name")
    dataset = candidate.get("dataset") or {}
    source, split, fingerprint = dataset.get("source"), dataset.get("split"), dataset.get("fingerprint")
    if not isinstance(protocol, str) or not isinstance(source, str) or not isinstance(split, str):
        raise Unusable(f"{candidate_path}: the report names no protocol or dataset")
    try:
        load(candidate_path, protocol, source, split)  # the same checks of shape as a baseline gets
        before = load_protocols(baseline_path, (protocol,), source, split, fingerprint if isinstance(fingerprint, str) else None)[protocol]
    except BaselineError as exc:
        raise Unusable(str(exc)) from None
    seed = (candidate.get("ci") or {}).get("seed")
    summary = cast(
        Tally,
        {key: candidate.get(key) or ({} if key != "total_score" else None) for key in ("total_score", "by_type", "by_component_type")},
    )
    result = compare(
        summary,
        _records(candidate_path, candidate),
        before,
        baseline_path,
        max_drop,
        common=common,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else 0,
    )
    if result["refused"] is not None:
        raise Unusable(f"{baseline_path}: {result['refused'].replace('--mia-baseline-common', '--common')}")
    return candidate, result


def _threshold_holds(report: Mapping[str, Any]) -> bool:
    """The candidate's own --mia-threshold, read again from its report."""
    threshold = report.get("threshold")
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
        return True
    value = report.get("total_score")
    if report.get("threshold_on") == "lower":
        ci = (report.get("ci") or {}).get("total_score")
        value = ci[0] if isinstance(ci, list) and ci else None
    return isinstance(value, (int, float)) and math.isfinite(value) and value >= threshold


def html_report(candidate: Mapping[str, Any], result: BaselineComparison) -> dict[str, Any]:
    """The candidate's report with this comparison as its baseline block, as
    the plugin would have written it with ``--mia-baseline``."""
    report = dict(candidate)
    report["baseline"] = result
    report["passed"] = (
        result["gate_failed"] is not True
        and not candidate.get("n_failed")
        and not candidate.get("n_missing")
        and _threshold_holds(candidate)
    )
    return report


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.html and (problem := output_path_problem(args.html)):
        return _unusable(f"--html: {problem}" if problem.startswith(args.html) else f"--html: cannot write {args.html}: {problem}")
    try:
        candidate, result = comparison(args.baseline, args.candidate, args.max_drop, args.common)
    except Unusable as exc:
        return _unusable(str(exc))
    print(printable(f"candidate {args.candidate}: total_score {values.fixed(candidate.get('total_score'))}"))
    for text, _ in comparison_lines(result):
        print(printable(text))
    if args.html:
        try:
            write_html(args.html, cast(Any, html_report(candidate, result)))
        except OSError as exc:
            return _unusable(f"--html: cannot write {args.html}: {exc.strerror or exc}")
        print(printable(f"HTML report: {args.html}"))
    return GATE_FAILED if result["gate_failed"] else OK


def _unusable(message: str) -> int:
    print(printable(f"pytest-miabench compare: error: {' '.join(message.splitlines())}"), file=sys.stderr)
    return UNUSABLE


def main() -> None:
    """The ``pytest-miabench`` console script."""
    sys.exit(run())
