"""Evolution runs for the determinism tests: the same seed through any evaluator, records minus timing."""

from __future__ import annotations

import dataclasses

from srghn.sim.driver import Driver, RunSpec
from srghn.sim.profiles import load_profile
from srghn.sim.schedule import Schedule

GENERATIONS, EPISODES, SEED = 4, 2, 7


def cartpole_records(evaluator) -> list[dict]:
    """Four CartPole generations (population 6, a switch at generation 2) as plain dicts without ``timing``."""
    driver = Driver.start(RunSpec(load_profile("cartpole"), seed=SEED, population=6, episodes=EPISODES), evaluator)
    records = driver.run(GENERATIONS, Schedule.switch("inverted", at=2))
    return [{k: v for k, v in dataclasses.asdict(r).items() if k != "timing"} for r in records]
