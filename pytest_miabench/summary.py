"""The shapes of a run's summary and of the JSON report made from its
records (result.py), and the baseline verdict in words.

As in result.py, the TypedDicts only describe plain dicts of builtins to the
type checker; nothing is converted at runtime.

This module is in the bottom layer with result.py (see ``.importlinter``): it
imports nothing else from the package, so every other module may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from .result import Component, ImageInfo, RoleCounts, RoleFlags, RoleUsage

#: Version of the JSON report's layout; a baseline of another version is refused.
SCHEMA_VERSION = 1


# -- the run's summary -----------------------------------------------------


class RoleTotals(TypedDict):
    api_calls: int
    cache_hits: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_prompt_tokens: int
    cached_completion_tokens: int


class UsageTotals(TypedDict):
    model: RoleTotals
    judge: RoleTotals
    retries: int
    judge_reasks: int
    unclaimed_samples: int  # called ahead, never run (-x): their calls are in the totals
    rate_limited: int  # HTTP 429 replies
    concurrency_reached: int | None  # the lowest adaptive limit of the model endpoint


class RoleDeviations(TypedDict):
    model: list[str]
    judge: list[str]


class RoleCost(TypedDict):
    model: str
    spent: float  # dollars of this run's API calls
    saved_by_cache: float  # dollars the cached answers would have cost


class Cost(TypedDict):
    model: RoleCost | None  # None: no price given for this role's model
    judge: RoleCost | None
    total_spent: float | None


class BudgetSpend(TypedDict):
    """Spend against --mia-budget-tokens / --mia-budget-usd."""

    tokens: int | None  # the token budget
    usd: float | None  # the dollar budget
    spent_tokens: int  # every token the endpoints reported, prompt + completion
    spent_usd: float | None  # at the --mia-price prices (None without)
    stopped: str | None  # why the budget stopped the run (None: it did not)
    n_not_run: int  # samples selected but not run


class ConfidenceIntervals(TypedDict):
    """Bootstrap intervals, ``[low, high]`` (None for no data)."""

    level: float
    n_resamples: int
    seed: int
    total_score: list[float] | None
    by_type: dict[str, list[float] | None]
    by_component_type: dict[str, list[float] | None]


class JudgeSpread(TypedDict):
    """How much repeated judging disagrees (see ``stats.judge_spread``)."""

    n_samples: int
    n_compared: int
    repeats_max: int
    mean_std: float | None
    max_std: float | None
    max_std_sample: int | None
    n_disagree: int
    max_range: float | None


class ChangedSample(TypedDict):
    index: int
    nodeid: str
    before: float | None
    after: float | None
    delta: float | None
    response_before: str | None  # the baseline's answer
    response_after: str | None  # this run's answer
    judge_reply_before: str | None  # the baseline's judge reply (None: not in its report)
    judge_reply_after: str | None  # this run's judge reply


class SampleSetDifference(TypedDict):
    """How the baseline's samples differ from this run's (see ``baseline.differences``)."""

    n_only_baseline: int
    n_only_run: int
    n_instruction: int  # same index, other instruction text
    n_image: int  # same index, other image bytes
    images_compared: bool  # False: the baseline's report has no image hashes (an older report)
    examples: dict[str, list[int]]  # a few indices of each kind: only_baseline, only_run, instruction, image
    text: str  # the above in one line


class BaselineComparison(TypedDict):
    """The report's ``baseline`` block (see ``baseline.compare``)."""

    path: str
    created: object  # as the baseline file has it
    total_score: float
    delta: float | None  # difference of the two totals, each over its own samples
    by_type: dict[str, float | None]  # change (this run - baseline) per instruction type
    by_component_type: dict[str, float | None]
    baseline_by_type: dict[str, float | None]  # the baseline's own means, for a side-by-side chart
    baseline_by_component_type: dict[str, float | None]
    n_changed: int
    n_only_baseline: int
    n_only_run: int
    differences: SampleSetDifference | None  # None: the same samples
    partial: bool  # compared on the common samples only (--mia-baseline-common)
    refused: str | None  # why the sample sets cannot be compared (no --mia-baseline-common)
    n_common: int  # samples in both, with the same instruction and image
    n_paired: int  # of those, scored in both runs: what the paired statistics use
    mean_diff: float | None  # paired: mean over n_paired of (this run - baseline)
    sd_diff: float | None
    diff_ci: list[float] | None  # paired bootstrap interval of mean_diff
    ci_level: float
    p_value: float | None  # two-sided paired sign-flip permutation test
    p_value_test: str
    mde: float | None  # smallest drop detectable at 80 % power, alpha 0.05
    changed: list[ChangedSample]
    max_drop: float | None
    gate_rule: str | None  # the --mia-max-drop rule, in words
    gate_verdict: str | None  # pass, regression, inconclusive, refused; None: no gate
    gate_failed: bool | None  # None: no --mia-max-drop gate (True also when refused)


