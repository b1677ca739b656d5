"""Evolution runs for the determinism tests: the same seed through any evaluator, records minus timing."""

from __future__ import annotations

import dataclasses

from srghn.controller.normalizer import NormConfig
from srghn.sim.driver import Driver, RunSpec
from srghn.sim.profiles import load_profile
from srghn.sim.schedule import Schedule

GENERATIONS, EPISODES, SEED = 4, 2, 7


def cartpole_records(evaluator) -> list[dict]:
    """Four CartPole generations (population 6, a switch at generation 2, observations normalized) as plain dicts
    without ``timing``, then the run's observation statistics (what the next normalizer is built from)."""
    profile = dataclasses.replace(load_profile("cartpole"), observation=NormConfig(normalize=True))
    driver = Driver.start(RunSpec(profile, seed=SEED, population=6, episodes=EPISODES), evaluator)
    records = [{k: v for k, v in dataclasses.asdict(r).items() if k != "timing"}
               for r in driver.run(GENERATIONS, Schedule.switch("inverted", at=2))]
    stats = driver.obs_stats
    return [*records, {"obs_count": stats.count, "obs_mean": stats.mean.tolist(), "obs_m2": stats.m2.tolist()}]
