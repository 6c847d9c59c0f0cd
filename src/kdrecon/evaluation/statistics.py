"""Statistics for comparing trained networks: within one run, and across training replicates.

Two questions, two tools:

* **Do two networks differ on these slices?** :func:`paired_wilcoxon`, the papers' test
  (Wilcoxon signed-rank, α = 0.05, on per-slice metrics of one training run each). It says
  nothing about training variance: retraining with another seed can flip its sign.
* **Would the difference survive retraining?** :func:`seed_effect` takes the per-volume metric
  of both networks for each seed, forms the paired difference ``d[s, v] = B[s, v] − A[s, v]``
  (seed ``s``, volume ``v``), and reports

  - the mean over seeds of the seed-level means ``m_s = mean_v d[s, v]``, with the t interval
    ``mean(m) ± t(0.975, n−1) · sd(m) / √n`` over the ``n`` seeds (training variance is the
    unit of replication; volumes are nested inside seeds);
  - a hierarchical bootstrap interval as a second view: resample seeds with replacement, then
    volumes with replacement inside each drawn seed, take the mean; 2.5 and 97.5 percentiles;
  - the smallest effect the design could detect: the effect δ at which the two-sided t test at
    α = 0.05 over ``n`` seeds has power 0.8, with the seeds' observed spread ``sd(m)``: the
    non-centrality ``δ √n / sd(m)`` of the non-central t distribution solved for that power.

  With one seed none of the seed-level quantities exist; the bootstrap then resamples volumes
  only, and the result says that training variance is not covered. Seeds with equal means (no
  spread: deterministic training, or stages copied between seeds) give a zero-width interval that
  estimates no training variance either, and no detectable effect.

:func:`verdict` turns an interval into *reproduced* / *contradicted* / *not resolved*;
:func:`seed_verdict` does so for a :class:`SeedEffect`, *not resolved* with a reason
(:func:`unresolved_reason`) when its seeds cannot cover training variance. A verdict is about the
direction of an effect; :func:`position_in_interval` says whether a published effect's size lies
inside the interval too (a claim can be *not resolved* and still exclude the published size).

Example:
    >>> result = paired_wilcoxon([30.1, 31.2, 29.8, 30.5, 31.0, 30.2], [30.0, 31.0, 29.9, 30.1, 30.6, 30.0])
    >>> round(result["p_value"], 4), result["slices"], result["zero_differences"], result["mean_difference"] > 0
    (0.0625, 6, 0, True)
    >>> effect = seed_effect([[1.0, 2.0], [2.0, 3.0], [3.0, 4.0]], [[1.5, 2.5], [2.1, 3.1], [3.6, 4.6]])
    >>> round(effect.mean, 3), effect.seeds, [round(x, 3) for x in effect.interval]
    (0.4, 3, [-0.257, 1.057])
    >>> verdict(effect.interval, expected_sign=1)
    'not resolved'
    >>> position_in_interval(1.2, effect.interval)
    'above'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
NOT_RESOLVED = "not resolved"
#: Where a value lies against an interval (:func:`position_in_interval`).
INSIDE, ABOVE, BELOW = "inside", "above", "below"
#: Why a :class:`SeedEffect` cannot resolve a claim, whatever its mean.
SEED_VARIANCE_NOT_COVERED = "1 seed: training variance not covered"
NO_SPREAD_BETWEEN_SEEDS = "no spread between seeds: training variance not estimated"
CONFIDENCE = 0.95
POWER = 0.80


def paired_wilcoxon(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> dict[str, float | int | bool]:
    """Wilcoxon signed-rank test of ``a − b`` (paired per slice), with the mean difference.

    SciPy's test: two-sided, zero differences dropped as in Wilcoxon's original test, exact
    distribution for small samples, normal approximation otherwise. ``slices`` counts the pairs
    the test used, ``zero_differences`` those it dropped; the mean difference is over all pairs.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be 1-D and of equal length, got {a.shape} and {b.shape}")
    difference = a - b
    used = int(np.count_nonzero(difference))
    counts = {"slices": used, "zero_differences": len(a) - used}
    if not used:
        return {"statistic": 0.0, "p_value": 1.0, **counts, "mean_difference": 0.0, "significant": False}
    result = stats.wilcoxon(a, b)
    p_value = float(result.pvalue)
    return {
        "statistic": float(result.statistic),
        "p_value": p_value,
        **counts,
        "mean_difference": float(difference.mean()),
        "significant": p_value < alpha,
    }


@dataclass(frozen=True)
class SeedEffect:
    """The effect ``other − baseline`` over seeds (:func:`seed_effect`); ``interval`` and ``detectable``
    are None with one seed, ``detectable`` also when the seeds show no spread."""

    mean: float
    seeds: int
    volumes: int
    per_seed: tuple[float, ...]
    interval: tuple[float, float] | None
    bootstrap_interval: tuple[float, float]
    detectable: float | None

    @property
    def covers_training_variance(self) -> bool:
        return self.interval is not None

    @property
    def spread_between_seeds(self) -> bool:
        """Whether the seeds' means differ: a t interval from equal ones has zero width and means nothing."""
        return has_spread(self.per_seed)


#: Seed means closer than this (relative to their size) are equal: far below any training variance,
#: far above the rounding of a mean of float64 differences.
SPREAD_TOLERANCE = 1e-9


