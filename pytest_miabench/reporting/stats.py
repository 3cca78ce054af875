"""Small statistics for the report: bootstrap intervals and judge spread.

Importing this module is cheap: numpy (present through ``datasets``) is
imported inside the functions that need it.

Everything here is deterministic: the same values in the same order with the
same seed give bit-identical intervals on every run and platform, so two
reports of the same run can be compared with ``==``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

from ..result import SampleRecord
from ..summary import ConfidenceIntervals, JudgeSpread

__all__ = ["Counted", "bootstrap_ci", "ci_by_group", "counted", "group_seed", "judge_spread", "mde", "paired_stats", "report_cis", "sign_flip_p_value"]

# Bound on resample-matrix cells held in memory at once (int64 indices):
# 4M cells = 32 MB, enough for 400 values x 2000 resamples in one go.
_CHUNK_CELLS = 4_000_000


def _check_values(values: Sequence[float]) -> list[float]:
    out = [float(v) for v in values]
    for v in out:
        if not math.isfinite(v):
            raise ValueError(f"bootstrap_ci needs finite values, got {v!r}")
    return out


def bootstrap_ci(
    values: Sequence[float],
    *,
    seed: int = 0,
    n_resamples: int = 2000,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of the mean of ``values``.

    ``n_resamples`` resamples of ``len(values)`` values are drawn with
    replacement (indices from numpy's ``Generator(PCG64(seed))``, values
    taken in the order given), each resample's mean is computed, and the
    interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of
    those means (linear interpolation between order statistics).

    Returns None for no values and ``(v, v)`` for a single value.  The
    interval always lies within ``[min(values), max(values)]``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1 (exclusive), got {level!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples!r}")
    data = _check_values(values)
    n = len(data)
    if n == 0:
        return None
    lo_v, hi_v = min(data), max(data)
    if lo_v == hi_v:  # one value, or all equal: every resample mean is that value
        return (lo_v, hi_v)

    import numpy as np

    arr = np.asarray(data, dtype=np.float64)
    rng = np.random.Generator(np.random.PCG64(seed))
    means = np.empty(n_resamples, dtype=np.float64)
    rows = max(1, _CHUNK_CELLS // n)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int64)
        means[start:stop] = arr[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    # Rounding in the means can stray an ulp outside the data range.
    return (min(max(float(lo), lo_v), hi_v), min(max(float(hi), lo_v), hi_v))


def group_seed(seed: int, name: str) -> int:
    """A 64-bit seed derived from ``(seed, name)`` by SHA-256 (not ``hash()``,
    which is salted per process): stable across runs, and independent per
    group so adding or removing a group never changes another's interval."""
    digest = hashlib.sha256(f"{int(seed)}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def ci_by_group(
    groups: Mapping[str, Sequence[float]],
    *,
    seed: int = 0,
    n_resamples: int = 2000,
    level: float = 0.95,
) -> dict[str, tuple[float, float] | None]:
    """``bootstrap_ci`` for each group, seeded with ``group_seed(seed, name)``.

    Keys come back in the order of ``groups``; an empty group maps to None.
    """
    return {
        name: bootstrap_ci(values, seed=group_seed(seed, name), n_resamples=n_resamples, level=level)
        for name, values in groups.items()
    }


