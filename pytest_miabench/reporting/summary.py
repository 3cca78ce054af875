"""The summary of a run: its numbers, from per-sample records in any order.

Records are sorted by sample index before anything is summed, so the
aggregate is the same in one process and under xdist, whichever worker ran
what.  Which samples count is ``stats.counted``'s rule, the one every mean
and interval follows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, cast

from ..calls import budget as budget_mod
from ..config.settings import Settings
from ..protocols.base import DROPPED, EXCLUDED, SCORED, ZERO, Protocol, SampleSpec, Verdict
from ..protocols.sampling import judge_sees_image, judge_settings
from ..result import Role, SampleRecord
from ..summary import (
    BaselineComparison,
    BudgetSpend,
    Cost,
    JudgeSpread,
    ProtocolBaseline,
    ProtocolSummary,
    RoleCost,
    RoleDeviations,
    RoleTotals,
    Summary,
    Tally,
    UsageTotals,
)
from . import stats
from .baseline import Baseline, compare

if TYPE_CHECKING:
    from .collect import Collector

STATUSES = (SCORED, ZERO, DROPPED, EXCLUDED, "failed")


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None



def summarize(
    results: list[SampleRecord], expected: int, protocol: Protocol, unclaimed: list[SampleRecord] | None = None
) -> Tally:
    """The numbers of a run, from per-sample results (any order); ``unclaimed``
    are records of samples called ahead whose items never ran (only their
    cost counts)."""
    results = sorted(results, key=lambda r: r["index"])
    counted = stats.counted(results)
    counts = {status: sum(1 for r in results if r["status"] == status) for status in STATUSES}
    return {
        "total_score": _mean(counted.total),
        "n_samples": expected,
        "n_results": len(results),
        "n_scored": counts[SCORED],
        "n_zero": counts[ZERO],
        "n_dropped": counts[DROPPED],
        "n_excluded": counts[EXCLUDED],
        "n_failed": counts["failed"],
        "n_missing": max(0, expected - len(results)),
        "n_counted": len(counted.total),
        "by_type": {k: _mean(v) for k, v in counted.by_type.items()},
        "by_component_type": {k: _mean(v) for k, v in counted.by_component_type.items()},
        "protocol_metrics": protocol.aggregate(_verdict_pairs(results)),
        "usage": _usage(results, unclaimed or []),
        "sampling_deviations": _deviations(results + (unclaimed or [])),
        "stopped": next((r["reason"] for r in results if r["failed_stage"] == "endpoint"), None),
    }


def _verdict_pairs(results: list[SampleRecord]) -> list[tuple[SampleSpec, Verdict]]:
    """What a protocol's own ``aggregate`` reads: each judged sample's spec and verdict."""
    pairs: list[tuple[SampleSpec, Verdict]] = []
    for r in results:
        if r["status"] == "failed":
            continue
        spec = SampleSpec(
            index=r["index"],
            instruction="",
            type=r["type"],
            components=tuple(c["text"] for c in r["components"]),
            weights=tuple(c["weight"] for c in r["components"]),
            component_types=tuple(c["type"] for c in r["components"]),
        )
        verdict = Verdict(r["status"], r["score"], tuple(c["score"] for c in r["components"]), r.get("metrics") or {})
        pairs.append((spec, verdict))
    return pairs


def protocol_view(record: SampleRecord, name: str, headline: bool) -> SampleRecord:
    """The record as protocol ``name`` judged it: its status, score,
    component scores and metrics in the record's own fields.  A record
    without that protocol's verdict (a crashed worker's) is failed under it;
    the headline's verdict is the record's own fields."""
    verdict = (record.get("protocols") or {}).get(name)
    view = record.copy()
    if verdict is None:
        if headline:
            return record
        view["status"], view["score"], view["metrics"] = "failed", None, {}
        view["components"] = [{**c, "score": None} for c in record["components"]]
        return view
    scores = verdict["components"]
    view["status"], view["score"], view["metrics"] = verdict["status"], verdict["score"], verdict["metrics"]
    view["components"] = [{**c, "score": scores[i] if i < len(scores) else None} for i, c in enumerate(record["components"])]
    return view


def protocol_summary(
    results: list[SampleRecord], protocol: Protocol, headline: bool, settings: Settings
) -> tuple[ProtocolSummary, list[SampleRecord]]:
    """One protocol's numbers over the run's records (and the records as it
    judged them), computed exactly as the headline's are."""
    views = [protocol_view(r, protocol.name, headline) for r in sorted(results, key=lambda r: r["index"])]
    tally = summarize(views, len(views), protocol)
    sampling = judge_settings(settings, protocol)
    return {
        "prompt_version": protocol.prompt_version,
        "headline": protocol.headline,
        "total_score": tally["total_score"],
        "ci": stats.report_cis(views, seed=settings.seed),
        "n_counted": tally["n_counted"],
        "counts": {
            "scored": tally["n_scored"],
            "zero": tally["n_zero"],
            "dropped": tally["n_dropped"],
            "excluded": tally["n_excluded"],
            "failed": tally["n_failed"],
        },
        "by_type": tally["by_type"],
        "by_component_type": tally["by_component_type"],
        "protocol_metrics": tally["protocol_metrics"],
        "judge": {
            "sees_image": judge_sees_image(settings, protocol),
            "temperature": sampling.get("temperature"),
            "max_tokens": sampling.get("max_tokens"),
        },
        "baseline": None,
    }, views


