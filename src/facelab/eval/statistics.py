"""Means with 95% confidence intervals over seeds, and paired significance tests against a baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean_ci(values: Sequence[float], *, level: float = 0.95) -> dict[str, float]:
    """Mean, standard deviation and the Student-t confidence interval half-width of ``values``."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = int(v.size)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "ci95": float("nan"), "n": 0}
    sd = float(v.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(v.mean()), "std": sd, "ci95": half, "n": n}


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
