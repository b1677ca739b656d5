"""Switch environments: registration, regimes that really change the dynamics, clear errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from srghn import UnknownRegime
from srghn.sim.envs import ENVS, regimes_of


def test_registered_under_the_srghn_namespace():
    for env_id in ("srghn/CartPoleSwitch-v0", "srghn/LunarLanderSwitch-v0", "srghn/AntSwitch-v0"):
        assert env_id in gym.registry and env_id in ENVS
    env = gym.make("srghn/AntSwitch-v0")
    assert env.observation_space.shape == (27,)  # Ant-v5 without contact forces
    assert env.spec.max_episode_steps == 1000


def test_inverted_cartpole_pushes_the_cart_the_other_way():
    env = gym.make("srghn/CartPoleSwitch-v0")
    velocity = {}
    for regime in ("nominal", "inverted"):
        env.unwrapped.set_regime(regime)
        env.reset(seed=0)
        obs, *_ = env.step(1)  # "push right"
        velocity[regime] = obs[1]
    assert velocity["nominal"] > 0 > velocity["inverted"]


def rollout(env_id, regime, actions, seed=3):
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed, options={"regime": regime})
    trace = [obs]
    for action in actions:
        trace.append(env.step(action)[0])
    return np.array(trace)


def test_swapped_lander_executes_the_mirrored_engine():
    actions = [1, 1, 3, 2, 1, 0, 3, 3]
    mirrored = [{1: 3, 3: 1}.get(a, a) for a in actions]
    swapped = rollout("srghn/LunarLanderSwitch-v0", "swapped", actions)
    np.testing.assert_array_equal(swapped, rollout("srghn/LunarLanderSwitch-v0", "nominal", mirrored))
    assert not np.array_equal(swapped, rollout("srghn/LunarLanderSwitch-v0", "nominal", actions))


def test_ant_faults_transform_the_actuator_commands():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(10, 8)).astype(np.float32)
    inverted = rollout("srghn/AntSwitch-v0", "invert_all", actions)
    np.testing.assert_allclose(inverted, rollout("srghn/AntSwitch-v0", "nominal", -actions), atol=1e-9)
    weak = actions.copy()
    weak[:, 2:4] *= 0.25
    np.testing.assert_allclose(rollout("srghn/AntSwitch-v0", "weak_front_left", actions),
                               rollout("srghn/AntSwitch-v0", "nominal", weak), atol=1e-9)
    assert not np.allclose(inverted, rollout("srghn/AntSwitch-v0", "nominal", actions))


def test_unknown_regime_lists_the_valid_ones():
    env = gym.make("srghn/CartPoleSwitch-v0")
    with pytest.raises(UnknownRegime, match="'upside_down'.*valid regimes: nominal, inverted"):
        env.unwrapped.set_regime("upside_down")
    with pytest.raises(UnknownRegime):
        env.reset(options={"regime": "upside_down"})
    with pytest.raises(UnknownRegime):
        gym.make("srghn/CartPoleSwitch-v0", regime="upside_down")


def test_regime_persists_across_resets_until_changed():
    env = gym.make("srghn/CartPoleSwitch-v0")
    env.reset(seed=0, options={"regime": "inverted"})
    env.reset(seed=1)
    assert env.unwrapped.regime == "inverted"
    assert list(regimes_of("srghn/CartPoleSwitch-v0")) == ["nominal", "inverted"]