def _usage(results: list[SampleRecord], unclaimed: list[SampleRecord]) -> UsageTotals:
    """What the run cost: every attempt sent, the unclaimed samples' included."""
    paid = results + unclaimed
    limits = [r["concurrency_limit"] for r in paid if "concurrency_limit" in r]
    return {
        "model": _role_totals(results, paid, "model"),
        "judge": _role_totals(results, paid, "judge"),
        "retries": sum(r["retries"] for r in paid),
        "judge_reasks": sum(r.get("judge_reasks", 0) for r in paid),
        "unclaimed_samples": len(unclaimed),
        "rate_limited": sum(r.get("rate_limited", 0) for r in paid),
        "concurrency_reached": min(limits) if limits else None,
    }


def _role_totals(results: list[SampleRecord], paid: list[SampleRecord], role: Role) -> RoleTotals:
    usage = [r["usage"][role] for r in paid]
    return {
        "api_calls": sum(r["calls"][role] for r in paid),
        "cache_hits": sum(1 for r in results if r["cached"][role]),
        "prompt_tokens": sum(u.get("prompt_tokens", 0) for u in usage),
        "completion_tokens": sum(u.get("completion_tokens", 0) for u in usage),
        "reasoning_tokens": sum(u.get("reasoning_tokens", 0) for u in usage),
        "cached_prompt_tokens": sum(u.get("cached_prompt_tokens", 0) for u in usage),
        "cached_completion_tokens": sum(u.get("cached_completion_tokens", 0) for u in usage),
    }


def _deviations(records: list[SampleRecord]) -> RoleDeviations:
    """Each role's departures from the requested sampling, once each."""
    out: RoleDeviations = {"model": [], "judge": []}
    for record in records:
        for entry in record["sampling_deviations"]:
            role, _, text = entry.partition(": ")
            seen = out["model"] if role == "model" else out["judge"] if role == "judge" else None
            if seen is not None and text not in seen:
                seen.append(text)
    return out



def block_tally(block: ProtocolSummary) -> Tally:
    """What ``baseline.compare`` reads of a tally, from a protocol's block."""
    return cast(Tally, {"total_score": block["total_score"], "by_type": block["by_type"], "by_component_type": block["by_component_type"]})


def protocol_baseline(comparison: BaselineComparison) -> ProtocolBaseline:
    """The few numbers of a comparison that a protocol's block keeps."""
    return {
        "total_score": comparison["total_score"],
        "delta": comparison["delta"],
        "n_paired": comparison["n_paired"],
        "mean_diff": comparison["mean_diff"],
        "diff_ci": comparison["diff_ci"],
        "p_value": comparison["p_value"],
    }


def cost(usage: UsageTotals, settings: Settings) -> Cost | None:
    """Estimated dollars from --mia-price; None without prices.  Only this
    run's API calls cost money; cached answers are shown separately."""
    if not settings.price:
        return None
    prices = budget_mod.role_prices(settings)

    def role_cost(role: Role, name: str | None) -> RoleCost | None:
        if name is None or role not in prices:
            return None
        tokens = usage[role]
        return {
            "model": name,
            "spent": budget_mod.dollars(prices, role, tokens["prompt_tokens"], tokens["completion_tokens"]),
            "saved_by_cache": budget_mod.dollars(prices, role, tokens["cached_prompt_tokens"], tokens["cached_completion_tokens"]),
        }

    model, judge = role_cost("model", settings.model), role_cost("judge", settings.judge_model)
    known = [c["spent"] for c in (model, judge) if c is not None]
    return {"model": model, "judge": judge, "total_spent": math.fsum(known) if known else None}


