"""A regime defined at run time (one the parametric twin identified) runs on every evaluator backend: the profile
extended with it builds the workers' environments, local processes and Ray actors alike (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from srghn.sim.backends import make_evaluator
from srghn.sim.envs import Regime
from srghn.sim.evaluator import InProcessEvaluator
from srghn.sim.profiles import load_profile

CARTPOLE = load_profile("cartpole").with_regime("identified-flip", Regime(permutation=(1, 0)))
ANT = load_profile("ant").with_regime("identified-weak", Regime(gain={"hip_1": 0.4, "ankle_1": 0.4}))


def batch(profile, n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, profile.policy.num_params)) * 0.5).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_regime_added_at_run_time_is_evaluated_by_the_backend(backend: str) -> None:
    if backend == "ray":
        pytest.importorskip("ray", reason="the Ray backend needs the [ray] extra (part of [dev])")
    policies, seeds = batch(CARTPOLE, 6, 1), np.array([3, 4])
    ant_policies, ant_seeds = batch(ANT, 2, 2) * 0.1, np.array([9])
    with make_evaluator(CARTPOLE, backend, workers=2) as ev:
        flipped, inverted = ev.evaluate(policies, seeds, "identified-flip"), ev.evaluate(policies, seeds, "inverted")
    np.testing.assert_array_equal(flipped.fitness, inverted.fitness)  # the same permutation as the declared one
    with make_evaluator(ANT, backend, workers=1) as ev:
        weak = ev.evaluate(ant_policies, ant_seeds, "identified-weak")
    reference = InProcessEvaluator(ANT)
    try:
        want = reference.evaluate(ant_policies, ant_seeds, "identified-weak")
        nominal = reference.evaluate(ant_policies, ant_seeds, "nominal")
    finally:
        reference.close()
    np.testing.assert_array_equal(weak.fitness, want.fitness)
    assert not np.array_equal(weak.fitness, nominal.fitness) and weak.failures == {}
