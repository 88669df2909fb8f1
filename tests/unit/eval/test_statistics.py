"""mean_ci and paired_test against scipy.stats on known data, and their edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from facelab.eval.statistics import mean_ci, paired_test

SEEDS = [0.81, 0.84, 0.79, 0.86, 0.83]  # a metric over five seeds
BASE = [0.78, 0.80, 0.81, 0.80, 0.83]  # the baseline over the same seeds


def _half_width(values, level):
    v = np.asarray(values, dtype=np.float64)
    lo, hi = stats.t.interval(level, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    return (hi - lo) / 2


@pytest.mark.parametrize("level", [0.95, 0.9, 0.99])
def test_mean_ci_is_the_student_t_interval(level):
    out = mean_ci(SEEDS, level=level)
    assert out["n"] == 5
    assert out["mean"] == pytest.approx(np.mean(SEEDS), rel=1e-12)
    assert out["std"] == pytest.approx(np.std(SEEDS, ddof=1), rel=1e-12)  # sample standard deviation
    assert out["ci95"] == pytest.approx(_half_width(SEEDS, level), rel=1e-9)


def test_mean_ci_by_hand_for_two_values():
    out = mean_ci([0.7, 0.9])  # sd = 0.1 * sqrt(2), sem = sd / sqrt(2) = 0.1, t(0.975, 1) = 12.7062
    assert out["std"] == pytest.approx(0.1 * math.sqrt(2))
    assert out["ci95"] == pytest.approx(1.2706204736, rel=1e-9)  # t(0.975, 1) * sem
    assert out["ci95"] / 0.1 == pytest.approx(stats.t.ppf(0.975, 1), rel=1e-9)


def test_mean_ci_drops_none_nan_and_inf():
    out = mean_ci([0.81, None, float("nan"), 0.84, float("inf"), 0.79])
    ref = mean_ci([0.81, 0.84, 0.79])
    assert out == ref and out["n"] == 3
    assert out["ci95"] == pytest.approx(_half_width([0.81, 0.84, 0.79], 0.95), rel=1e-9)


def test_mean_ci_of_one_value_has_no_interval_and_of_none_nothing():
    one = mean_ci([0.8, None])
    assert one["mean"] == 0.8 and one["std"] == 0.0 and one["n"] == 1 and math.isnan(one["ci95"])
    empty = mean_ci([None, float("nan")])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in ("mean", "std", "ci95"))
    assert mean_ci([])["n"] == 0


def test_mean_ci_of_identical_values_is_a_zero_width_interval():
    out = mean_ci([0.5, 0.5, 0.5])
    assert out["mean"] == 0.5 and out["std"] == 0.0 and out["ci95"] == 0.0


def test_paired_test_is_scipys_ttest_rel():
    out = paired_test(SEEDS, BASE)
    ref = stats.ttest_rel(SEEDS, BASE)
    assert out["pairs"] == 5
    assert out["diff"] == pytest.approx(np.mean(np.subtract(SEEDS, BASE)), rel=1e-12)
    assert out["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert out["significant"] is bool(ref.pvalue < 0.05)
    d = np.subtract(SEEDS, BASE)  # 0.03 0.04 -0.02 0.06 0.0: t = mean / (sd / sqrt(n)) with n - 1 = 4 degrees
    t = d.mean() / (d.std(ddof=1) / math.sqrt(5))
    assert out["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), 4), rel=1e-9)
    assert out["p_value"] == pytest.approx(0.198, abs=1e-3) and out["significant"] is False


def test_paired_test_significance_and_its_sign():
    better = [b + d for b, d in zip(BASE, [0.05, 0.06, 0.04, 0.05, 0.07])]
    out = paired_test(better, BASE)
    assert out["diff"] == pytest.approx(0.054) and out["significant"] is True
    assert out["p_value"] == pytest.approx(stats.ttest_rel(better, BASE).pvalue, rel=1e-9) and out["p_value"] < 0.05
    worse = paired_test(BASE, better)  # two-sided: the same p, the opposite difference
    assert worse["diff"] == pytest.approx(-0.054) and worse["p_value"] == pytest.approx(out["p_value"], rel=1e-12)


def test_paired_test_drops_pairs_with_a_missing_value():
    a = [0.81, None, 0.79, 0.86, float("nan"), 0.83]
    b = [0.78, 0.80, 0.81, float("nan"), 0.83, 0.80]
    out = paired_test(a, b)  # pairs 0, 2 and 5 remain
    assert out["pairs"] == 3
    kept_a, kept_b = [0.81, 0.79, 0.83], [0.78, 0.81, 0.80]
    assert out["diff"] == pytest.approx(np.mean(np.subtract(kept_a, kept_b)))
    assert out["p_value"] == pytest.approx(stats.ttest_rel(kept_a, kept_b).pvalue, rel=1e-9)


def test_paired_test_needs_two_pairs():
    one = paired_test([0.8, None], [0.7, 0.6])
    assert one == {"diff": pytest.approx(0.1), "p_value": None, "significant": False, "pairs": 1}
    none = paired_test([], [])
    assert none["pairs"] == 0 and none["p_value"] is None and none["significant"] is False and math.isnan(none["diff"])


@pytest.mark.parametrize("shift", [0.0, 0.02])
def test_paired_test_of_constant_differences_has_no_p_value(shift):
    """Zero variance of the differences: the t statistic is undefined (scipy returns NaN or +-inf)."""
    out = paired_test([b + shift for b in BASE], BASE)
    assert out["p_value"] is None and out["significant"] is False and out["pairs"] == 5
    assert out["diff"] == pytest.approx(shift)
