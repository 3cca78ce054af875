from __future__ import annotations

import math
import os
import random
import subprocess
import sys

import pytest
from support.imports import heavy_imports

from pytest_miabench.reporting.stats import bootstrap_ci, ci_by_group, group_seed, judge_spread, report_cis


def _scores(n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [rng.choice([0.0, 0.25, 0.5, 0.7, 0.8, 1.0, 1.0]) for _ in range(n)]


def test_empty_is_none():
    assert bootstrap_ci([]) is None


def test_single_value_is_degenerate():
    assert bootstrap_ci([0.7]) == (0.7, 0.7)


def test_all_equal_values_give_a_degenerate_interval():
    assert bootstrap_ci([0.5] * 37, seed=3) == (0.5, 0.5)


def test_two_values_hand_checkable():
    # Resample means of [0, 1] (n=2) are 0, 0.5 or 1 with probability 1/4, 1/2, 1/4:
    # the 2.5% and 97.5% quantiles of 2000 draws are 0 and 1.
    assert bootstrap_ci([0.0, 1.0], seed=0) == (0.0, 1.0)
    # At a 40% level the interval is the middle mass only.
    assert bootstrap_ci([0.0, 1.0], seed=0, level=0.4) == (0.5, 0.5)


def test_same_seed_same_interval():
    values = _scores(400)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(list(values), seed=7)


def test_same_seed_same_interval_in_another_process():
    values = _scores(50)
    code = (
        "from pytest_miabench.reporting.stats import bootstrap_ci;"
        f"print(repr(bootstrap_ci({values!r}, seed=11)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == repr(bootstrap_ci(values, seed=11))


def test_different_seed_different_interval():
    values = _scores(400)
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values, seed=2)


@pytest.mark.parametrize("seed", range(5))
def test_interval_contains_mean_and_lies_within_range(seed):
    values = _scores(120, seed=seed)
    lo, hi = bootstrap_ci(values, seed=seed)
    mean = math.fsum(values) / len(values)
    assert min(values) <= lo <= mean <= hi <= max(values)
    assert hi - lo > 0


def test_higher_level_gives_wider_interval():
    values = _scores(200)
    lo90, hi90 = bootstrap_ci(values, level=0.90)
    lo99, hi99 = bootstrap_ci(values, level=0.99)
    assert lo99 <= lo90 and hi90 <= hi99 and (hi99 - lo99) > (hi90 - lo90)


def test_width_is_plausible_for_the_standard_error():
    values = _scores(400)
    n = len(values)
    mean = math.fsum(values) / n
    se = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1) / n)
    lo, hi = bootstrap_ci(values)
    # Normal approximation: width ~ 2 * 1.96 * se; bootstrap within 15%.
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_coverage_of_a_known_bernoulli_mean():
    rng = random.Random(2024)
    p, n, trials = 0.7, 100, 200
    covered = 0
    for trial in range(trials):
        data = [1.0 if rng.random() < p else 0.0 for _ in range(n)]
        lo, hi = bootstrap_ci(data, seed=trial, n_resamples=1000)
        covered += lo <= p <= hi
    assert 0.88 * trials <= covered <= 0.99 * trials, covered


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        bootstrap_ci([0.1, float("nan")])
    with pytest.raises(ValueError):
        bootstrap_ci([0.1, 0.2], level=1.0)
    with pytest.raises(ValueError):
        bootstrap_ci([0.1, 0.2], n_resamples=0)


def test_ci_by_group_is_independent_of_other_groups():
    a, b, c = _scores(60, 1), _scores(60, 2), _scores(60, 3)
    two = ci_by_group({"basic": a, "complex": b}, seed=4)
    three = ci_by_group({"creative": c, "basic": a, "complex": b}, seed=4)
    assert two["basic"] == three["basic"] and two["complex"] == three["complex"]
    assert list(three) == ["creative", "basic", "complex"]
    # Same values in two groups still get different resamples (seed per name).
    same = ci_by_group({"x": a, "y": a}, seed=4)
    assert same["x"] != same["y"]
    assert ci_by_group({"empty": []}) == {"empty": None}
    # The seed reaches every group.
    other = ci_by_group({"basic": a, "complex": b}, seed=5)
    assert other["basic"] != two["basic"] and other["complex"] != two["complex"]


def test_group_seed_is_the_same_in_every_process():
    # str hashes are salted per process (PYTHONHASHSEED): a seed derived from
    # hash() would differ between two runs of the same report.
    names = ["basic", "complex", "describe", "by_type"]
    code = f"from pytest_miabench.reporting.stats import group_seed; print([group_seed(s, n) for s in (0, 1) for n in {names!r}])"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": hashseed}
        ).stdout.strip()
        for hashseed in ("1", "2")
    }
    here = [group_seed(s, n) for s in (0, 1) for n in names]
    assert outputs == {repr(here)}
    # Distinct per (seed, name), and a valid 64-bit seed for numpy.
    assert len(set(here)) == len(here)
    assert all(0 <= s < 2**64 for s in here)