def judge_spread(per_sample_scores: Sequence[Sequence[float | None]], *, tolerance: float = 1e-9) -> JudgeSpread:
    """How much repeated judging of the same answers disagrees.

    ``per_sample_scores[i]`` holds the scores the judge gave sample ``i`` on
    each repeat (None for a repeat that produced no score; those are ignored).
    Only samples with at least two scores are *compared*; for each, the
    spread is the population standard deviation (``ddof=0``) of its scores.

    Returns a dict:

    - ``n_samples``: samples given;
    - ``n_compared``: samples with at least two scores;
    - ``repeats_max``: most scores any sample had;
    - ``mean_std``: mean over compared samples of the per-sample population
      std (None if none compared);
    - ``max_std``: the largest per-sample population std (None if none);
    - ``max_std_sample``: position in the input of the sample with
      ``max_std`` (first one on ties; None if none);
    - ``n_disagree``: compared samples whose scores are not all equal
      (max - min greater than ``tolerance``);
    - ``max_range``: the largest max - min over compared samples (None if none).
    """
    stds: list[tuple[int, float]] = []
    ranges: list[float] = []
    repeats_max = 0
    n_disagree = 0
    for position, repeats in enumerate(per_sample_scores):
        scores = [float(s) for s in repeats if s is not None]
        repeats_max = max(repeats_max, len(scores))
        if len(scores) < 2:
            continue
        mean = math.fsum(scores) / len(scores)
        std = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / len(scores))
        spread = max(scores) - min(scores)
        stds.append((position, std))
        ranges.append(spread)
        if spread > tolerance:
            n_disagree += 1
    if stds:
        max_position, max_std = max(stds, key=lambda item: (item[1], -item[0]))
        mean_std: float | None = math.fsum(s for _, s in stds) / len(stds)
    else:
        max_position, max_std, mean_std = None, None, None
    return {
        "n_samples": len(per_sample_scores),
        "n_compared": len(stds),
        "repeats_max": repeats_max,
        "mean_std": mean_std,
        "max_std": max_std,
        "max_std_sample": max_position,
        "n_disagree": n_disagree,
        "max_range": max(ranges) if ranges else None,
    }


@dataclass(frozen=True)
class Counted:
    """The scores in a run's means, in sample index order."""

    records: list[SampleRecord]  # the samples in the mean
    total: list[float]  # their scores
    by_type: dict[str, list[float]]  # their scores by instruction type (sorted by type)
    by_component_type: dict[str, list[float]]  # their components' scores by component type (sorted)


def counted(samples: Sequence[SampleRecord]) -> Counted:
    """Which samples count, the one rule of every mean and interval: a
    sample is in the mean when its status is not ``failed`` and its score is
    not None; a component counts for its type when its sample counts and its
    own score is not None.  Samples are taken in index order, so the result
    does not depend on the order results arrived in."""
    ordered = sorted(samples, key=lambda r: r["index"])
    # (record, score) of the samples in the mean
    pairs = [(r, float(score)) for r in ordered if r.get("status") != "failed" and (score := r.get("score")) is not None]
    by_type: dict[str, list[float]] = {}
    by_component: dict[str, list[float]] = {}
    for r, score in pairs:
        by_type.setdefault(r["type"], []).append(score)
        for component in r.get("components") or ():
            component_score = component.get("score")
            if component_score is not None:
                by_component.setdefault(component["type"], []).append(float(component_score))
    return Counted(
        [r for r, _ in pairs],
        [score for _, score in pairs],
        dict(sorted(by_type.items())),
        dict(sorted(by_component.items())),
    )


class _Resampling(TypedDict):
    n_resamples: int
    level: float


def report_cis(
    samples: Sequence[SampleRecord],
    *,
    seed: int = 0,
    n_resamples: int = 2000,
    level: float = 0.95,
) -> ConfidenceIntervals:
    """The report's ``ci`` block from per-sample results.

    Counts samples by ``counted``, the rule the summary's means follow too.
    Intervals are lists (JSON).

    Seeds: the total uses ``seed``; each breakdown uses ``ci_by_group`` with
    ``group_seed(seed, "by_type")`` / ``group_seed(seed, "by_component_type")``.
    """
    scores = counted(samples)
    same: _Resampling = {"n_resamples": n_resamples, "level": level}

    def as_list(ci: tuple[float, float] | None) -> list[float] | None:
        return None if ci is None else [ci[0], ci[1]]

    total = bootstrap_ci(scores.total, seed=seed, **same)
    types = ci_by_group(scores.by_type, seed=group_seed(seed, "by_type"), **same)
    components = ci_by_group(scores.by_component_type, seed=group_seed(seed, "by_component_type"), **same)
    return {
        "level": level,
        "n_resamples": n_resamples,
        "seed": seed,
        "total_score": as_list(total),
        "by_type": {k: as_list(v) for k, v in types.items()},
        "by_component_type": {k: as_list(v) for k, v in components.items()},
    }


# -- paired comparison with a baseline -----------------------------------------

#: Sign-flip permutations drawn when exact enumeration (2**n) would be larger.
PERMUTATIONS = 10_000
#: Exact enumeration up to this many nonzero differences (2**16 = 65536 sign patterns).
_EXACT_MAX = 16
#: z quantiles of the MDE: two-sided alpha 0.05 and 80 % power.
MDE_ALPHA = 0.05
MDE_POWER = 0.80


