"""The Ray backend against a real local Ray instance started here: same records as the local backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shadow_runs import cartpole_records

from srghn.sim.evaluator import InProcessEvaluator
from srghn.sim.profiles import load_profile
from srghn.sim.workers import LocalEvaluator

ray = pytest.importorskip("ray", reason="the Ray backend needs the [ray] extra (part of [dev])")


@pytest.mark.slow
def test_local_and_ray_backends_give_identical_records_and_observation_statistics():
    from srghn.sim.ray_backend import RayEvaluator

    profile = load_profile("cartpole")
    with LocalEvaluator(profile, workers=1) as ev:
        one = cartpole_records(ev)
    with LocalEvaluator(profile, workers=2) as ev:
        two = cartpole_records(ev)
    with RayEvaluator(profile, workers=2) as ev:
        assert ray.is_initialized() and ev.owns_ray
        assert len(set(ev.worker_pids())) == 2
        on_ray = cartpole_records(ev)
        # and one batch directly: failures, returns and steps agree too
        rng = np.random.default_rng(1)
        policies = rng.standard_normal((7, profile.policy.num_params)).astype(np.float32)
        seeds = np.array([5, 6, 7])
        got, want = ev.evaluate(policies, seeds, "inverted"), InProcessEvaluator(profile).evaluate(
            policies, seeds, "inverted")
    assert not ray.is_initialized()  # the evaluator started Ray, so it shut it down
    assert one == two == on_ray  # records and the observation statistics they leave, bit for bit
    assert sum(r["env_steps"] for r in one[:-1]) > 0 and all(r["faults"] == {} for r in one[:-1])
    np.testing.assert_array_equal(got.fitness, want.fitness)
    np.testing.assert_array_equal(got.returns, want.returns)
    assert got.env_steps == want.env_steps and got.failures == {}


def test_importing_srghn_sim_does_not_import_ray():
    code = ("import sys, srghn.sim, srghn.sim.workers, srghn.sim.backends, srghn.sim.run, srghn.sim.ray_backend; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.slow
def test_ray_actor_faults_cost_only_their_individuals(tmp_path, monkeypatch):
    """On Ray too: a raising env fails its individual, a killed actor fails its job and is replaced, a hanging
    env times out; each time the batch completes and the next one is normal."""
    import os
    import signal
    import threading

    from shadow_helpers import (
        HEALTHY,
        SEEDS,
        check_generation,
        expected_fitness,
        fault_policies,
        fault_profile,
        read_pid,
    )

    from srghn.sim.ray_backend import RayEvaluator
    from srghn.sim.workers import WorkerLimits

    tests_dir = str(Path(__file__).resolve().parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # the actors inherit PYTHONPATH
    try:
        fifo = tmp_path / "fault.fifo"
        os.mkfifo(fifo)
        actions = [0, 1, 0, 1, 0, 1, 2, 0]
        with RayEvaluator(fault_profile("block", fifo=str(fifo)), workers=2, jobs_per_worker=2) as ev:
            assert not ev.owns_ray
            outcome = {}
            thread = threading.Thread(
                target=lambda: outcome.update(result=ev.evaluate(fault_policies(actions), SEEDS, "nominal")))
            thread.start()
            pid = read_pid(fifo, timeout_s=60)
            assert pid in ev.worker_pids()
            os.kill(pid, signal.SIGKILL)
            thread.join(60)
            assert not thread.is_alive()
            check_generation(outcome["result"], actions, {6}, "worker_died(ray)", lost={7})
            assert ev.replaced == 1 and pid not in ev.worker_pids()
            result = ev.evaluate(fault_policies(HEALTHY), SEEDS, "nominal")
            assert result.failures == {}
            np.testing.assert_array_equal(result.fitness, expected_fitness(HEALTHY))

        actions = [0, 2, 1, 0]
        limits = WorkerLimits(job_timeout_s=4.0)
        # the replacement actor takes longer to start than a job may run: its start-up must not count
        with RayEvaluator(fault_profile("hang", start_delay_s=5.0), workers=2, jobs_per_worker=2,
                          limits=limits) as ev:
            check_generation(ev.evaluate(fault_policies(actions), SEEDS, "nominal"), actions, {1}, "timeout",
                             lost={0})
            assert ev.replaced == 1
            assert ev.evaluate(fault_policies(HEALTHY), SEEDS, "nominal").failures == {}

        with RayEvaluator(fault_profile("raise"), workers=2) as ev:
            check_generation(ev.evaluate(fault_policies(actions), SEEDS, "nominal"), actions, {1},
                             "exception: RuntimeError: injected fault")
            assert ev.replaced == 0
    finally:
        ray.shutdown()
