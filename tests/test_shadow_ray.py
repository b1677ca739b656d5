"""The Ray backend against a real local Ray instance started here: same records as the local backend."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from shadow_runs import cartpole_records

from srghn.sim.evaluator import InProcessEvaluator
from srghn.sim.profiles import load_profile
from srghn.sim.workers import LocalEvaluator

ray = pytest.importorskip("ray", reason="the Ray backend needs the [ray] extra (part of [dev])")


@pytest.mark.slow
def test_local_and_ray_backends_give_identical_records():
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
    assert one == two == on_ray
    assert sum(r["env_steps"] for r in one) > 0 and all(r["faults"] == {} for r in one)
    np.testing.assert_array_equal(got.fitness, want.fitness)
    np.testing.assert_array_equal(got.returns, want.returns)
    assert got.env_steps == want.env_steps and got.failures == {}


def test_importing_srghn_sim_does_not_import_ray():
    code = ("import sys, srghn.sim, srghn.sim.workers, srghn.sim.backends, srghn.sim.run, srghn.sim.ray_backend; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
