"""Figures for people: significant digits, and intervals only where they mean something, inside the range."""

from __future__ import annotations

import math

import pytest

from facelab.eval.statistics import mean_ci
from facelab.utils.figures import figure, interval, mean_interval_text


@pytest.mark.parametrize("value, digits, text", [
    (0.9305555555555554, 4, "0.9306"), (0.9305555555555554, 3, "0.931"), (12.345678, 4, "12.35"),
    (12345.678, 4, "12346"), (1234.5, 0, "1234"), (0.5, 4, "0.5000"), (0.0, 4, "0.000"), (1.0, 3, "1.00"),
    (0.003, 4, "0.003"), (3e-5, 4, "3e-05"), (0.000312345, 4, "0.0003123"), (-0.25, 3, "-0.250"),
    (None, 4, "-"), (float("nan"), 4, "-"), (float("inf"), 4, "inf"), (7, 4, "7"), ("x", 4, "x"),
])
def test_figure(value, digits, text):
    assert figure(value, digits) == text


def test_no_interval_from_fewer_than_three_values():
    two = mean_ci([0.01, 0.41], bounds=(0.0, 1.0))
    assert two["ci95"] == pytest.approx(2.5412, abs=1e-3)  # t(0.975, 1) = 12.7: past both ends of [0, 1]
    assert two["low"] is None and two["high"] is None
    assert mean_interval_text(two, digits=3) == "0.210"
    assert mean_ci([0.5], bounds=(0.0, 1.0))["low"] is None


def test_intervals_from_three_values_are_clipped_to_the_range_only_where_they_cross_it():
    high = mean_ci([0.98, 1.0, 0.99], bounds=(0.0, 1.0))
    assert high["high"] == 1.0 and high["low"] == pytest.approx(0.99 - high["ci95"]) and high["low"] > 0.9
    inside = mean_ci([0.81, 0.84, 0.79], bounds=(0.0, 1.0))
    assert (inside["low"], inside["high"]) == pytest.approx((inside["mean"] - inside["ci95"],
                                                             inside["mean"] + inside["ci95"]))
    free = mean_ci([-5.0, 0.0, 9.0])  # no range given (a loss): the Student-t interval as it is
    assert free["low"] == pytest.approx(free["mean"] - free["ci95"])
    assert mean_interval_text(high) == "0.9900 [0.9652, 1.000]"


def test_an_interval_needs_a_mean_and_a_width():
    assert interval(None, 0.1, 5) is None and interval(0.5, math.nan, 5) is None and interval(0.5, None, 5) is None
    assert interval(0.5, 0.1, 2) is None and interval(0.5, 0.1, 3) == pytest.approx((0.4, 0.6))
