"""The vectorised CartPole path gives exactly gymnasium's numbers."""

from __future__ import annotations

import numpy as np
import pytest
from champion_helpers import cartpole_controller

from srghn.sim.episodes import GymRunner, RunnerSpec, make_runner
from srghn.sim.evaluator import make_env, run_episodes
from srghn.sim.fast_cartpole import CartPoleRunner
from srghn.sim.profiles import load_profile


@pytest.mark.parametrize("regime", ["nominal", "inverted"])
def test_fast_cartpole_equals_gymnasium(regime):
    profile = load_profile("cartpole")
    rng = np.random.default_rng(8)
    # a balancing controller, perturbed a little to a lot: some poles fall at once, some balance to the limit
    scale = np.repeat(np.array([0.0, 0.02, 0.3, 3.0], dtype=np.float32), 10)[:, None]
    gains = (0, 0, 1, 1) if regime == "nominal" else (0, 0, -1, -1)
    policies = (cartpole_controller(gains) + scale * rng.standard_normal((40, profile.policy.num_params)))
    policies = policies.astype(np.float32)
    seeds = rng.integers(0, 2**31 - 1, size=40)
    returns, fitness, steps = run_episodes([make_env(profile) for _ in range(40)], profile, policies, seeds, regime)
    runner = make_runner(RunnerSpec.from_profile(profile))
    assert isinstance(runner, CartPoleRunner)
    got = runner.run(policies, seeds, regime)
    runner.close()
    assert got.failures == {} and steps.max() == 500 and steps.min() < 20
    np.testing.assert_array_equal(got.steps, steps)
    np.testing.assert_array_equal(got.returns, returns)
    np.testing.assert_array_equal(got.fitness, fitness)
    slow = GymRunner(RunnerSpec.from_profile(profile, fast_path=False)).run(policies, seeds, regime)
    np.testing.assert_array_equal(got.obs_stats.m2, slow.obs_stats.m2)  # the same observations, seen in order
