"""Evolution runs for the determinism tests: the same seed through any evaluator, records minus timing."""

from __future__ import annotations

import dataclasses

from srghn.controller.evolution import SRGHNStrategy
from srghn.controller.ghn import SRGHN
from srghn.sim.loop import Schedule, evolve
from srghn.sim.profiles import load_profile

GENERATIONS, EPISODES, SEED = 4, 2, 7


def cartpole_records(evaluator) -> list[dict]:
    """Four CartPole generations (population 6, a switch at generation 2) as plain dicts without ``timing``."""
    profile = load_profile("cartpole")
    config = dataclasses.replace(profile.evolution, population=6)
    strategy = SRGHNStrategy(SRGHN(profile.policy, profile.ghn, basis_seed=SEED), config, SEED)
    records = evolve(strategy, evaluator, GENERATIONS, EPISODES, SEED, Schedule.switch("inverted", at=2))
    return [{k: v for k, v in dataclasses.asdict(r).items() if k != "timing"} for r in records]
