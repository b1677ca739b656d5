"""The lean Ant-v5 path gives exactly gymnasium's numbers, and flags a MuJoCo instability as non_finite."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.mujoco.ant_v5 import AntEnv

from srghn.sim.envs import Regime
from srghn.sim.episodes import GymRunner, RunnerSpec, make_runner, mujoco_unstable
from srghn.sim.evaluator import make_env, run_episodes
from srghn.sim.fast_mujoco import AntRunner, fast_path_supported
from srghn.sim.profiles import load_profile


@pytest.mark.parametrize("regime", ["nominal", "invert_all", "weak_front_left"])
def test_fast_ant_equals_gymnasium(regime):
    profile = load_profile("ant")
    rng = np.random.default_rng(3)
    # a mix of scales: some ants fall over early (termination), some stand or walk to the time limit
    scale = np.array([0.05, 0.3, 1.0, 3.0], dtype=np.float32)[:, None]
    policies = (scale * rng.standard_normal((4, profile.policy.num_params))).astype(np.float32)
    seeds = rng.integers(0, 2**31 - 1, size=4)
    returns, fitness, steps = run_episodes([make_env(profile) for _ in range(4)], profile, policies, seeds, regime)
    runner = make_runner(RunnerSpec.from_profile(profile))
    assert isinstance(runner, AntRunner)
    got = runner.run(policies, seeds, regime)
    runner.close()
    assert got.failures == {}
    np.testing.assert_array_equal(got.steps, steps)
    np.testing.assert_array_equal(got.returns, returns)
    np.testing.assert_array_equal(got.fitness, fitness)


def test_fast_ant_equals_gymnasium_in_every_kind_of_model_regime():
    """Payload, friction, damping and gains are written into the model at reset: the fast path steps that model."""
    profile = load_profile("ant").with_regime("mixed", Regime(
        gain={"hip_2": 0.4}, payload={"torso": 0.3}, friction={"all": 0.5}, damping={"ankle_3": 3.0}))
    rng = np.random.default_rng(4)
    policies = (0.3 * rng.standard_normal((3, profile.policy.num_params))).astype(np.float32)
    seeds = np.array([7, 8, 9])
    expected = run_episodes([make_env(profile) for _ in range(3)], profile, policies, seeds, "mixed")
    nominal = run_episodes([make_env(profile) for _ in range(3)], profile, policies, seeds, "nominal")
    runner = make_runner(RunnerSpec.from_profile(profile))
    assert isinstance(runner, AntRunner)
    got = runner.run(policies, seeds, "mixed")
    again_nominal = runner.run(policies, seeds, "nominal")  # the same environments, back in nominal
    runner.close()
    np.testing.assert_array_equal(got.returns, expected[0])
    np.testing.assert_array_equal(got.steps, expected[2])
    np.testing.assert_array_equal(again_nominal.returns, nominal[0])
    assert not np.array_equal(got.returns, nominal[0])


def test_only_exact_ant_classes_take_the_fast_path():
    profile = load_profile("ant")
    assert isinstance(make_runner(RunnerSpec.from_profile(profile, fast_path=False)), GymRunner)
    assert isinstance(make_runner(RunnerSpec.from_profile(load_profile("lunarlander"))), GymRunner)
    env = make_env(profile)
    assert fast_path_supported(env) and fast_path_supported(env.env)  # the regime wrapper, or none
    assert not fast_path_supported(gym.wrappers.ClipAction(env))  # a wrapper that changes actions: no


def test_gym_runner_applies_the_regime_wrappers_permutation():
    """GymRunner steps the unwrapped env for speed; the regime's action permutation must still be applied."""
    profile = load_profile("lunarlander")
    rng = np.random.default_rng(2)
    policies = rng.standard_normal((4, profile.policy.num_params)).astype(np.float32)
    seeds = np.array([1, 2, 3, 4])
    runner = make_runner(RunnerSpec.from_profile(profile))
    assert isinstance(runner, GymRunner)
    for regime in ("swapped", "nominal", "swapped"):
        expected = run_episodes([make_env(profile) for _ in range(4)], profile, policies, seeds, regime)
        got = runner.run(policies, seeds, regime)
        np.testing.assert_array_equal(got.returns, expected[0])
        np.testing.assert_array_equal(got.steps, expected[2])
    runner.close()
    nominal = run_episodes([make_env(profile) for _ in range(4)], profile, policies, seeds, "nominal")
    assert not np.array_equal(nominal[0], expected[0])


class _UnstableAntRunner(AntRunner):
    """Blows the simulation up right after every reset (huge velocities)."""

    def _reset(self, i, seed, regime):
        obs = super()._reset(i, seed, regime)
        self.envs[i].unwrapped.data.qvel[:] = 1e30
        return obs


def test_mujoco_instability_is_non_finite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo's default warning handler appends to ./MUJOCO_LOG.TXT in this process
    profile = load_profile("ant")
    runner = _UnstableAntRunner(RunnerSpec.from_profile(profile))
    policies = np.zeros((2, profile.policy.num_params), dtype=np.float32)
    result = runner.run(policies, np.array([1, 2]), "nominal")
    # MuJoCo resets an unstable simulation silently; its warning counters give it away
    assert result.failures == {0: "non_finite", 1: "non_finite"}
    assert np.isnan(result.fitness).all()
    env = runner.envs[0]
    env.unwrapped.reset(seed=0)
    assert not mujoco_unstable(env)
    assert type(env.unwrapped) is AntEnv


def test_ant_results_do_not_depend_on_batching_or_workers():
    """Batch composition (how many episodes step together) and worker count never change an Ant episode."""
    from srghn.sim.evaluator import InProcessEvaluator
    from srghn.sim.workers import LocalEvaluator

    profile = load_profile("ant")
    rng = np.random.default_rng(8)
    policies = rng.standard_normal((6, profile.policy.num_params)).astype(np.float32)  # they fall fast
    seeds = np.array([4, 5])
    whole = InProcessEvaluator(profile).evaluate(policies, seeds, "invert_back_left")
    small = InProcessEvaluator(profile, max_envs=5).evaluate(policies, seeds, "invert_back_left")
    with LocalEvaluator(profile, workers=2, jobs_per_worker=3) as ev:
        local = ev.evaluate(policies, seeds, "invert_back_left")
    for other in (small, local):
        np.testing.assert_array_equal(other.fitness, whole.fitness)
        np.testing.assert_array_equal(other.returns, whole.returns)
        assert other.env_steps == whole.env_steps and other.failures == {}
