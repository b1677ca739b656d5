"""Observation normalization: exact statistics, the same normalizer for every individual, and profile switches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from srghn import ConfigError
from srghn.controller.normalizer import EpisodeStats, NormConfig, ObsNorm, RunningStats
from srghn.sim.evaluator import InProcessEvaluator, make_env, play_episodes
from srghn.sim.profiles import load_profile, parse_profile
from srghn.sim.workers import LocalEvaluator


def test_running_statistics_equal_numpy_on_the_same_observations():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(loc=3.0, scale=s, size=(n, 5)) for n, s in ((1, 1.0), (40, 0.01), (7, 10.0), (300, 2.0))]
    episodes = EpisodeStats(len(chunks), 5)
    for i, chunk in enumerate(chunks):
        for row in chunk:  # one observation at a time, as episodes see them
            episodes.add(np.array([i]), row[None])
    stats = RunningStats.empty(5).merge_episodes(episodes, skip={2})
    kept = np.concatenate([c for i, c in enumerate(chunks) if i != 2])
    assert stats.count == len(kept)
    np.testing.assert_allclose(stats.mean, kept.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.var, kept.var(axis=0), rtol=1e-10)
    # merging in two halves gives the same as one pass
    halves = RunningStats.empty(5).merge(len(kept[:100]), kept[:100].mean(0), kept[:100].var(0) * 100)
    halves = halves.merge(len(kept[100:]), kept[100:].mean(0), kept[100:].var(0) * len(kept[100:]))
    np.testing.assert_allclose(halves.var, kept.var(axis=0), rtol=1e-10)


def test_normalizer_floors_std_clips_and_starts_as_identity():
    config = NormConfig(normalize=True, clip=2.0, std_floor=0.5)
    assert np.array_equal(RunningStats.empty(3).normalizer(config).std, np.ones(3))
    stats = RunningStats(4, np.array([1.0, 0.0]), np.array([0.0, 16.0]))  # var 0 and 4
    norm = stats.normalizer(config)
    np.testing.assert_array_equal(norm.std, [0.5, 2.0])
    np.testing.assert_array_equal(norm.apply(np.array([[1.5, 2.0], [100.0, -100.0]])), [[1.0, 1.0], [2.0, -2.0]])
    assert ObsNorm.from_dict(norm.to_dict()) == norm and ObsNorm.from_dict({**norm.to_dict(), "clip": 3.0}) != norm
    with pytest.raises(ConfigError):
        ObsNorm(np.zeros(2), np.array([1.0, 0.0]), 1.0)
    with pytest.raises(ConfigError, match="observation.clip"):
        NormConfig(clip=0)


def reference_loop(profile, policies, seeds, regime, norm):
    """Each individual on each seed through gymnasium's full wrapper stack; the raw observations each policy saw."""
    seen = []

    def act(rows, obs):
        seen.append(np.array(obs, dtype=np.float32))
        return profile.policy.act(policies[rows], norm.apply(obs))

    b, e = len(policies), len(seeds)
    rows = np.repeat(np.arange(b), e)
    envs = [make_env(profile) for _ in range(b * e)]
    returns, _, _ = play_episodes(envs, profile, lambda r, o: act(rows[r], o), np.tile(seeds, b), regime)
    return returns.reshape(b, e).mean(axis=1), np.concatenate(seen)


@pytest.mark.parametrize("robot", ["lunarlander", "cartpole"])
def test_batch_statistics_equal_numpy_of_the_observations_the_policies_saw(robot):
    """Every individual plays with the same normalizer; the batch's statistics are numpy's mean and variance of the
    raw observations met in a plain gymnasium loop, and 1 or 2 workers give them bit for bit."""
    profile = load_profile(robot)
    rng = np.random.default_rng(3)
    policies = (0.5 * rng.standard_normal((4, profile.policy.num_params))).astype(np.float32)
    seeds = np.array([11, 12])
    d = profile.policy.obs_dim
    norm = ObsNorm(rng.normal(size=d), rng.uniform(0.2, 3.0, size=d), 5.0)
    returns, seen = reference_loop(profile, policies, seeds, "nominal", norm)
    got = InProcessEvaluator(profile, max_envs=3).evaluate(policies, seeds, "nominal", norm)
    np.testing.assert_array_equal(got.returns, returns)  # the normalizer reached every policy
    stats = got.obs_stats
    assert stats.count == len(seen) == got.env_steps
    np.testing.assert_allclose(stats.mean, seen.astype(np.float64).mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.var, seen.astype(np.float64).var(axis=0), rtol=1e-9, atol=1e-12)
    for workers in (1, 2):
        with LocalEvaluator(profile, workers=workers) as ev:
            other = ev.evaluate(policies, seeds, "nominal", norm).obs_stats
        assert other.count == stats.count
        np.testing.assert_array_equal(other.mean, stats.mean)
        np.testing.assert_array_equal(other.m2, stats.m2)
    raw = InProcessEvaluator(profile).evaluate(policies, seeds, "nominal")
    assert not np.array_equal(raw.returns, got.returns)


def test_profiles_switch_normalization_and_set_baselines(tmp_path):
    assert load_profile("ant").observation.normalize and load_profile("lunarlander").observation.normalize
    data = {"name": "x", "env_id": "CartPole-v1",
            "regimes": {"nominal": {}, "inverted": {"permutation": [1, 0]}},
            "switch_regime": "inverted", "observation": {"dim": 4, "normalize": True, "clip": 5.0},
            "action": {"type": "discrete", "n": 2}, "policy": {"hidden": [8]},
            "evolution": {"population": 4, "episodes": 1, "generations": 3},
            "baselines": {"openes": {"sigma": 0.02, "learning_rate": 0.003}}}
    profile = parse_profile(data)
    assert profile.observation == NormConfig(normalize=True, clip=5.0)
    assert dict(profile.baselines["openes"]) == {"sigma": 0.02, "learning_rate": 0.003}
    for bad, message in [({"openes": {"popsize": 8}}, "popsize"), ({"nes": {}}, "unknown field"),
                         ({"openes": {"sigma": -1.0}}, "sigma"), ({"ga": {"sigmaa": 0.1}}, "baselines.ga.sigmaa")]:
        with pytest.raises(ConfigError, match=message):
            parse_profile({**data, "baselines": bad})
    with pytest.raises(ConfigError, match="observation.clip"):
        parse_profile({**data, "observation": {"dim": 4, "clip": -1.0}})
    with pytest.raises(ConfigError, match="observation.normalise"):
        parse_profile({**data, "observation": {"dim": 4, "normalise": True}})
    with pytest.raises(ConfigError, match="output_scale"):
        parse_profile({**data, "policy": {"hidden": [8], "output_scale": 0.0}})
    assert dataclasses.replace(profile).to_dict()["observation"]["normalize"] is True
