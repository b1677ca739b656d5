"""Regime identification: transitions replayed in each regime's simulator point at the regime they came from."""

from __future__ import annotations

import numpy as np
import pytest

from srghn.sim.evaluator import make_env
from srghn.sim.identify import identifiable, identify, prediction_errors
from srghn.sim.profiles import load_profile


def transitions(robot: str, regime: str, n: int = 48, seed: int = 0) -> tuple[np.ndarray, ...]:
    """What a robot in ``regime`` would report: float32 observations, the actions sent, the next observations."""
    profile = load_profile(robot)
    env = make_env(profile)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed, options={"regime": regime})
    rows = []
    for _ in range(n):
        action = (np.array([rng.integers(profile.policy.act_dim)], np.float32) if profile.policy.discrete
                  else rng.uniform(-1, 1, profile.policy.act_dim).astype(np.float32))
        nxt, _, terminated, truncated, _ = env.step(int(action[0]) if profile.policy.discrete else action)
        rows.append((np.float32(obs), action, np.float32(nxt)))
        obs = env.reset()[0] if terminated or truncated else nxt
    env.close()
    return tuple(np.stack(column) for column in zip(*rows, strict=True))


@pytest.mark.parametrize(("robot", "regime"), [("cartpole", "inverted"), ("cartpole", "nominal"),
                                               ("ant", "invert_front_left"), ("ant", "weak_back_left")])
def test_the_regime_that_produced_the_transitions_predicts_them_best(robot: str, regime: str) -> None:
    profile = load_profile(robot)
    obs, actions, next_obs = transitions(robot, regime)
    errors = prediction_errors(profile, obs, actions, next_obs)
    assert set(errors) == set(profile.regimes)
    others = [e for name, e in errors.items() if name != regime]
    assert errors[regime] < 1e-9 < min(others) and errors[regime] < 1e-3 * min(others)
    found, _ = identify(profile, obs, actions, next_obs, current="nominal" if regime != "nominal" else
                        profile.regimes[1])
    assert found == regime
    assert identify(profile, obs, actions, next_obs, current=regime)[0] is None  # nothing changed


def test_lunarlander_is_not_identifiable() -> None:
    profile = load_profile("lunarlander")
    assert not identifiable(profile) and identifiable(load_profile("ant"))
    with pytest.raises(ValueError, match="cannot be identified"):
        prediction_errors(profile, np.zeros((1, 8)), np.zeros((1, 1)), np.zeros((1, 8)))
