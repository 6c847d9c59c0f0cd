"""Seed-level statistics against independent computations: SciPy's t interval and bootstrap, and
a Monte Carlo estimate of a t test's power."""

import numpy as np
import pytest
from scipy import stats

from kdrecon.evaluation.statistics import (
    CONTRADICTED,
    NOT_RESOLVED,
    REPRODUCED,
    detectable_effect,
    hierarchical_bootstrap,
    seed_effect,
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
