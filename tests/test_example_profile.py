"""The bring-your-own-robot example of docs/profiles.md: HalfCheetah-v5 with declared faults loads, evaluates in
every regime, each fault really changes the dynamics, and the twin recognises its faults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_identify import transitions

from srghn.sim.envs import Regime
from srghn.sim.evaluator import InProcessEvaluator, make_env
from srghn.sim.identify import identify
from srghn.sim.profiles import load_profile

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "halfcheetah.toml"


@pytest.fixture(scope="module")
def cheetah():
    return load_profile(EXAMPLE)


def test_example_loads_and_evaluates_in_every_regime(cheetah) -> None:
    assert cheetah.env_id == "HalfCheetah-v5" and cheetah.policy.obs_dim == 17 and cheetah.policy.act_dim == 6
    assert cheetah.regimes == ("nominal", "weak_back_leg", "reversed_front_thigh", "payload", "icy", "stiff")
    rng = np.random.default_rng(0)
    policies = (0.3 * rng.standard_normal((2, cheetah.policy.num_params))).astype(np.float32)
    evaluator = InProcessEvaluator(cheetah)
    try:
        results = {r: evaluator.evaluate(policies, np.array([1, 2]), r) for r in cheetah.regimes}
    finally:
        evaluator.close()
    for regime, result in results.items():
        assert result.failures == {} and np.isfinite(result.fitness).all(), regime
        assert result.env_steps == 2 * 2 * 1000  # HalfCheetah never terminates: every episode runs its 1000 steps
    assert len({tuple(r.fitness) for r in results.values()}) == len(results)  # every regime scores differently


def test_each_fault_changes_the_dynamics(cheetah) -> None:
    env = make_env(cheetah)
    actions = np.random.default_rng(3).uniform(-1, 1, size=(40, 6)).astype(np.float32)

    def rollout(regime: str) -> np.ndarray:
        obs, _ = env.reset(seed=4, options={"regime": regime})
        return np.array([obs] + [env.step(a)[0] for a in actions])

    nominal = rollout("nominal")
    np.testing.assert_array_equal(rollout("nominal"), nominal)
    for regime in cheetah.regimes[1:]:
        assert np.abs(rollout(regime) - nominal).max() > 1e-2, regime


@pytest.mark.parametrize("regime", ["weak_back_leg", "payload", "icy"])
def test_the_twin_recognises_the_examples_faults(cheetah, regime: str) -> None:
    found = identify(cheetah, *transitions(cheetah, regime, n=100, seed=1), current="nominal")
    assert found.regime == regime and found.known


def test_the_twin_fits_an_undeclared_fault_of_the_example(cheetah) -> None:
    robot = cheetah.with_regime("hidden", Regime(gain={"bshin": 0.5}, payload={"torso": 2.0}))
    found = identify(cheetah, *transitions(robot, "hidden", n=200, seed=3), current="nominal")
    assert not found.known
    assert abs(found.params["gain.bshin"] - 0.5) <= 0.1 and abs(found.params["payload.torso"] - 2.0) <= 0.5
    assert set(found.definition.gain) == {"bshin"} and set(found.definition.payload) == {"torso"}
