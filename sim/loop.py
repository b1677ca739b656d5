"""The loop that drives a strategy with an evaluator, generation after generation, under a regime schedule.

Per generation: pick the regime the schedule says; if it changed, tell the strategy its stored fitness is stale
(fitness from two worlds is never compared in one selection); draw the generation's episode seeds; ask, evaluate,
tell; emit a :class:`~srghn.sim.records.GenerationRecord`. All randomness comes from the seed: the strategy's own
generators and, here, one numpy generator for episode seeds.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from srghn import ConfigError
from srghn.controller.strategy import Strategy, diversity
from srghn.sim.envs import NOMINAL
from srghn.sim.evaluator import Evaluator
from srghn.sim.records import GenerationRecord

SEED_BOUND = 2**31 - 1


@dataclass(frozen=True)
class Schedule:
    """Which regime the simulator is in at each generation: ``initial`` until the first switch."""

    switches: tuple[tuple[int, str], ...] = ()
    """``(generation, regime)`` pairs, strictly increasing generations >= 1."""
    initial: str = NOMINAL

    def __post_init__(self) -> None:
        gens = [g for g, _ in self.switches]
        if any(g < 1 for g in gens) or gens != sorted(set(gens)):
            raise ConfigError(f"switch generations must be >= 1 and strictly increasing, got {gens}")

    @classmethod
    def switch(cls, switch_regime: str, at: int | None = None, back_at: int | None = None) -> Schedule:
        """Nominal, then ``switch_regime`` from generation ``at``, then nominal again from ``back_at``."""
        if back_at is not None and at is None:
            raise ConfigError("a switch back needs a switch first (--switch-back-at without --switch-at)")
        if at is not None and back_at is not None and back_at <= at:
            raise ConfigError(f"--switch-back-at ({back_at}) must come after --switch-at ({at})")
        switches = [] if at is None else [(at, switch_regime)]
        if back_at is not None:
            switches.append((back_at, NOMINAL))
        return cls(tuple(switches))

    def regime_at(self, generation: int) -> str:
        """Regime in force at ``generation``."""
        regime = self.initial
        for at, name in self.switches:
            if generation >= at:
                regime = name
        return regime


class RegimeSource(Protocol):
    def regime_at(self, generation: int) -> str: ...


def evolve(strategy: Strategy, evaluator: Evaluator, generations: int | None, episodes: int, seed: int,
           schedule: RegimeSource | None = None,
           should_stop: Callable[[], bool] | None = None) -> Iterator[GenerationRecord]:
    """Run ``generations`` generations (None: until the caller stops iterating), yielding one record after each.

    ``schedule`` says the regime of each generation: a :class:`Schedule`, or anything with ``regime_at`` (the
    daemon's regime follows operator commands). ``should_stop`` (the daemon's signal flag) ends the run between
    generations; asked for during one, that generation is abandoned: its evaluation is never told to the
    strategy and no record is made, so the population (parameters, policies, fitness, lineage) stays as the last
    complete generation left it."""
    if (generations is not None and generations < 1) or episodes < 1:
        raise ConfigError(f"generations and episodes must be >= 1, got {generations} and {episodes}")
    schedule = schedule or Schedule()
    rng = np.random.default_rng(seed)
    total_steps = 0
    regime = None
    stop = should_stop or (lambda: False)
    for _ in range(generations) if generations is not None else itertools.count():
        if stop():
            return
        generation = strategy.generation
        new_regime = schedule.regime_at(generation)
        if regime is not None and new_regime != regime:
            strategy.invalidate()
        regime = new_regime
        seeds = rng.integers(0, SEED_BOUND, size=episodes)

        t0 = time.perf_counter()
        batch = strategy.ask()
        t1 = time.perf_counter()
        result = evaluator.evaluate(batch, seeds, regime)
        t2 = time.perf_counter()
        if stop():
            return
        strategy.tell(result.fitness)
        t3 = time.perf_counter()

        total_steps += result.env_steps
        rates = strategy.mutation_rates()
        best = int(np.argmax(result.fitness))
        healthy = result.fitness[np.isfinite(result.fitness)]
        yield GenerationRecord(
            generation=generation, regime=regime,
            best=float(result.fitness[best]), mean=float(healthy.mean()) if healthy.size else math.nan,
            median=float(np.median(healthy)) if healthy.size else math.nan, best_return=float(result.returns[best]),
            champion_fitness=strategy.champion().fitness, diversity=diversity(strategy.population()),
            mutation_rate_mean=None if rates is None else float(rates.mean()),
            mutation_rate_std=None if rates is None else float(rates.std()),
            evaluations=int(batch.shape[0]), env_steps=result.env_steps, total_env_steps=total_steps,
            faults=result.faults(),
            timing={"wall_s": t3 - t0, "ghn_s": (t1 - t0) + (t3 - t2), "eval_s": t2 - t1},
        )
