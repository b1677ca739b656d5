"""Champions for the benchmarks: seeded random policies of a robot, exported and registered, and the synthetic
passing gate report that lets them be promoted (gating is never what a benchmark measures)."""

from __future__ import annotations

import numpy as np

from srghn.deploy.daemon.champions import export_for_profile
from srghn.deploy.registry.store import Registry
from srghn.safety.report import GateReport, GateResult
from srghn.sim.profiles import load_profile


def register_random(registry: Registry, robot: str, champion_id: str, seed: int = 0) -> None:
    """Export a policy of seeded random weights of ``robot`` and register it as a candidate."""
    profile = load_profile(robot)
    params = (np.random.default_rng(seed).standard_normal(profile.policy.num_params) * 0.5).astype(np.float32)
    model = export_for_profile(profile, params, champion_id).model
    registry.register(champion_id=champion_id, robot=profile.name, model=model, params=params,
                      policy=profile.policy.to_dict())


def passing_report(champion_id: str, robot: str, incumbent: str | None) -> GateReport:
    """A report that lets ``champion_id`` replace ``incumbent`` (the gates were not run)."""
    return GateReport(champion_id, robot, (GateResult("benchmark: gates not run", True, None, None, True),),
                      incumbent)
