"""Means with 95% confidence intervals over seeds, and paired significance tests against a baseline.

The interval to show (``low``, ``high``) follows :func:`facelab.utils.figures.interval`: none from fewer than
3 seeds, and clipped to the metric's range when one is given; ``ci95`` stays the Student-t half-width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from facelab.utils.figures import interval


def mean_ci(values: Sequence[float], *, level: float = 0.95,
            bounds: tuple[float, float] | None = None) -> dict[str, float | None]:
    """Mean, standard deviation, the Student-t confidence interval half-width of ``values`` (``ci95``) and the
    interval to show (``low``, ``high``: clipped to ``bounds``, the metric's range; None from fewer than 3
    values, where the interval says nothing)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = int(v.size)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "ci95": float("nan"), "n": 0, "low": None, "high": None}
    sd = float(v.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)) if n > 1 else float("nan")
    mean = float(v.mean())
    low, high = interval(mean, half, n, bounds=bounds) or (None, None)
    return {"mean": mean, "std": sd, "ci95": half, "n": n, "low": low, "high": high}


def paired_test(values: Sequence[float], baseline: Sequence[float]) -> dict[str, float | bool | None]:
    """Paired t-test (same seeds) of ``values`` against ``baseline``: difference, p-value, significant at 5%.

    With fewer than 2 pairs (or no variance in the differences) no test is possible: p is None.
    """
    a, b = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    diff = float((a - b).mean()) if a.size else float("nan")
    if a.size < 2 or np.allclose(a - b, (a - b)[0]):
        return {"diff": diff, "p_value": None, "significant": False, "pairs": int(a.size)}
    p = float(stats.ttest_rel(a, b).pvalue)
    return {"diff": diff, "p_value": p, "significant": bool(p < 0.05), "pairs": int(a.size)}
