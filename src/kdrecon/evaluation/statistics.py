"""Paired significance tests between two reconstructions of the same slices.

The papers compare methods with the Wilcoxon signed-rank test (α = 0.05) on per-slice metrics;
this is SciPy's test (two-sided, zero differences dropped as in Wilcoxon's original test, exact
distribution for small samples, normal approximation otherwise).

Example:
    >>> result = paired_wilcoxon([30.1, 31.2, 29.8, 30.5, 31.0, 30.2], [30.0, 31.0, 29.9, 30.1, 30.6, 30.0])
    >>> round(result["p_value"], 4), result["slices"], result["mean_difference"] > 0
    (0.0625, 6, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def paired_wilcoxon(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> dict[str, float | int | bool]:
    """Wilcoxon signed-rank test of ``a − b`` (paired per slice), with the mean difference."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be 1-D and of equal length, got {a.shape} and {b.shape}")
    difference = a - b
    if not np.any(difference):
        return {"statistic": 0.0, "p_value": 1.0, "slices": len(a), "mean_difference": 0.0, "significant": False}
    result = stats.wilcoxon(a, b)
    p_value = float(result.pvalue)
    return {
        "statistic": float(result.statistic),
        "p_value": p_value,
        "slices": len(a),
        "mean_difference": float(difference.mean()),
        "significant": p_value < alpha,
    }
