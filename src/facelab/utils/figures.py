"""Figures as people read them: rounded to a few significant digits, and confidence intervals shown only
where they mean something, inside the range of their metric.

What a machine reads (``--json``, summary.json) keeps full precision; these helpers are for HTML reports and
the tables a command prints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: significant digits of a figure in a report or a printed table
DIGITS = 4
#: fewer seeds than this give no interval: from 2 values the 95% Student-t interval is mean ± 12.7 × SE,
#: wider than the range of most metrics, and says nothing about where the mean lies
MIN_N_FOR_INTERVAL = 3
#: the range of a share (accuracy, balanced accuracy, recall, F1, AUROC)
UNIT_RANGE = (0.0, 1.0)


def figure(value: Any, digits: int = DIGITS) -> str:
    """``value`` for people: ``digits`` significant digits (0.9305555 -> "0.9306", 12.3456 -> "12.35", 3e-05),
    whole numbers above that (12345.6 -> "12346"), "-" for an undefined figure (None, NaN); ints and text
    unchanged."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return f"{value:g}"
    if value == 0:
        return f"{0:.{max(digits, 1) - 1}f}"  # 0.000 beside 1.000 and 0.5000
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude < -2:  # a learning rate, a tiny loss: no trailing zeros (0.001, 0.0003, 3e-05, 0.0001235)
        return f"{value:.{max(digits, 1)}g}"
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:.{decimals}f}"


def interval(mean: float | None, half_width: float | None, n: int, *,
             bounds: tuple[float, float] | None = UNIT_RANGE) -> tuple[float, float] | None:
    """The confidence interval to show: ``mean ± half_width`` clipped to ``bounds`` (the metric's range), or
    None where it means nothing (fewer than :data:`MIN_N_FOR_INTERVAL` values, or no mean or width)."""
    if n < MIN_N_FOR_INTERVAL or mean is None or half_width is None:
        return None
    if not (math.isfinite(mean) and math.isfinite(half_width)):
        return None
    low, high = mean - half_width, mean + half_width
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return low, high


def no_interval_reason(n: int) -> str:
    """Why a mean over ``n`` values is shown without an interval."""
    return (f"n={n} seed{'s' * (n != 1)}: interval not shown (a 95% interval needs at least "
            f"{MIN_N_FOR_INTERVAL} seeds to say something)")


def mean_interval_text(stat: Mapping[str, Any], *, digits: int = DIGITS,
                       bounds: tuple[float, float] | None = UNIT_RANGE) -> str:
    """``mean [low, high]`` of a mean/ci95/n record (``facelab.eval.statistics.mean_ci``), the mean alone when
    no interval is shown (see :func:`interval`), "-" when there is no mean."""
    mean = stat.get("mean")
    if mean is None or not math.isfinite(mean):
        return "-"
    shown = interval(mean, stat.get("ci95"), int(stat.get("n") or 0), bounds=bounds)
    if shown is None:
        return figure(mean, digits)
    return f"{figure(mean, digits)} [{figure(shown[0], digits)}, {figure(shown[1], digits)}]"
