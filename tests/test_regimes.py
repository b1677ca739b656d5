"""The regime wrapper: nominal is the plain environment bit for bit, every kind of regime really changes the
dynamics, going back restores the model exactly, and bad declarations are errors naming the field."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from srghn import ConfigError, UnknownRegime
from srghn.sim.envs import NOMINAL, Regime, RegimeWrapper
from srghn.sim.evaluator import make_env
from srghn.sim.profiles import load_profile

PLAIN = {"cartpole": ("CartPole-v1", {}), "lunarlander": ("LunarLander-v3", {}),
         "ant": ("Ant-v5", {"include_cfrc_ext_in_observation": False})}


def actions_for(env: gym.Env, n: int, seed: int = 0) -> list:
    env.action_space.seed(seed)
    return [env.action_space.sample() for _ in range(n)]


def trace(env: gym.Env, actions: list, seed: int = 3, options: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Observations and rewards of a rollout (resetting where an episode ends)."""
    obs, _ = env.reset(seed=seed, options=options)
    observations, rewards = [obs], []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            observations.append(env.reset()[0])
    return np.array(observations), np.array(rewards)


@pytest.mark.parametrize("robot", ["cartpole", "lunarlander", "ant"])
def test_nominal_is_the_plain_environment_bit_for_bit(robot: str) -> None:
    env_id, kwargs = PLAIN[robot]
    plain = gym.make(env_id, **kwargs)
    actions = actions_for(plain, 300)
    expected = trace(plain, actions)
    wrapped = make_env(load_profile(robot))
    assert isinstance(wrapped, RegimeWrapper) and wrapped.regime == NOMINAL
    for got in (trace(wrapped, actions), trace(wrapped, actions, options={"regime": NOMINAL})):
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


def test_nominal_after_other_regimes_restores_every_model_array() -> None:
    profile = load_profile("ant").with_regime("everything", Regime(
        gain={"all": 0.5, "hip_1": -1.0}, payload={"torso": 0.7}, friction={"floor": 0.3}, damping={"all": 2.0}))
    env = make_env(profile)
    fresh = gym.make("Ant-v5", include_cfrc_ext_in_observation=False).unwrapped.model
    model = env.unwrapped.model
    arrays = [name for name in dir(fresh) if not name.startswith("_")
              and isinstance(getattr(fresh, name, None), np.ndarray)]
    for regime in ("everything", "weak_back_left", "everything"):
        env.reset(seed=0, options={"regime": regime})
    assert not np.array_equal(model.body_subtreemass, fresh.body_subtreemass)  # the payload's constants followed
    env.reset(seed=0, options={"regime": NOMINAL})
    changed = [name for name in arrays if not np.array_equal(getattr(model, name), getattr(fresh, name))]
    assert changed == []


def test_cartpole_inverted_pushes_the_other_way_and_lander_swaps_its_engines() -> None:
    env = make_env(load_profile("cartpole"))
    velocity = {}
    for regime in ("nominal", "inverted"):
        env.reset(seed=0, options={"regime": regime})
        velocity[regime] = env.step(1)[0][1]  # "push right"
    assert velocity["nominal"] > 0 > velocity["inverted"]
    lander = make_env(load_profile("lunarlander"))
    actions = [1, 1, 3, 2, 1, 0, 3, 3]
    mirrored = [{1: 3, 3: 1}.get(a, a) for a in actions]
    swapped = trace(lander, actions, options={"regime": "swapped"})[0]
    np.testing.assert_array_equal(swapped, trace(lander, mirrored, options={"regime": "nominal"})[0])
    assert not np.array_equal(swapped, trace(lander, actions, options={"regime": "nominal"})[0])


def test_ant_gains_act_on_the_actuators() -> None:
    env = make_env(load_profile("ant"))
    actions = np.random.default_rng(0).uniform(-1, 1, size=(10, 8)).astype(np.float32)
    inverted = trace(env, actions, options={"regime": "invert_all"})[0]
    np.testing.assert_allclose(inverted, trace(env, -actions, options={"regime": "nominal"})[0], atol=1e-9)
    weak = actions.copy()
    weak[:, 2:4] *= 0.25  # front_left = hip_1, ankle_1 = actions 2 and 3
    np.testing.assert_allclose(trace(env, actions, options={"regime": "weak_front_left"})[0],
                               trace(env, weak, options={"regime": "nominal"})[0], atol=1e-9)
    assert not np.allclose(inverted, trace(env, actions, options={"regime": "nominal"})[0])
    # the control cost is charged on the policy's own action, whatever torque the fault turns it into
    _, rewards_weak = trace(env, actions[:1], options={"regime": "weak_front_left"})
    _, rewards_nominal = trace(env, weak[:1], options={"regime": "nominal"})
    assert rewards_weak[0] != rewards_nominal[0]


@pytest.mark.parametrize("regime", [Regime(payload={"torso": 0.5}), Regime(friction={"all": 0.1}),
                                    Regime(damping={"all": 20.0}), Regime(gain={"ankle_2": 0.0})])
def test_every_kind_of_model_change_changes_the_dynamics(regime: Regime) -> None:
    env = make_env(load_profile("ant").with_regime("fault", regime))
    actions = np.random.default_rng(1).uniform(-1, 1, size=(30, 8)).astype(np.float32)
    faulty = trace(env, actions, options={"regime": "fault"})[0]
    nominal = trace(env, actions, options={"regime": "nominal"})[0]
    assert np.abs(faulty - nominal).max() > 1e-3


def test_a_fault_can_strike_in_the_middle_of_an_episode_and_persists_across_resets() -> None:
    env = make_env(load_profile("cartpole"))
    env.reset(seed=0)
    env.step(1)
    env.set_regime("inverted")  # what the simulated robot's --fault does at --fault-at
    before = env.unwrapped.state[1]
    env.step(1)
    assert env.unwrapped.state[1] < before
    env.reset(seed=1)
    assert env.regime == "inverted"


def test_unknown_regimes_and_bad_declarations_are_clear_errors() -> None:
    env = make_env(load_profile("cartpole"))
    with pytest.raises(UnknownRegime, match="'upside_down'.*valid regimes: nominal, inverted"):
        env.set_regime("upside_down")
    with pytest.raises(UnknownRegime):
        env.reset(options={"regime": "upside_down"})
    with pytest.raises(ConfigError, match="not a MuJoCo environment"):
        make_env(load_profile("cartpole").with_regime("heavy", Regime(payload={"pole": 1.0})))
    with pytest.raises(ConfigError, match=r"regimes\.limp\.gain\.knee.*no actuator 'knee'.*known: hip_4, ankle_4"):
        make_env(load_profile("ant").with_regime("limp", Regime(gain={"knee": 0.5})))
    with pytest.raises(ConfigError, match=r"regimes\.heavy\.payload\.world"):
        make_env(load_profile("ant").with_regime("heavy", Regime(payload={"world": 1.0})))
    with pytest.raises(ConfigError, match="permutation"):
        RegimeWrapper(gym.make("CartPole-v1"), {NOMINAL: Regime(), "odd": Regime(permutation=(2, 0, 1))})


def test_regimes_round_trip_through_json() -> None:
    profile = load_profile("ant")
    for name in profile.regimes:
        assert Regime.from_dict(profile.regime(name).to_dict()) == profile.regime(name)