def has_spread(per_seed: Sequence[float]) -> bool:
    """Whether the seeds' mean effects differ by more than rounding (:data:`SPREAD_TOLERANCE`)."""
    values = np.asarray(per_seed, dtype=np.float64)
    return values.size > 1 and np.ptp(values) > SPREAD_TOLERANCE * max(1.0, float(np.abs(values).max()))


def seed_effect(
    baseline: Sequence[Sequence[float]], other: Sequence[Sequence[float]], resamples: int = 10000, seed: int = 0
) -> SeedEffect:
    """The effect ``other − baseline`` of per-volume metrics ``baseline[s][v]``, ``other[s][v]`` (seed s,
    volume v): positive when ``other`` scores higher."""
    baseline, other = np.asarray(baseline, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if baseline.shape != other.shape or baseline.ndim != 2 or baseline.size == 0:
        raise ValueError(f"expected equal (seeds, volumes) arrays, got {baseline.shape} and {other.shape}")
    difference = other - baseline
    per_seed = difference.mean(axis=1)
    n = len(per_seed)
    interval = detectable = None
    if n > 1:
        standard_error = per_seed.std(ddof=1) / math.sqrt(n)
        critical = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)
        interval = (per_seed.mean() - critical * standard_error, per_seed.mean() + critical * standard_error)
        # Equal seed means leave the t test undefined (its statistic divides by a zero spread; the
        # rounding of the mean may make that spread a tiny nonzero one): no detectable effect.
        detectable = detectable_effect(n) * standard_error if has_spread(per_seed) else None
    return SeedEffect(
        mean=float(per_seed.mean()),
        seeds=n,
        volumes=difference.shape[1],
        per_seed=tuple(float(x) for x in per_seed),
        interval=None if interval is None else (float(interval[0]), float(interval[1])),
        bootstrap_interval=hierarchical_bootstrap(difference, resamples, seed),
        detectable=None if detectable is None else float(detectable),
    )


def detectable_effect(seeds: int, power: float = POWER) -> float:
    """The effect, in standard errors, that a two-sided t test over ``seeds`` detects with ``power``."""
    if seeds < 2:
        raise ValueError("a t test needs at least 2 seeds")
    freedom = seeds - 1
    critical = stats.t.ppf(0.5 + CONFIDENCE / 2, freedom)

    def shortfall(noncentrality: float) -> float:
        # The lower tail vanishes for large non-centralities (SciPy then returns NaN for it).
        lower = np.nan_to_num(stats.nct.cdf(-critical, freedom, noncentrality))
        return stats.nct.sf(critical, freedom, noncentrality) + lower - power

    # The normal-theory value (t(0.975) + t(power)) brackets the root from below; twice it from above.
    guess = critical + stats.t.ppf(power, freedom)
    return float(optimize.brentq(shortfall, 0.0, 2 * guess))


def hierarchical_bootstrap(difference: np.ndarray, resamples: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``difference[s, v]``, resampling seeds, then volumes within each."""
    difference = np.asarray(difference, dtype=np.float64)
    seeds, volumes = difference.shape
    generator = np.random.default_rng(seed)
    drawn_seeds = generator.integers(0, seeds, size=(resamples, seeds, 1))
    drawn_volumes = generator.integers(0, volumes, size=(resamples, seeds, volumes))
    means = difference[drawn_seeds, drawn_volumes].mean(axis=(1, 2))
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def unresolved_reason(effect: SeedEffect) -> str | None:
    """Why ``effect`` cannot resolve a claim whatever its interval, or None when it can."""
    if not effect.covers_training_variance:
        return SEED_VARIANCE_NOT_COVERED
    return None if effect.spread_between_seeds else NO_SPREAD_BETWEEN_SEEDS


def seed_verdict(effect: SeedEffect, expected_sign: int) -> str:
    """:func:`verdict` on ``effect``'s t interval; *not resolved* when :func:`unresolved_reason` gives a reason."""
    result = verdict(effect.interval, expected_sign)
    return NOT_RESOLVED if unresolved_reason(effect) else result


def verdict(interval: tuple[float, float] | None, expected_sign: int) -> str:
    """*reproduced* when ``interval`` excludes 0 on the side of ``expected_sign`` (+1 or −1),
    *contradicted* when it excludes 0 on the other side, *not resolved* when it holds 0 or is None."""
    if expected_sign not in (1, -1):
        raise ValueError(f"expected_sign must be +1 or -1, got {expected_sign}")
    if interval is None:
        return NOT_RESOLVED
    low, high = interval
    if low > 0 or high < 0:
        return REPRODUCED if (low > 0) == (expected_sign > 0) else CONTRADICTED
    return NOT_RESOLVED


def position_in_interval(value: float, interval: tuple[float, float]) -> str:
    """*inside* when ``low ≤ value ≤ high``, else *above* or *below* the interval.

    Example: an interval over seeds of [−0.15, +0.14] dB holds 0 (the direction is not resolved)
    but excludes a published +0.27 dB:

    >>> position_in_interval(0.27, (-0.15, 0.14)), position_in_interval(0.0, (-0.15, 0.14))
    ('above', 'inside')
    """
    low, high = interval
    if low > high:
        raise ValueError(f"not an interval: low {low} > high {high}")
    return ABOVE if value > high else BELOW if value < low else INSIDE
