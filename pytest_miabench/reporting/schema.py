"""The JSON report as typed models, and the JSON Schema published from them.

The report is written as plain dicts (``result.Report``); these models
describe it key for key, every key required (null where there is nothing)
and no other allowed: the schema says exactly what this version writes.
``baseline.read_report`` checks a report read back with them.
``report.schema.json`` beside this module is generated from them by
``python -m pytest_miabench.reporting.schema`` (a test fails while it is stale).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..summary import SCHEMA_VERSION

#: The published schema, shipped as package data.
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")
#: The schema's ``$id``: one per ``schema_version``.
SCHEMA_ID = f"urn:pytest-miabench:report:v{SCHEMA_VERSION}"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

Score = float | None
Breakdown = dict[str, Score]


class _Block(BaseModel):
    # Strict: JSON types as written, no coercion ("0.8" is not a number, 1 is
    # not true); an int is still a number, as in JSON.
    model_config = ConfigDict(extra="forbid", strict=True)


def _d(description: str) -> Any:
    """A required field and what it means (the schema's ``description``)."""
    return Field(description=description)


# -- the report's parts: a sample, the run's numbers, what it ran with ---------


class Component(_Block):
    """One part of a layered instruction and the score the judge gave it."""

    text: str = _d("The part's text.")
    type: str = _d("Its component type (the breakdown `by_component_type` groups by it).")
    weight: int = _d("Its weight in the sample's score.")
    score: Score = _d("The judge's score for it; null when the judge gave none.")


class ImageInfo(_Block):
    """The image as it was sent to the model."""

    mime: str = _d("MIME type sent.")
    width: int = _d("Width in pixels, as sent.")
    height: int = _d("Height in pixels, as sent.")
    format: str = _d("The source format (JPEG, PNG, ...), before any re-encoding.")
    reencoded: bool = _d("Whether it was re-encoded (resized or converted) before sending.")
    bytes: int = _d("Size in bytes, as sent.")
    sha256: str = _d("SHA-256 of the image as stored in the dataset (before any re-encoding): what a baseline is matched on.")


class TokenUsage(_Block):
    """A role's tokens for one sample: of this run's API calls, and of answers served from the cache."""

    prompt_tokens: int = _d("Prompt tokens of this run's calls.")
    completion_tokens: int = _d("Completion tokens of this run's calls.")
    reasoning_tokens: int = _d("Part of completion_tokens spent reasoning (as the endpoint reported it).")
    cached_prompt_tokens: int = _d("Prompt tokens of answers served from the cache.")
    cached_completion_tokens: int = _d("Completion tokens of answers served from the cache.")


class RoleFlags(_Block):
    """Per role: whether its answer came from the cache."""

    model: bool = _d("The model's answer came from the cache.")
    judge: bool = _d("The judge's reply came from the cache.")


class RoleCounts(_Block):
    """Per role: API calls made for the sample."""

    model: int = _d("Calls to the model endpoint.")
    judge: int = _d("Calls to the judge endpoint.")


class RoleUsage(_Block):
    """Per role: the sample's tokens."""

    model: TokenUsage = _d("The model's tokens.")
    judge: TokenUsage = _d("The judge's tokens.")


class SampleVerdict(_Block):
    """One protocol's verdict on a sample."""

    score: Score = _d("The sample's score under this protocol; null when it does not count.")
    status: str = _d('A verdict status ("scored", "zero", "dropped", "excluded"), or "failed": this protocol\'s judge call failed.')
    components: list[Score] = _d("Score per component position.")
    judge_reply: str | None = _d("The judge's reply under this protocol.")
    reason: str = _d("Why the status is what it is (empty when scored).")


class Sample(_Block):
    """One sample: a record's fields plus its node id; the optional ones are null when the run did not produce them."""

    index: int = _d("The dataset row's index: what samples are matched on across runs.")
    nodeid: str = _d("The pytest node id of the sample's test item.")
    type: str = _d("Its instruction type (the breakdown `by_type` groups by it).")
    score: Score = _d("Its score under the headline protocol; null when not counted.")
    status: str = _d('"scored", "zero", "dropped", "excluded" (the protocol\'s verdict) or "failed".')
    reason: str = _d("Why the status is what it is: the failure or the policy that applied.")
    components: list[Component] = _d("The instruction's parts with their weights and scores.")
    response: str | None = _d("The model's answer (untrusted text).")
    finish_reason: str | None = _d("The model endpoint's finish reason.")
    judge_reply: str | None = _d("The judge's reply under the headline protocol.")
    judge_replies: list[str | None] | None = _d("Every judge reply, with --mia-judge-repeats > 1.")
    judge_scores: list[Score] | None = _d("The score of each of those replies.")
    judge_reasks: int | None = _d("Re-asks after unreadable judge replies.")
    reasoning: str | None = _d("The model's thinking text, when the server returned it apart.")
    instruction: str | None = _d("The instruction text sent (null when the sample failed before it was read).")
    cached: RoleFlags = _d("Per role: whether the answer came from the cache.")
    calls: RoleCounts = _d("Per role: API calls made.")
    retries: int = _d("Retries of failed calls.")
    rate_limited: int | None = _d("HTTP 429 replies met on the way.")
    usage: RoleUsage = _d("Per role: tokens.")
    image: ImageInfo | None = _d("The image as sent; null when it could not be read.")
    thumbnail: str | None = _d("A data: URI of a thumbnail, made only with --mia-html.")
    seconds: float = _d("Wall time the sample took.")
    protocols: dict[str, SampleVerdict] = _d("Every listed protocol's verdict, by name (the headline's is also the sample's own fields).")


class Selection(_Block):
    """Which of the dataset's rows the run selected (`partial` when not all)."""

    rows: int = _d("Rows in the dataset.")
    limit: int | None = _d("--mia-limit.")
    selected: int = _d("Items left after --mia-limit, -k, -m, --deselect, --lf, ...")
    deselected: int = _d("Rows within the limit that pytest deselected.")
    filters: list[str] = _d('The selecting options given (e.g. "-k advanced", "--lf").')


class ConfidenceIntervals(_Block):
    """Bootstrap intervals `[low, high]` (null for no data)."""

    level: float = _d("Confidence level (0.95).")
    n_resamples: int = _d("Bootstrap resamples.")
    seed: int = _d("The bootstrap's seed (--mia-seed).")
    total_score: list[float] | None = _d("Interval of total_score.")
    by_type: dict[str, list[float] | None] = _d("Interval per instruction type.")
    by_component_type: dict[str, list[float] | None] = _d("Interval per component type.")


class JudgeSpread(_Block):
    """How much repeated judging disagrees (--mia-judge-repeats > 1)."""

    n_samples: int = _d("Samples with judge replies.")
    n_compared: int = _d("Samples with at least two scored replies.")
    repeats_max: int = _d("Most replies any sample got.")
    mean_std: float | None = _d("Mean over samples of the standard deviation of their scores.")
    max_std: float | None = _d("The largest of those deviations.")
    max_std_sample: int | None = _d("Index of the sample with the largest deviation.")
    n_disagree: int = _d("Samples whose replies scored differently.")
    max_range: float | None = _d("The largest spread (max - min) of a sample's scores.")


class ChangedSample(_Block):
    """A sample whose score changed from the baseline."""

    index: int = _d("The dataset index.")
    nodeid: str = _d("This run's node id.")
    before: Score = _d("The baseline's score.")
    after: Score = _d("This run's score.")
    delta: Score = _d("after - before; null when either is null.")
    response_before: str | None = _d("The baseline's answer.")
    response_after: str | None = _d("This run's answer.")
    judge_reply_before: str | None = _d("The baseline's judge reply (null: not in its report).")
    judge_reply_after: str | None = _d("This run's judge reply.")


class SampleSetDifference(_Block):
    """How the baseline's samples differ from this run's."""

    n_only_baseline: int = _d("Samples only in the baseline.")
    n_only_run: int = _d("Samples only in this run.")
    n_instruction: int = _d("Same index, other instruction text.")
    n_image: int = _d("Same index, other image bytes.")
    images_compared: bool = _d("False: the baseline's report has no image hashes (an older report).")
    examples: dict[str, list[int]] = _d("A few indices of each kind: only_baseline, only_run, instruction, image.")
    text: str = _d("The above in one line.")


class BaselineComparison(_Block):
    """The comparison with --mia-baseline (see the README's gating section)."""

    path: str = _d("The baseline report's path.")
    created: str | None = _d("The baseline's `created`.")
    total_score: float = _d("The baseline's total_score.")
    delta: Score = _d("Difference of the two totals, each over its own samples.")
    by_type: Breakdown = _d("Change (this run - baseline) per instruction type.")
    by_component_type: Breakdown = _d("Change per component type.")
    baseline_by_type: Breakdown = _d("The baseline's own means per instruction type.")
    baseline_by_component_type: Breakdown = _d("The baseline's own means per component type.")
    n_changed: int = _d("Samples whose score changed.")
    n_only_baseline: int = _d("Samples only in the baseline.")
    n_only_run: int = _d("Samples only in this run.")
    differences: SampleSetDifference | None = _d("How the sample sets differ; null: the same samples.")
    partial: bool = _d("Compared on the common samples only (--mia-baseline-common).")
    refused: str | None = _d("Why the sample sets cannot be compared (without --mia-baseline-common); null when they can.")
    n_common: int = _d("Samples in both, with the same instruction and image.")
    n_paired: int = _d("Of those, scored in both runs: what the paired statistics use.")
    mean_diff: float | None = _d("Paired: mean over n_paired of (this run - baseline).")
    sd_diff: float | None = _d("Standard deviation of those differences.")
    diff_ci: list[float] | None = _d("Paired bootstrap interval [low, high] of mean_diff.")
    ci_level: float = _d("Level of diff_ci.")
    p_value: float | None = _d("Two-sided paired sign-flip permutation test.")
    p_value_test: str = _d("How p_value was computed.")
    mde: float | None = _d("Smallest drop detectable at 80% power, alpha 0.05.")
    changed: list[ChangedSample] = _d("The samples that changed most, biggest drops first (at most 20).")
    max_drop: float | None = _d("--mia-max-drop.")
    gate_rule: str | None = _d("The --mia-max-drop rule in words.")
    gate_verdict: Literal["pass", "regression", "inconclusive", "refused"] | None = _d("The gate's verdict; null: no gate.")
    gate_failed: bool | None = _d("Whether the gate failed (also when refused); null: no --mia-max-drop gate.")


class RoleTotals(_Block):
    """A role's calls and tokens over the run."""

    api_calls: int = _d("Every attempt sent (timed-out ones and those of samples called ahead but never run included).")
    cache_hits: int = _d("Answers served from the cache.")
    prompt_tokens: int = _d("Prompt tokens of this run's calls.")
    completion_tokens: int = _d("Completion tokens of this run's calls.")
    reasoning_tokens: int = _d("Part of completion_tokens spent reasoning.")
    cached_prompt_tokens: int = _d("Prompt tokens of cached answers.")
    cached_completion_tokens: int = _d("Completion tokens of cached answers.")


class UsageTotals(_Block):
    """Calls and tokens over the run."""

    model: RoleTotals = _d("The model's.")
    judge: RoleTotals = _d("The judge's.")
    retries: int = _d("Retries of failed calls.")
    judge_reasks: int = _d("Re-asks after unreadable judge replies.")
    unclaimed_samples: int = _d("Samples called ahead but never run (-x): their calls are in the totals.")
    rate_limited: int = _d("HTTP 429 replies.")
    concurrency_reached: int | None = _d("The lowest adaptive concurrency limit of the model endpoint.")


class RoleCost(_Block):
    """A role's cost at its --mia-price."""

    model: str = _d("The model priced.")
    spent: float = _d("Dollars of this run's API calls.")
    saved_by_cache: float = _d("Dollars the cached answers would have cost.")


class Cost(_Block):
    """Dollars spent, at the --mia-price prices."""

    model: RoleCost | None = _d("The model's cost; null: no price given for it.")
    judge: RoleCost | None = _d("The judge's cost; null: no price given for it.")
    total_spent: float | None = _d("Both roles' spend; null when a role has no price.")


class BudgetSpend(_Block):
    """Spend against --mia-budget-tokens / --mia-budget-usd."""

    tokens: int | None = _d("The token budget.")
    usd: float | None = _d("The dollar budget.")
    spent_tokens: int = _d("Every token the endpoints reported, prompt + completion.")
    spent_usd: float | None = _d("Dollars at the --mia-price prices (null without).")
    stopped: str | None = _d("Why the budget stopped the run; null: it did not.")
    n_not_run: int = _d("Samples selected but not run.")


class EstimateRow(_Block):
    """What one role (under one protocol, for the judge) would call and spend."""

    role: str = _d('"model" or "judge".')
    protocol: str | None = _d("The judge's protocol; null for the model.")
    calls: int = _d("Calls the run would make.")
    cache_hits: int = _d("Of those, answered by the cache (not paid).")
    paid_calls: int = _d("Calls that would be paid.")
    input_tokens: int = _d("Input tokens of the paid calls.")
    output_tokens_typical: int = _d("Output tokens at a typical answer length.")
    output_tokens_max: int | None = _d("Output tokens at the max tokens; null: no max set.")
    cost: list[float | None] | None = _d("[low, high] dollars (high null: unbounded); null: no price.")


class EstimateTotals(_Block):
    """The rows added up."""

    calls: int = _d("Calls.")
    cache_hits: int = _d("Cache hits.")
    paid_calls: int = _d("Paid calls.")
    input_tokens: int = _d("Input tokens.")
    output_tokens_typical: int = _d("Typical output tokens.")
    output_tokens_max: int | None = _d("Output tokens at most; null when a row has no max.")


class EstimateMethod(_Block):
    """How the tokens are counted."""

    text: str = _d("How text is counted.")
    images: str = _d("How images are counted.")
    typical_output: dict[str, int] = _d("The typical output length per role, in tokens.")
    message_overhead: int = _d("Tokens added per request.")


class EstimateCost(_Block):
    """The estimate in dollars."""

    low: float = _d("At the typical output length.")
    high: float | None = _d("At the max output; null: unbounded (no max tokens).")
    unpriced: list[str] = _d("Roles without a --mia-price.")


class Estimate(_Block):
    """--mia-estimate: what the run would call and spend; no API call was made."""

    samples: int = _d("Samples selected.")
    unusable: int = _d("Samples that would make no call (unreadable).")
    judge_repeats: int = _d("--mia-judge-repeats.")
    protocols: list[str] = _d("The judge protocols estimated.")
    method: EstimateMethod = _d("How tokens are counted.")
    calls: list[EstimateRow] = _d("One row per role and protocol.")
    totals: EstimateTotals = _d("The rows of calls added up.")
    cost: EstimateCost | None = _d("In dollars; null: no --mia-price.")


class ModelInfo(_Block):
    """The model under test."""

    name: str | None = _d("--mia-model.")
    revision: str | None = _d("--mia-model-revision: the weights under test.")
    base_url: str = _d("The endpoint, without credentials (the built-in mock's label for --mia-model mock).")
    api_key_env: str = _d("The name of the variable holding the key, never its value.")
    api: Literal["chat", "responses"] = _d("--mia-api.")
    max_tokens: int | None = _d("--mia-max-tokens.")
    temperature: float | None = _d("--mia-temperature.")
    reasoning_effort: str | None = _d("--mia-reasoning-effort.")
    sampling_deviations: list[str] = _d("Sampling settings the endpoint did not accept as asked.")


class JudgeInfo(_Block):
    """The judge."""

    name: str = _d("--mia-judge-model.")
    base_url: str = _d("The endpoint, without credentials.")
    api_key_env: str = _d("The name of the variable holding the key, never its value.")
    api: Literal["chat", "responses"] = _d("--mia-judge-api.")
    sees_image: bool = _d("Whether the judge was sent the image.")
    temperature: float | None = _d("The judge's temperature (the headline protocol's unless overridden).")
    max_tokens: int | None = _d("The judge's max tokens (the headline protocol's unless overridden).")
    retries: int = _d("--mia-judge-retries.")
    repeats: int = _d("--mia-judge-repeats.")
    reasoning_effort: str | None = _d("--mia-judge-reasoning-effort.")
    sampling_deviations: list[str] = _d("Sampling settings the endpoint did not accept as asked.")


class ProtocolInfo(_Block):
    """The headline protocol."""

    name: str = _d("Its name.")
    prompt_version: str = _d("The version of its judge prompt.")
    headline: str = _d("The reference's name for the headline metric (total_score here).")


class ProtocolCounts(_Block):
    """Samples by verdict status under one protocol."""

    scored: int = _d("Scored.")
    zero: int = _d("Counted as 0 by the protocol's failure policy.")
    dropped: int = _d("Left out of every mean by the policy.")
    excluded: int = _d("Left out as parse errors (evalscope-json).")
    failed: int = _d("The judge call failed.")


class ProtocolJudge(_Block):
    """How the judge was asked under one protocol."""

    sees_image: bool = _d("Whether the judge was sent the image.")
    temperature: float | None = _d("Its temperature.")
    max_tokens: int | None = _d("Its max tokens.")


class ProtocolBaseline(_Block):
    """One protocol's comparison with the baseline's number under it."""

    total_score: float = _d("The baseline's total_score under this protocol.")
    delta: Score = _d("This run's minus the baseline's.")
    n_paired: int = _d("Samples scored in both.")
    mean_diff: float | None = _d("Paired mean change.")
    diff_ci: list[float] | None = _d("Its bootstrap interval.")
    p_value: float | None = _d("Paired sign-flip permutation test.")


class ProtocolSummary(_Block):
    """One protocol's numbers over the same answers."""

    prompt_version: str = _d("The version of its judge prompt.")
    headline: str = _d("The reference's name for total_score.")
    total_score: Score = _d("Mean of the counted scores.")
    ci: ConfidenceIntervals = _d("Bootstrap intervals.")
    n_counted: int = _d("Samples in the mean.")
    counts: ProtocolCounts = _d("Samples by status.")
    by_type: Breakdown = _d("Mean per instruction type.")
    by_component_type: Breakdown = _d("Mean per component type.")
    protocol_metrics: dict[str, float] = _d("The reference implementation's own metrics.")
    judge: ProtocolJudge = _d("How the judge was asked.")
    baseline: ProtocolBaseline | None = _d("Null: no baseline, or it does not hold this protocol.")


class DatasetInfo(_Block):
    """The dataset the rows came from."""

    source: str = _d("--mia-dataset.")
    split: str = _d("--mia-split.")
    limit: int | None = _d("--mia-limit.")
    fingerprint: str | None = _d("Fingerprint of the rows (a baseline of the same rows under another path matches on it).")


class Report(_Block):
    """A pytest-miabench JSON report (--mia-report): every key is always written, null where there is nothing."""

    model_config = ConfigDict(title="pytest-miabench JSON report")

    schema_version: int = Field(description="Version of the report's layout; a baseline of another version is refused.", json_schema_extra={"const": SCHEMA_VERSION})
    plugin_version: str = _d("The plugin's version.")
    created: str = _d("When the report was written: ISO 8601, UTC.")
    demo: bool = _d("--mia-demo: the built-in demo set and mock; the number means nothing.")
    mock_roles: list[Literal["model", "judge"]] = _d("Roles the built-in mock answered.")
    complete: bool = _d("Every row of the dataset ran to a result, uninterrupted.")
    partial: bool = _d("A subset of the rows was selected (see selection).")
    selection: Selection = _d("Which rows the run selected.")
    total_score: Score = _d("Mean of the counted sample scores under the headline protocol; null when none counts.")
    n_samples: int = _d("Samples selected.")
    n_scored: int = _d("Samples scored.")
    n_zero: int = _d("Samples counted as 0 by the protocol's failure policy.")
    n_dropped: int = _d("Samples the policy left out of the mean.")
    n_excluded: int = _d("Samples excluded as parse errors.")
    n_failed: int = _d("Samples that failed.")
    n_missing: int = _d("Samples selected but not run.")
    missing: list[str] = _d("Node ids of the samples not run.")
    finished_ahead: list[str] = _d("Node ids whose items pytest never ran, reported because their samples finished ahead of their turn before the run was interrupted.")
    threshold: float | None = _d("--mia-threshold.")
    threshold_on: Literal["mean", "lower"] = _d("What the threshold applies to: the mean, or the lower bound of its CI.")
    passed: bool = _d("Every sample ran and every gate holds.")
    by_type: Breakdown = _d("Mean per instruction type.")
    by_component_type: Breakdown = _d("Mean per component type.")
    ci: ConfidenceIntervals = _d("Bootstrap intervals.")
    protocol_metrics: dict[str, float] = _d("The reference implementation's own metrics.")
    judge_spread: JudgeSpread | None = _d("With --mia-judge-repeats > 1; else null.")
    baseline: BaselineComparison | None = _d("With --mia-baseline; else null.")
    usage: UsageTotals = _d("Calls and tokens.")
    cost: Cost | None = _d("With --mia-price; else null.")
    budget: BudgetSpend | None = _d("With --mia-budget-tokens / --mia-budget-usd; else null.")
    estimate: Estimate | None = _d("With --mia-estimate; else null.")
    model: ModelInfo = _d("The model under test and how it was asked.")
    judge: JudgeInfo = _d("The judge and how it was asked.")
    protocol: ProtocolInfo = _d("The headline protocol: total_score, the gates and the first summary line are its.")
    protocols: dict[str, ProtocolSummary] = _d("Every listed protocol by name, the headline first, each over the same answers.")
    dataset: DatasetInfo = _d("The dataset.")
    image_max_side: int = _d("--mia-image-max-side.")
    wall_seconds: float = _d("Wall time of the run.")
    samples: list[Sample] = _d("Every sample that ran, by dataset index.")


# -- the schema file ---------------------------------------------------------


def report_schema() -> dict[str, Any]:
    """The JSON Schema of the report, as published."""
    return {"$schema": DIALECT, "$id": SCHEMA_ID, **Report.model_json_schema()}


def schema_text() -> str:
    return json.dumps(report_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the schema file (``python -m pytest_miabench.reporting.schema [PATH]``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    target = Path(args[0]) if args else SCHEMA_FILE
    target.write_text(schema_text(), encoding="utf-8")
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