class Tally(TypedDict):
    """The numbers computed from the per-sample records alone."""

    total_score: float | None
    n_samples: int
    n_results: int
    n_scored: int
    n_zero: int
    n_dropped: int
    n_excluded: int
    n_failed: int
    n_missing: int
    n_counted: int
    by_type: dict[str, float | None]
    by_component_type: dict[str, float | None]
    protocol_metrics: dict[str, float]
    usage: UsageTotals
    sampling_deviations: RoleDeviations  # what each role's endpoint did not accept as asked
    stopped: str | None  # why the run was stopped early (an unusable endpoint)


class ProtocolCounts(TypedDict):
    scored: int
    zero: int
    dropped: int
    excluded: int
    failed: int


class ProtocolJudge(TypedDict):
    """How the judge was asked under one protocol."""

    sees_image: bool
    temperature: float | None
    max_tokens: int | None


class ProtocolBaseline(TypedDict):
    """One protocol's comparison with the baseline (the gates read the headline's ``baseline`` block)."""

    total_score: float
    delta: float | None
    n_paired: int
    mean_diff: float | None
    diff_ci: list[float] | None
    p_value: float | None


class ProtocolSummary(TypedDict):
    """One protocol's numbers over the same answers (the report's ``protocols``)."""

    prompt_version: str
    headline: str  # the reference's name for total_score
    total_score: float | None
    ci: ConfidenceIntervals
    n_counted: int
    counts: ProtocolCounts
    by_type: dict[str, float | None]
    by_component_type: dict[str, float | None]
    protocol_metrics: dict[str, float]
    judge: ProtocolJudge
    baseline: ProtocolBaseline | None  # None: no baseline, or it does not hold this protocol


class Summary(Tally):
    """Everything the reports and the gates are made from."""

    protocols: dict[str, ProtocolSummary]  # every listed protocol, the headline first

    missing: list[str]  # node ids expected but never reported
    # node ids whose items never ran, reported because their samples finished
    # ahead of their turn before the run was interrupted
    finished_ahead: list[str]
    ci: ConfidenceIntervals
    cost: Cost | None  # None: no --mia-price
    budget: BudgetSpend | None  # None: no --mia-budget-tokens / --mia-budget-usd
    judge_spread: JudgeSpread | None  # None: no --mia-judge-repeats > 1
    baseline: BaselineComparison | None  # None: no --mia-baseline


# -- the JSON report -------------------------------------------------------


class ReportSampleVerdict(TypedDict):
    """One protocol's verdict in a report sample."""

    score: float | None
    status: str
    components: list[float | None]
    judge_reply: str | None
    reason: str


class ReportSample(TypedDict):
    """One sample of the JSON report: a record's fields plus its node id;
    the optional ones are null when the record lacks them."""

    index: int
    nodeid: str
    type: str
    score: float | None
    status: str
    reason: str
    components: list[Component]
    response: str | None
    finish_reason: str | None
    judge_reply: str | None
    judge_replies: list[str | None] | None
    judge_scores: list[float | None] | None
    judge_reasks: int | None
    reasoning: str | None
    instruction: str | None
    cached: RoleFlags
    calls: RoleCounts
    retries: int
    rate_limited: int | None
    usage: RoleUsage
    image: ImageInfo | None
    thumbnail: str | None
    seconds: float
    protocols: dict[str, ReportSampleVerdict]  # every listed protocol's verdict


class ModelInfo(TypedDict):
    name: str | None
    revision: str | None  # --mia-model-revision: the weights under test
    base_url: str
    api_key_env: str  # the name of the variable, never its value
    api: str  # "chat" or "responses" (--mia-api); absent from reports of older versions
    max_tokens: int | None
    temperature: float | None
    reasoning_effort: str | None
    sampling_deviations: list[str]


class JudgeInfo(TypedDict):
    name: str
    base_url: str
    api_key_env: str
    api: str  # --mia-judge-api
    sees_image: bool
    temperature: float | None
    max_tokens: int | None
    retries: int
    repeats: int
    reasoning_effort: str | None
    sampling_deviations: list[str]


class ProtocolInfo(TypedDict):
    name: str
    prompt_version: str
    headline: str