class PairedStats(TypedDict):
    n: int
    mean_diff: float | None  # mean of (this run - baseline) per sample
    sd_diff: float | None  # sample standard deviation (ddof=1) of those differences
    ci: list[float] | None  # paired bootstrap percentile interval of mean_diff
    p_value: float | None  # two-sided sign-flip permutation test of mean_diff = 0
    p_exact: bool  # enumerated every sign pattern (else PERMUTATIONS random ones)
    mde: float | None  # smallest true mean change detectable (80 % power, alpha 0.05)


def mde(sd: float, n: int, *, alpha: float = MDE_ALPHA, power: float = MDE_POWER) -> float:
    """Minimum detectable effect of a paired two-sided test (normal
    approximation): ``(z_{1-alpha/2} + z_{power}) * sd / sqrt(n)``; with the
    defaults, ``2.8016 * sd / sqrt(n)``."""
    from statistics import NormalDist

    z = NormalDist()
    return (z.inv_cdf(1.0 - alpha / 2.0) + z.inv_cdf(power)) * sd / math.sqrt(n)


def sign_flip_p_value(diffs: Sequence[float], *, seed: int = 0, n_permutations: int = PERMUTATIONS) -> tuple[float, bool]:
    """Two-sided p-value of a paired sign-flip permutation test, and whether it was exact.

    Under the null hypothesis (no change) each difference is as likely to
    have either sign, so the statistic ``|sum(d)|`` is compared with its
    value under sign patterns.  Zero differences are the same under every
    flip and are left out.  Up to ``_EXACT_MAX`` nonzero differences every
    pattern is enumerated and ``p = #{|sum| >= observed} / 2**n``; beyond,
    ``n_permutations`` random patterns (``Generator(PCG64(seed))``) give
    ``p = (1 + #{|sum| >= observed}) / (1 + n_permutations)``, which is never 0.
    """
    data = [d for d in _check_values(diffs) if d != 0.0]
    if not data:
        return 1.0, True

    import numpy as np

    arr = np.asarray(data, dtype=np.float64)
    observed = abs(math.fsum(data))
    # Ties between mathematically equal sums must not be lost to rounding.
    tolerance = 1e-9 * max(1.0, float(np.abs(arr).sum()))
    n = len(data)
    if n <= _EXACT_MAX:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        sums = np.abs(patterns @ arr)
        return float(np.count_nonzero(sums >= observed - tolerance)) / 2**n, True
    rng = np.random.Generator(np.random.PCG64(seed))
    hits = 0
    rows = max(1, _CHUNK_CELLS // n)
    for start in range(0, n_permutations, rows):
        stop = min(n_permutations, start + rows)
        signs = rng.integers(0, 2, size=(stop - start, n), dtype=np.int64) * 2 - 1
        hits += int(np.count_nonzero(np.abs(signs @ arr) >= observed - tolerance))
    return (1 + hits) / (1 + n_permutations), False


def paired_stats(diffs: Sequence[float], *, seed: int = 0, n_resamples: int = 2000, level: float = 0.95) -> PairedStats:
    """Statistics of per-sample differences (this run minus the baseline).

    The interval is ``bootstrap_ci`` of the differences (resampling pairs,
    so what both runs share cancels out), seeded with
    ``group_seed(seed, "paired")``; the p-value is ``sign_flip_p_value``
    seeded with ``group_seed(seed, "sign-flip")``; the MDE uses the sample SD
    of the differences (None below two pairs).
    """
    data = _check_values(diffs)
    n = len(data)
    if n == 0:
        return {"n": 0, "mean_diff": None, "sd_diff": None, "ci": None, "p_value": None, "p_exact": True, "mde": None}
    mean = math.fsum(data) / n
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in data) / (n - 1)) if n > 1 else None
    ci = bootstrap_ci(data, seed=group_seed(seed, "paired"), n_resamples=n_resamples, level=level)
    p_value, exact = sign_flip_p_value(data, seed=group_seed(seed, "sign-flip"))
    return {
        "n": n,
        "mean_diff": mean,
        "sd_diff": sd,
        "ci": None if ci is None else [ci[0], ci[1]],
        "p_value": p_value,
        "p_exact": exact,
        "mde": None if sd is None else mde(sd, n),
    }
