"""The lean MuJoCo paths (Ant-v5, HalfCheetah-v5) give exactly gymnasium's numbers, stepped from C or from
Python, and flag a MuJoCo instability as non_finite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.envs.mujoco.ant_v5 import AntEnv

from srghn.controller.normalizer import RunningStats
from srghn.sim.envs import Regime
from srghn.sim.episodes import GymRunner, RunnerSpec, make_runner, mujoco_unstable
from srghn.sim.evaluator import make_env, run_episodes
from srghn.sim.fast_mujoco import STEP_ENV, AntRunner, HalfCheetahRunner, compiled_step, fast_path_supported
from srghn.sim.profiles import load_profile

CHEETAH = Path(__file__).resolve().parents[1] / "docs" / "examples" / "halfcheetah.toml"
STEPPING = ["compiled", "python"]


def stepped(runner, stepping: str):
    """``runner`` stepping its physics from C (skipped where the extension is not built) or from Python."""
    if stepping == "python":
        runner.compiled = None
    elif runner.compiled is None:
        pytest.skip("the compiled MuJoCo step is not built here (no C compiler at install)")
    return runner


def assert_runner_equals_gymnasium(profile, policies, seeds, regime, stepping, runner_class) -> None:
    """The profile's fast runner (``runner_class``) gives gymnasium's own returns, fitness and steps."""
    returns, fitness, steps = run_episodes([make_env(profile) for _ in seeds], profile, policies, seeds, regime)
    runner = stepped(make_runner(RunnerSpec.from_profile(profile)), stepping)
    assert isinstance(runner, runner_class)
    got = runner.run(policies, seeds, regime)
    runner.close()
    assert got.failures == {}
    np.testing.assert_array_equal(got.steps, steps)
    np.testing.assert_array_equal(got.returns, returns)
    np.testing.assert_array_equal(got.fitness, fitness)


@pytest.mark.parametrize("stepping", STEPPING)
@pytest.mark.parametrize("regime", ["nominal", "invert_all", "weak_front_left"])
def test_fast_ant_equals_gymnasium(regime, stepping):
    profile = load_profile("ant")
    rng = np.random.default_rng(3)
    # a mix of scales: some ants fall over early (termination), some stand or walk to the time limit
    scale = np.array([0.05, 0.3, 1.0, 3.0], dtype=np.float32)[:, None]
    policies = (scale * rng.standard_normal((4, profile.policy.num_params))).astype(np.float32)
    seeds = rng.integers(0, 2**31 - 1, size=4)
    assert_runner_equals_gymnasium(profile, policies, seeds, regime, stepping, AntRunner)


@pytest.mark.parametrize("stepping", STEPPING)
def test_fast_ant_equals_gymnasium_in_every_kind_of_model_regime(stepping):
    """Payload, friction, damping and gains are written into the model at reset: the fast path steps that model."""
    profile = load_profile("ant").with_regime("mixed", Regime(
        gain={"hip_2": 0.4}, payload={"torso": 0.3}, friction={"all": 0.5}, damping={"ankle_3": 3.0}))
    rng = np.random.default_rng(4)
    policies = (0.3 * rng.standard_normal((3, profile.policy.num_params))).astype(np.float32)
    seeds = np.array([7, 8, 9])
    expected = run_episodes([make_env(profile) for _ in range(3)], profile, policies, seeds, "mixed")
    nominal = run_episodes([make_env(profile) for _ in range(3)], profile, policies, seeds, "nominal")
    runner = stepped(make_runner(RunnerSpec.from_profile(profile)), stepping)
    assert isinstance(runner, AntRunner)
    got = runner.run(policies, seeds, "mixed")
    again_nominal = runner.run(policies, seeds, "nominal")  # the same environments, back in nominal
    runner.close()
    np.testing.assert_array_equal(got.returns, expected[0])
    np.testing.assert_array_equal(got.steps, expected[2])
    np.testing.assert_array_equal(again_nominal.returns, nominal[0])
    assert not np.array_equal(got.returns, nominal[0])


@pytest.mark.parametrize("stepping", STEPPING)
@pytest.mark.parametrize("regime", ["nominal", "reversed_front_thigh", "payload", "icy"])
def test_fast_halfcheetah_equals_gymnasium(regime, stepping):
    """A second MuJoCo robot (the bring-your-own-robot example) on the same stepping core."""
    profile = load_profile(CHEETAH)
    rng = np.random.default_rng(5)
    policies = (0.5 * rng.standard_normal((3, profile.policy.num_params))).astype(np.float32)
    seeds = rng.integers(0, 2**31 - 1, size=3)
    assert_runner_equals_gymnasium(profile, policies, seeds, regime, stepping, HalfCheetahRunner)


@pytest.mark.parametrize("stepping", STEPPING)
def test_fast_ant_measures_what_gymnasiums_step_measures(stepping):
    """Returns, fitness, steps, the observation statistics and the contact descriptors, against the path that
    calls gymnasium's own ``step`` (with a normalizer, as evolution scores)."""
    profile = load_profile("ant")
    rng = np.random.default_rng(6)
    scale = np.array([0.05, 0.2, 0.5, 2.0, 0.1], dtype=np.float32)[:, None]
    policies = (scale * rng.standard_normal((5, profile.policy.num_params))).astype(np.float32)
    seeds = rng.integers(0, 2**31 - 1, size=5)
    stats = RunningStats(10, rng.standard_normal(27), np.abs(rng.standard_normal(27)) * 10).normalizer(
        profile.observation)
    slow = make_runner(RunnerSpec.from_profile(profile, fast_path=False, behaviour=True))
    fast = stepped(make_runner(RunnerSpec.from_profile(profile, behaviour=True)), stepping)
    assert isinstance(slow, GymRunner) and isinstance(fast, AntRunner)
    want, got = (r.run(policies, seeds, "weak_back_left", stats) for r in (slow, fast))
    slow.close()
    fast.close()
    assert got.failures == want.failures == {}
    assert len(set(got.steps.tolist())) > 1  # some fell early
    for field in ("returns", "fitness", "steps", "behaviour"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
    for field in ("count", "mean", "m2"):
        np.testing.assert_array_equal(getattr(got.obs_stats, field), getattr(want.obs_stats, field), err_msg=field)


def test_compiled_step_reports_a_mujoco_error_per_episode():
    """An error inside MuJoCo (here its stack overflows) fails that episode's step only; the others step on."""
    compiled = compiled_step()
    if compiled is None:
        pytest.skip("the compiled MuJoCo step is not built here (no C compiler at install)")
    boxes = "".join(f'<body pos="0 0 {1 + 0.3 * i}"><freejoint/><geom type="box" size=".1 .1 .1"/></body>'
                    for i in range(6))
    xml = '<mujoco><size memory="{}"/><worldbody><geom type="plane" size="1 1 .1"/>{}</worldbody></mujoco>'
    small = mujoco.MjModel.from_xml_string(xml.format("16K", boxes))  # overflows its stack on the first contacts
    big = mujoco.MjModel.from_xml_string(xml.format("1M", boxes))
    datas = [mujoco.MjData(small), mujoco.MjData(big)]
    table = np.array([[m._address, d._address, d.ctrl.ctypes.data, d.qpos.ctypes.data]
                      for m, d in zip((small, big), datas, strict=True)], dtype=np.uint64)
    lens = np.array([big.nq], dtype=np.int64)
    post = np.zeros((2, big.nq))
    errors = []
    for _ in range(300):
        errors += compiled.step(table, 0, lens, np.zeros((2, 0), dtype=np.float32), 1, True, np.zeros((2, 0)), post)
        if errors:
            break
    assert len(errors) == 1 and errors[0][0] == 0 and "mj_stackAlloc" in errors[0][1]
    reference = mujoco.MjData(big)
    for _ in range(round(datas[1].time / big.opt.timestep)):
        mujoco.mj_step(big, reference)
        mujoco.mj_rnePostConstraint(big, reference)
    np.testing.assert_array_equal(post[1], reference.qpos)  # the healthy one stepped on, as the binding steps it


def test_the_compiled_step_is_built_where_a_compiler_is_and_can_be_turned_off():
    """The install builds it wherever a C compiler and Python's headers are; SRGHN_MUJOCO_STEP=python turns it
    off in a process (and in the workers it starts, which inherit the environment)."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if (shutil.which("cc") or shutil.which("gcc")) and headers.is_file():
        assert compiled_step() is not None
    probe = "from srghn.sim.fast_mujoco import compiled_step; print(compiled_step() is None)"
    off = subprocess.run([sys.executable, "-c", probe], env={**os.environ, STEP_ENV: "python"}, capture_output=True,
                         text=True, check=True)
    assert off.stdout.strip() == "True"


def test_only_exact_ant_classes_take_the_fast_path():
    profile = load_profile("ant")
    assert isinstance(make_runner(RunnerSpec.from_profile(profile, fast_path=False)), GymRunner)
    assert not fast_path_supported(gym.make("HalfCheetah-v5", render_mode="rgb_array"))  # rendering: gymnasium's
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
    with LocalEvaluator(profile, workers=2) as ev:  # shrinking jobs: 3, 3, 2, 1, 1, 1, 1 episodes
        guided = ev.evaluate(policies, seeds, "invert_back_left")
        timing = ev.last_timing  # the workers' time split: playing episodes, the jobs' round trips, idle
        assert timing["jobs"] == 7 and timing["run_s"] > 0 and timing["ipc_s"] >= 0 and timing["idle_s"] >= 0
        assert timing["run_s"] + timing["ipc_s"] + timing["idle_s"] == pytest.approx(2 * timing["wall_s"])
    for other in (small, local, guided):
        np.testing.assert_array_equal(other.fitness, whole.fitness)
        np.testing.assert_array_equal(other.returns, whole.returns)
        assert other.env_steps == whole.env_steps and other.failures == {}