def budget_spend(summary: Summary, settings: Settings, stopped: str | None) -> BudgetSpend | None:
    """Spend against --mia-budget-tokens / --mia-budget-usd: every token the
    endpoints reported (calls of samples called ahead but not run included)."""
    if settings.budget_tokens is None and settings.budget_usd is None:
        return None
    usage = summary["usage"]
    tokens = sum(usage[role]["prompt_tokens"] + usage[role]["completion_tokens"] for role in ("model", "judge"))
    spent_usd = summary["cost"]["total_spent"] if summary["cost"] is not None else None
    return {
        "tokens": settings.budget_tokens,
        "usd": settings.budget_usd,
        "spent_tokens": tokens,
        "spent_usd": spent_usd,
        "stopped": stopped,
        "n_not_run": summary["n_missing"],
    }


def build_summary(collected: Collector, settings: Settings, protocols: Sequence[Protocol], baselines: Mapping[str, Baseline]) -> Summary:
    """The run's summary as of now: the headline's numbers, each protocol's
    block, the judge's spread, the baseline's comparison and the spend.
    ``baselines``: the baseline under each protocol it shares with the run."""
    results = list(collected.results.values())
    expected = len(collected.expected) or len(collected.results)
    tally = summarize(results, expected, protocols[0], collected.unclaimed)
    done = set(collected.results)
    summary: Summary = {
        **tally,
        "missing": [nodeid for nodeid in collected.expected if nodeid not in done],
        "finished_ahead": sorted(collected.finished_ahead),
        "ci": stats.report_cis(results, seed=settings.seed),
        "cost": cost(tally["usage"], settings),
        "budget": None,
        "judge_spread": None,
        "baseline": None,
        "protocols": _protocol_blocks(collected, settings, protocols, baselines),
    }
    if settings.judge_repeats > 1:
        summary["judge_spread"] = _judge_spread(results)
    baseline = baselines.get(protocols[0].name)
    if baseline is not None:
        summary["baseline"] = compare(
            summary,
            collected.results,
            baseline,
            str(settings.baseline),
            settings.max_drop,
            run_samples=collected.run_samples(),
            common=settings.baseline_common,
            seed=settings.seed,
        )
    summary["budget"] = budget_spend(summary, settings, collected.budget_stop)
    return summary


def _protocol_blocks(
    collected: Collector, settings: Settings, protocols: Sequence[Protocol], baselines: Mapping[str, Baseline]
) -> dict[str, ProtocolSummary]:
    """Each protocol's block, the headline first, with its comparison to the
    baseline under that protocol when there is one."""
    results = list(collected.results.values())
    blocks: dict[str, ProtocolSummary] = {}
    nodeids = {record["index"]: nodeid for nodeid, record in collected.results.items()}
    for position, protocol in enumerate(protocols):
        block, views = protocol_summary(results, protocol, position == 0, settings)
        blocks[protocol.name] = block
        before = baselines.get(protocol.name)
        if before is not None:
            # Compared on the samples both hold (the headline's block below refuses or gates).
            by_nodeid = {nodeids[view["index"]]: view for view in views}
            comparison = compare(
                block_tally(block),
                by_nodeid,
                before,
                str(settings.baseline),
                None,
                run_samples=collected.run_samples(),
                common=True,
                seed=settings.seed,
            )
            block["baseline"] = protocol_baseline(comparison)
    return blocks


def _judge_spread(results: list[SampleRecord]) -> JudgeSpread:
    """How the judge's repeats disagree, naming the sample that varies most."""
    judged = [r for r in sorted(results, key=lambda r: r["index"]) if r["status"] != "failed"]
    spread = stats.judge_spread([r.get("judge_scores") or [] for r in judged])
    if spread["max_std_sample"] is not None:  # a position in ``judged``: name the sample
        spread["max_std_sample"] = judged[spread["max_std_sample"]]["index"]
    return spread
