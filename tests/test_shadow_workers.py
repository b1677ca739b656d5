"""The local sandboxed backend: same records for any number of workers, worker hygiene, typed errors."""

from __future__ import annotations

import dataclasses
import resource
from pathlib import Path

import numpy as np
import pytest
from shadow_runs import cartpole_records

from srghn import ConfigError, UnknownRegime
from srghn.errors import EvaluatorError, WorkerProtocolError
from srghn.sim.backends import make_evaluator
from srghn.sim.evaluator import InProcessEvaluator, evaluate_batch, make_env
from srghn.sim.jobs import decode, encode, plan_guided, plan_jobs
from srghn.sim.profiles import load_profile
from srghn.sim.run import EvolveSettings
from srghn.sim.workers import GiB, LocalEvaluator, WorkerLimits


def test_one_and_two_workers_give_the_in_process_records_and_observation_statistics():
    profile = load_profile("cartpole")
    reference = cartpole_records(InProcessEvaluator(profile))
    assert [r["regime"] for r in reference[:-1]] == ["nominal", "nominal", "inverted", "inverted"]
    assert reference[-1]["obs_count"] == sum(r["env_steps"] for r in reference[:-1])  # every observation counted
    for workers in (1, 2):
        with LocalEvaluator(profile, workers=workers) as ev:
            assert cartpole_records(ev) == reference


@pytest.mark.parametrize("robot, regime", [("cartpole", "inverted"), ("lunarlander", "swapped")])
def test_evaluators_match_the_reference_gymnasium_loop(robot, regime):
    """The plain loop through gymnasium's full wrapper stack, the in-process and the worker evaluators agree."""
    profile = load_profile(robot)
    rng = np.random.default_rng(5)
    policies = (0.5 * rng.standard_normal((5, profile.policy.num_params))).astype(np.float32)
    seeds = rng.integers(0, 2**31 - 1, size=2)
    reference = evaluate_batch([make_env(profile) for _ in range(3)], profile, policies, seeds, regime)
    inproc = InProcessEvaluator(profile, max_envs=4).evaluate(policies, seeds, regime)
    with LocalEvaluator(profile, workers=2) as ev:
        local = ev.evaluate(policies, seeds, regime)
    for result in (inproc, local):
        np.testing.assert_array_equal(result.fitness, reference.fitness)
        np.testing.assert_array_equal(result.returns, reference.returns)
        assert result.env_steps == reference.env_steps and result.failures == {}


def test_workers_are_niced_limited_and_free_of_torch():
    limits = WorkerLimits(nice=7, memory_bytes=3 * GiB)
    with LocalEvaluator(load_profile("cartpole"), workers=2, limits=limits) as ev:
        rng = np.random.default_rng(0)
        ev.evaluate(rng.standard_normal((4, 226)).astype(np.float32), np.array([1, 2]), "nominal")
        for w in ev.workers:
            assert w.torch_loaded is False  # reported by the worker after its last job
            stat = Path(f"/proc/{w.pid}/stat").read_text().rsplit(")", 1)[1].split()
            assert int(stat[16]) == min(_own_nice() + 7, 19)  # field 19 of /proc/PID/stat: nice (19 at most)
            limits_text = Path(f"/proc/{w.pid}/limits").read_text()
            address_space = next(line for line in limits_text.splitlines() if line.startswith("Max address space"))
            assert address_space.split()[3] == str(3 * GiB)
            cpu = next(line for line in limits_text.splitlines() if line.startswith("Max cpu time"))
            assert cpu.split()[3] != "unlimited"  # the per-job CPU-time backstop


def _own_nice() -> int:
    return int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_a_profile_the_workers_cannot_build_is_an_evaluator_error():
    broken = dataclasses.replace(load_profile("cartpole"), env_kwargs={"no_such_argument": 1})
    with pytest.raises(EvaluatorError, match="could not start.*no_such_argument"):
        LocalEvaluator(broken, workers=1)


def test_bad_arguments_are_config_errors():
    profile = load_profile("cartpole")
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        LocalEvaluator(profile, workers=0)
    with pytest.raises(ConfigError, match="nice"):
        WorkerLimits(nice=40)
    with pytest.raises(ConfigError, match="--ray-address only applies"):
        make_evaluator(profile, "local", ray_address="10.0.0.1:6379")
    with pytest.raises(ConfigError, match="--backend must be one of"):
        EvolveSettings(profile, "out", backend="gpu")
    with pytest.raises(ConfigError, match="--workers must be >= 1"):
        EvolveSettings(profile, "out", workers=0)


def test_jobs_cover_every_episode_once():
    for n, k in [(1, 8), (7, 3), (30, 8), (100, 4)]:
        jobs = plan_jobs(n, k)
        assert [j.lo for j in jobs] == [0] + [j.hi for j in jobs[:-1]] and jobs[-1].hi == n
        assert len(jobs) == min(n, k) and max(j.size for j in jobs) - min(j.size for j in jobs) <= 1
    for n, workers in [(1, 2), (7, 3), (30, 2), (150, 2), (100, 1)]:
        jobs = plan_guided(n, workers)
        assert [j.lo for j in jobs] == [0] + [j.hi for j in jobs[:-1]] and jobs[-1].hi == n
        sizes = [j.size for j in jobs]
        assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1  # largest first, single episodes last
        assert sizes[0] == -(-n // (2 * workers))  # the first is half of an even share
    assert [j.size for j in plan_guided(30, 2)] == [8, 6, 4, 3, 3, 2, 1, 1, 1, 1]


def test_frames_round_trip_and_reject_garbage():
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([3, -1], dtype=np.int64)}
    header, back = decode(encode({"type": "job", "job": 3}, arrays))
    assert header == {"type": "job", "job": 3}
    for name, a in arrays.items():
        np.testing.assert_array_equal(back[name], a)
        assert back[name].dtype == a.dtype
    good = encode({"type": "x"}, arrays)
    for garbage in (b"", b"\x01", good[:-3], good + b"\x00", good.replace(b"float32", b"object_")):
        with pytest.raises(WorkerProtocolError):
            decode(garbage)
    with pytest.raises(WorkerProtocolError, match="dtype"):
        encode({}, {"o": np.array(["x"], dtype=object)})


def test_bad_evaluate_input_is_refused_and_the_parent_keeps_its_limits():
    soft, _ = resource.getrlimit(resource.RLIMIT_CPU)
    with LocalEvaluator(load_profile("cartpole"), workers=1) as ev:
        good = np.zeros((1, 226), dtype=np.float32)
        with pytest.raises(UnknownRegime, match="valid regimes: nominal, inverted"):
            ev.evaluate(good, np.array([0]), "sideways")
        with pytest.raises(ConfigError, match=r"shape \(B, 226\)"):
            ev.evaluate(np.zeros((1, 5), dtype=np.float32), np.array([0]), "nominal")
        with pytest.raises(ConfigError, match="non-empty"):
            ev.evaluate(good, np.array([], dtype=np.int64), "nominal")
        assert ev.evaluate(good, np.array([0]), "nominal").failures == {}
    assert resource.getrlimit(resource.RLIMIT_CPU)[0] == soft  # the per-job CPU limit is the workers' alone
    with pytest.raises(EvaluatorError, match="closed"):
        ev.evaluate(good, np.array([0]), "nominal")
