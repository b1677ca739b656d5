"""Interval statistics on hand-made data, checked against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from srghn.sim.stats import improvement_interval, iqm, iqm_interval, probability_lower


def direct_bootstrap(samples, statistic, resamples=20_000, seed=1):
    """A plain percentile bootstrap written out with numpy: each sample resampled with replacement on its own."""
    rng = np.random.default_rng(seed)
    values = [statistic(*(s[rng.integers(0, len(s), len(s))] for s in samples)) for _ in range(resamples)]
    return np.percentile(values, [2.5, 97.5])


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm([1, 2, 3, 4, 100, 200, 5, 6]) == pytest.approx(np.mean([3, 4, 5, 6]))
    assert iqm([7, 7, 7, 7]) == 7


def test_iqm_interval_matches_a_direct_bootstrap():
    x = np.array([12, 8, 30, 9, 11, 14, 10, 50, 13, 9, 8, 16, 10, 21, 7, 12, 11, 9, 40, 10], dtype=float)
    got = iqm_interval(x)
    want = direct_bootstrap([x], lambda s: iqm(s))
    assert got["iqm"] == pytest.approx(iqm(x)) and got["n"] == 20
    np.testing.assert_allclose(got["ci"], want, atol=0.6)  # Monte Carlo error of two independent bootstraps
    assert got["ci"][0] <= got["iqm"] <= got["ci"][1]
    assert iqm_interval(x) == got  # seeded: the same runs give the same interval
    assert iqm_interval([5, 5, 5])["ci"] == [5.0, 5.0]  # degenerate data, degenerate interval


def test_probability_of_improvement_matches_direct_counts_and_bootstrap():
    faster, slower = np.array([5, 6, 7, 8, 9, 30.0]), np.array([7, 9, 10, 12, 15, 30.0])
    # pairs (x, y) with x < y, plus half of the ties: counted by hand
    by_hand = sum((a < b) + 0.5 * (a == b) for a in faster for b in slower) / 36
    assert probability_lower(faster, slower) == pytest.approx(by_hand)
    assert probability_lower(slower, faster) == pytest.approx(1 - by_hand)
    got = improvement_interval(faster, slower)
    want = direct_bootstrap([faster, slower], probability_lower)
    np.testing.assert_allclose(got["ci"], want, atol=0.03)
    apart = improvement_interval(np.arange(10.0), np.arange(20.0, 30.0))
    assert apart["p"] == 1.0 and apart["ci"] == [1.0, 1.0]