def test_judge_spread_hand_computed():
    spread = judge_spread([[1.0, 1.0, 1.0], [0.0, 1.0], [0.5, 0.5, 0.8, 0.2], [0.3], [None, 0.4, None]])
    # stds: 0; 0.5; sqrt(((0)^2+(0)^2+(0.3)^2+(0.3)^2)/4) = sqrt(0.045)
    s3 = math.sqrt(0.045)
    assert spread["n_samples"] == 5
    assert spread["n_compared"] == 3
    assert spread["repeats_max"] == 4
    assert spread["mean_std"] == pytest.approx((0 + 0.5 + s3) / 3)
    assert spread["max_std"] == pytest.approx(0.5)
    assert spread["max_std_sample"] == 1
    assert spread["n_disagree"] == 2
    assert spread["max_range"] == pytest.approx(1.0)


def test_judge_spread_nothing_to_compare():
    spread = judge_spread([[0.5], []])
    assert spread["n_compared"] == 0 and spread["mean_std"] is None and spread["max_std"] is None
    assert spread["n_disagree"] == 0 and spread["max_range"] is None


def test_import_is_cheap():
    assert heavy_imports("pytest_miabench.reporting.stats") == []


def _result(index, type_, status, score, comps):
    return {
        "index": index,
        "type": type_,
        "status": status,
        "score": score,
        "components": [{"type": t, "score": c, "weight": 1, "text": ""} for t, c in comps],
    }


def test_report_cis_follows_the_counting_rule():
    # Counted (status not failed, score not None): 0, 1, 2 (a zero counts), 5.
    counted = [
        _result(0, "basic", "scored", 1.0, [("describe", 1.0), ("math", 1.0)]),
        _result(1, "basic", "scored", 0.5, [("describe", 0.0), ("math", 1.0)]),
        _result(2, "basic", "zero", 0.0, [("describe", None), ("math", None)]),
        _result(5, "complex", "scored", 0.25, [("math", 1.0)]),
    ]
    not_counted = [
        # A failed sample is out even if it carries a score, and so are its components.
        _result(3, "complex", "failed", 1.0, [("describe", 1.0), ("grammar", 1.0)]),
        _result(4, "complex", "dropped", None, [("describe", None)]),
    ]
    results = counted + not_counted
    cis = report_cis(list(reversed(results)), seed=3)
    assert cis == report_cis(results, seed=3)  # arrival order does not matter
    assert cis == report_cis(counted, seed=3)  # the others change nothing
    assert cis["level"] == 0.95 and cis["seed"] == 3 and cis["n_resamples"] == 2000
    # Total over 1.0, 0.5, 0.0, 0.25 (mean 0.4375): only the zero lies below
    # 0.25, so a lower end under 0.25 shows the zero sample is counted.
    lo, hi = cis["total_score"]
    assert 0.0 <= lo < 0.25 and lo < 0.4375 < hi <= 1.0
    lo, hi = cis["by_type"]["basic"]  # 1.0, 0.5, 0.0
    assert 0.0 <= lo < 0.5 < hi <= 1.0
    assert cis["by_type"]["complex"] == [0.25, 0.25]  # one counted value
    # describe: 1.0 and 0.0, the two-value case of test_two_values_hand_checkable.
    assert cis["by_component_type"] == {"describe": [0.0, 1.0], "math": [1.0, 1.0]}


def test_report_cis_empty():
    cis = report_cis([_result(0, "basic", "failed", None, [])])
    assert cis["total_score"] is None and cis["by_type"] == {} and cis["by_component_type"] == {}


def test_sign_flip_sampled_when_exact_enumeration_is_too_large():
    from pytest_miabench.reporting.stats import PERMUTATIONS, sign_flip_p_value

    # 20 equal drops: only the two all-equal sign patterns reach the observed
    # |sum| (chance 2 / 2**20), so 10000 seeded flips see none besides it.
    p, exact = sign_flip_p_value([-0.1] * 20, seed=3)
    assert not exact and p == 1 / (1 + PERMUTATIONS)
    assert sign_flip_p_value([-0.1] * 20, seed=3) == sign_flip_p_value([-0.1] * 20, seed=3)
    # Zeros carry no sign: left out; nothing left means no evidence at all.
    assert sign_flip_p_value([0.0, 0.0]) == (1.0, True)
    assert sign_flip_p_value([0.0, -0.1, 0.0]) == (1.0, True)  # 2 patterns, both |sum| = 0.1


def test_paired_stats_small_cases():
    from pytest_miabench.reporting.stats import mde, paired_stats

    # sd 0.2 over 400 pairs: (1.959964 + 0.841621) * 0.2 / 20
    assert mde(0.2, 400) == pytest.approx(2.801585 * 0.01, rel=1e-6)
    one = paired_stats([-0.25])
    assert (one["n"], one["mean_diff"], one["sd_diff"], one["ci"], one["mde"]) == (1, -0.25, None, [-0.25, -0.25], None)
    # Two pairs: a resample's mean is -0.3, -0.2 or -0.1 with chances 1/4, 1/2, 1/4,
    # so the 2.5 % and 97.5 % quantiles of 2000 resample means are the extremes.
    two = paired_stats([-0.3, -0.1])
    assert two["ci"] == pytest.approx([-0.3, -0.1]) and two["p_value"] == pytest.approx(0.5)
    assert paired_stats([])["mean_diff"] is None
