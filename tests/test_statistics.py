"""Seed-level statistics against independent computations: SciPy's t interval and bootstrap, and
a Monte Carlo estimate of a t test's power."""

import numpy as np
import pytest
from scipy import stats

from kdrecon.evaluation.statistics import (
    CONTRADICTED,
    NO_SPREAD_BETWEEN_SEEDS,
    NOT_RESOLVED,
    REPRODUCED,
    SEED_VARIANCE_NOT_COVERED,
    detectable_effect,
    hierarchical_bootstrap,
    paired_wilcoxon,
    position_in_interval,
    seed_effect,
    seed_verdict,
    unresolved_reason,
    verdict,
)


def per_volume(seeds=3, volumes=10, seed=0):
    generator = np.random.default_rng(seed)
    # a seed-level offset (training variance) plus volume-to-volume variation
    return generator.normal(30, 0.1, (seeds, 1)) + generator.normal(0, 1.0, (seeds, volumes))


def test_t_interval_over_seed_means_equals_scipys():
    a = per_volume()
    b = a + np.array([[0.20], [0.05], [0.31]]) + np.random.default_rng(1).normal(0, 0.02, a.shape)
    effect = seed_effect(a, b)
    means = (b - a).mean(axis=1)
    expected = stats.t.interval(0.95, len(means) - 1, loc=means.mean(), scale=stats.sem(means))
    assert effect.interval == pytest.approx(expected, abs=1e-12)
    assert effect.per_seed == pytest.approx(tuple(means)) and effect.seeds == 3 and effect.volumes == 10


@pytest.mark.parametrize(("margin", "expected"), [(0.3, REPRODUCED), (-0.3, CONTRADICTED), (0.0, NOT_RESOLVED)])
def test_known_margin_in_every_seed_gives_the_verdict(margin, expected):
    a = per_volume()
    # independent zero-mean noise per seed and volume: with no margin the interval must straddle 0
    noise = np.random.default_rng(2).normal(0, 0.02, a.shape)
    effect = seed_effect(a, a + margin + noise)
    assert verdict(effect.interval, expected_sign=1) == expected
    assert verdict(effect.bootstrap_interval, expected_sign=1) == expected


def test_one_seed_does_not_cover_training_variance():
    a = per_volume(seeds=1)
    effect = seed_effect(a, a + 1.0)
    assert effect.interval is None and effect.detectable is None and not effect.covers_training_variance
    assert verdict(effect.interval, 1) == NOT_RESOLVED
    assert seed_verdict(effect, 1) == NOT_RESOLVED and unresolved_reason(effect) == SEED_VARIANCE_NOT_COVERED


def test_seeds_with_equal_means_do_not_resolve_a_claim():
    # Identical per-seed effects (deterministic training, copied stages): the t interval mean ± t·0
    # has zero width and excludes 0, but the seeds estimate no training variance.
    effect = seed_effect([[30.0, 30.0], [30.0, 30.0]], [[30.1, 30.1], [30.1, 30.1]])
    assert effect.interval == pytest.approx((0.1, 0.1)) and verdict(effect.interval, 1) == REPRODUCED
    assert effect.detectable is None  # a t test over seeds without spread is undefined
    assert seed_verdict(effect, 1) == NOT_RESOLVED and unresolved_reason(effect) == NO_SPREAD_BETWEEN_SEEDS
    # Volumes that differ, seeds whose means do not: the same.
    # Values about 32 dB, where the seeds' means of +0.3 round apart in the last bits (0.30000000000000071
    # against 0.29999999999999982): still equal.
    a = np.random.default_rng(0).normal(32, 1, (3, 4))
    flat = seed_effect(a, a + np.array([0.1, 0.5, 0.2, 0.4]))  # +0.3 on average in every seed
    assert len(set(flat.per_seed)) > 1 and flat.detectable is None
    assert seed_verdict(flat, 1) == NOT_RESOLVED and unresolved_reason(flat) == NO_SPREAD_BETWEEN_SEEDS


def test_seeds_with_spread_get_the_verdict_of_scipys_interval():
    a = per_volume()
    b = a + np.array([[0.30], [0.25], [0.35]])
    means = (b - a).mean(axis=1)
    expected = verdict(stats.t.interval(0.95, 2, loc=means.mean(), scale=stats.sem(means)), 1)
    effect = seed_effect(a, b)
    assert expected == REPRODUCED and seed_verdict(effect, 1) == expected and unresolved_reason(effect) is None
    assert seed_verdict(effect, -1) == CONTRADICTED


def test_wilcoxon_counts_the_slices_scipy_tests_not_the_zero_differences_it_drops():
    generator = np.random.default_rng(8)
    a = generator.normal(30, 1, 12)
    b = a + generator.normal(0.2, 0.3, 12)
    b[[1, 5, 9]] = a[[1, 5, 9]]  # three slices where both networks score the same
    result = paired_wilcoxon(a, b)
    assert result["slices"] == 9 and result["zero_differences"] == 3
    nonzero = (a - b)[a != b]
    assert result["p_value"] == pytest.approx(stats.wilcoxon(nonzero).pvalue, rel=1e-12)  # the 9 it used
    assert result["mean_difference"] == pytest.approx(np.mean(a - b))  # over all 12 pairs
    same = paired_wilcoxon(a, a)
    assert (same["slices"], same["zero_differences"], same["p_value"]) == (0, 12, 1.0)


def test_bootstrap_with_one_seed_is_scipys_volume_bootstrap():
    difference = np.random.default_rng(3).normal(0.2, 0.5, (1, 40))
    ours = hierarchical_bootstrap(difference, resamples=40000, seed=4)
    reference = stats.bootstrap((difference[0],), np.mean, n_resamples=40000, method="percentile",
                                rng=np.random.default_rng(5)).confidence_interval
    assert ours == pytest.approx((reference.low, reference.high), abs=0.01)


def test_bootstrap_widens_with_the_spread_between_seeds():
    within = np.random.default_rng(6).normal(0, 0.1, (3, 10))
    shifted = within + np.array([[-0.5], [0.0], [0.5]])
    narrow, wide = hierarchical_bootstrap(within), hierarchical_bootstrap(shifted)
    assert wide[1] - wide[0] > 5 * (narrow[1] - narrow[0])


@pytest.mark.parametrize("seeds", [3, 5])
def test_detectable_effect_has_the_stated_power_by_simulation(seeds):
    generator = np.random.default_rng(7)
    effect = detectable_effect(seeds)  # in standard errors of the mean over seeds
    samples = generator.normal(effect / np.sqrt(seeds), 1.0, (40000, seeds))  # unit sd, so se = 1/sqrt(n)
    p_values = stats.ttest_1samp(samples, 0.0, axis=1).pvalue
    assert np.mean(p_values < 0.05) == pytest.approx(0.8, abs=0.01)


def test_a_published_effect_on_the_interval_ends_is_inside_it():
    assert [position_in_interval(v, (-0.15, 0.14)) for v in (-0.15, 0.14, 0.1401, -0.1501)] == [
        "inside", "inside", "above", "below"]
    with pytest.raises(ValueError, match="not an interval"):
        position_in_interval(0.0, (0.2, 0.1))