class Selection(TypedDict):
    """Which of the dataset's rows the run selected (``partial`` when not all)."""

    rows: int  # rows in the dataset
    limit: int | None  # --mia-limit
    selected: int  # items left after --mia-limit, -k, -m, --deselect, --lf, ...
    deselected: int  # rows within the limit that pytest deselected
    filters: list[str]  # the selecting options given (e.g. "-k advanced", "--lf")


class DatasetInfo(TypedDict):
    source: str
    split: str
    limit: int | None
    fingerprint: str | None


class Report(TypedDict):
    """The JSON report, key for key in the order it is written."""

    schema_version: int
    plugin_version: str
    created: str
    demo: bool  # --mia-demo: the built-in demo set and mock; the number means nothing
    mock_roles: list[str]  # roles ("model", "judge") the built-in mock answered
    complete: bool  # every row of the dataset ran to a result, uninterrupted
    partial: bool  # a subset of the rows was selected (see selection)
    selection: Selection
    total_score: float | None
    n_samples: int
    n_scored: int
    n_zero: int
    n_dropped: int
    n_excluded: int
    n_failed: int
    n_missing: int
    missing: list[str]
    finished_ahead: list[str]
    threshold: float | None
    threshold_on: str  # "mean" or "lower" (the CI's lower bound)
    passed: bool
    by_type: dict[str, float | None]
    by_component_type: dict[str, float | None]
    ci: ConfidenceIntervals
    protocol_metrics: dict[str, float]
    judge_spread: JudgeSpread | None
    baseline: BaselineComparison | None
    usage: UsageTotals
    cost: Cost | None
    budget: BudgetSpend | None
    estimate: dict[str, Any] | None  # --mia-estimate: what the run would call and spend (estimate.py)
    model: ModelInfo
    judge: JudgeInfo
    protocol: ProtocolInfo
    protocols: dict[str, ProtocolSummary]  # every listed protocol, the headline first
    dataset: DatasetInfo
    image_max_side: int
    wall_seconds: float
    samples: list[ReportSample]


# -- the baseline verdict in words ----------------------------------------


def gate_rule(max_drop: float, level: float) -> str:
    """The --mia-max-drop rule in words, in the one sign convention (change = candidate - baseline)."""
    bound = f"{-max_drop:+g}" if max_drop else "0"
    return (
        f"pass when the lower bound of the {level:.0%} CI of the change is >= {bound}; "
        f"regression when its upper bound is < {bound}; otherwise inconclusive (fails)"
    )


@dataclass(frozen=True)
class BaselineVerdict:
    """What a baseline comparison concludes, in words (see ``verdict``)."""

    word: str | None  # pass, regression, inconclusive, refused; None: no --mia-max-drop gate
    failed: bool | None  # None: no gate
    rule: str | None  # the rule in words; None without --mia-max-drop
    text: str  # one line: the word, the change with its interval, the rule


def _signed(value: float | None) -> str:
    # Rounded, + 0.0: no "-0.0000" for an unchanged score or a rounding residue.
    return "n/a" if value is None else f"{round(value, 4) + 0.0:+.4f}"


def verdict(comparison: BaselineComparison) -> BaselineVerdict:
    """The verdict of a ``compare`` result as one line, shared by every place
    that shows it.  The change is candidate - baseline everywhere: a drop is
    negative, and --mia-max-drop X allows changes down to -X."""
    word, max_drop = comparison["gate_verdict"], comparison["max_drop"]
    level = f"{comparison['ci_level']:.0%}"
    ci = comparison["diff_ci"]
    interval = "n/a" if ci is None else f"[{_signed(ci[0])}, {_signed(ci[1])}]"
    change = (
        f"change (candidate - baseline) {_signed(comparison['mean_diff'])}, {level} CI {interval}, "
        f"n_paired={comparison['n_paired']}"
    )
    if word == "refused":
        return BaselineVerdict(word, True, None, f"baseline verdict refused: not comparable with this run: {comparison['refused']}")
    if word is None or max_drop is None:
        return BaselineVerdict(None, None, None, f"baseline: {change}; no gate (--mia-max-drop not set)")
    rule = gate_rule(max_drop, comparison["ci_level"])
    why = {
        "pass": f"a drop above {max_drop:g} is ruled out",
        "regression": f"the whole CI is below {-max_drop:+g}",
        "inconclusive": f"the CI reaches below {-max_drop:+g}: a drop above {max_drop:g} cannot be ruled out"
        + ("" if comparison["mde"] is None else f" (this run detects drops of {comparison['mde']:.4f} and more)"),
    }.get(word, "")
    return BaselineVerdict(word, word != "pass", rule, f"baseline verdict {word}: {change}; {why}; rule: {rule}")
