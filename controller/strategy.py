"""The ask/tell interface every evolution strategy implements (SR-GHN and the baselines alike).

Convention, stated once: fitness is **maximised**. ``ask()`` returns a batch of policies as the ``(B, P)`` matrix
of :mod:`srghn.controller.policy`; the caller evaluates them however it likes and hands ``(B,)`` fitness values
to ``tell()``. NaN fitness (a failed evaluation) counts as the worst possible. Strategies never see a simulator.

The public ``ask``/``tell`` do the bookkeeping shared by all strategies (order checks, shapes, NaN handling,
best-so-far, the generation counter); a subclass writes only ``_ask``/``_tell`` and its statistics.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from srghn.controller.policy import PolicySpec
from srghn.errors import StrategyError

__all__ = ["BatchStrategy", "Champion", "Strategy", "StrategyError", "diversity"]


@dataclass(frozen=True)
class Champion:
    """The best individual of the current population."""

    policy: np.ndarray
    """Its policy parameters, ``(P,)`` float32."""
    fitness: float
    """Its fitness in the generation it was last evaluated."""
    id: int
    """Individual id, unique within a run."""
    parent_id: int
    """Id of the individual it was reproduced from (-1 for the initial population)."""


class Strategy(ABC):
    """Base class: ask for policies, tell their fitness, read statistics and the champion."""

    def __init__(self, policy: PolicySpec) -> None:
        self.policy = policy
        self.generation = 0
        self.best_fitness = -math.inf
        """Best fitness told since the start or since the last :meth:`invalidate`."""
        self._pending: np.ndarray | None = None

    def ask(self) -> np.ndarray:
        """The next batch of policies to evaluate, ``(B, P)`` float32."""
        if self._pending is not None:
            raise StrategyError("ask() called twice: tell() the fitness of the previous batch first")
        batch = np.ascontiguousarray(self._ask(), dtype=np.float32)
        if batch.ndim != 2 or batch.shape[1] != self.policy.num_params:
            raise StrategyError(f"{type(self).__name__} asked a batch of shape {batch.shape}, "
                                f"expected (B, {self.policy.num_params})")
        self._pending = batch
        return batch

    def tell(self, fitness: np.ndarray) -> None:
        """Fitness ``(B,)`` of the batch returned by the last :meth:`ask`."""
        if self._pending is None:
            raise StrategyError("tell() called without a pending ask()")
        fitness = np.asarray(fitness, dtype=np.float64).reshape(-1)
        if fitness.shape[0] != self._pending.shape[0]:
            raise StrategyError(f"tell() got {fitness.shape[0]} fitness values for a batch of "
                                f"{self._pending.shape[0]}")
        fitness = np.where(np.isnan(fitness), -np.inf, fitness)
        self._tell(fitness)
        self.best_fitness = max(self.best_fitness, float(fitness.max()))
        self._pending = None
        self.generation += 1

    def invalidate(self) -> None:
        """The world changed (new regime): stored fitness is stale and must be measured again before selection."""
        self.best_fitness = -math.inf
        self._invalidate()

    @abstractmethod
    def _ask(self) -> np.ndarray: ...

    @abstractmethod
    def _tell(self, fitness: np.ndarray) -> None: ...

    @abstractmethod
    def _invalidate(self) -> None: ...

    @abstractmethod
    def population(self) -> np.ndarray:
        """Policies of the current population, ``(N, P)``: what diversity is measured on."""

    @abstractmethod
    def champion(self) -> Champion:
        """The best individual of the current population."""

    def mutation_rates(self) -> np.ndarray | None:
        """Per-individual heritable mutation rates of the last generation's parents, if the strategy has them."""
        return None


class BatchStrategy(Strategy):
    """A strategy whose population is simply its last evaluated batch (the distribution-based ones: OpenES,
    CMA-ES). Subclasses set ``self.batch`` in ``_ask``; ``_tell`` stores ``self.fitness`` and updates them."""

    batch: np.ndarray
    fitness: np.ndarray

    def _invalidate(self) -> None:
        self.fitness = np.full_like(self.fitness, np.nan)

    def population(self) -> np.ndarray:
        return self.batch.astype(np.float32)

    def champion(self) -> Champion:
        best = int(np.argmax(np.where(np.isnan(self.fitness), -np.inf, self.fitness)))
        return Champion(self.batch[best].astype(np.float32), float(self.fitness[best]),
                        self.generation * self.batch.shape[0] + best, -1)


def check_init(policy: PolicySpec, init: np.ndarray) -> np.ndarray:
    """Initial policies ``(n, P)`` for a flat-vector strategy, validated (finite, the spec's width)."""
    init = np.asarray(init, dtype=np.float64)
    if init.ndim == 1:
        init = init[None]
    if init.ndim != 2 or init.shape[0] < 1 or init.shape[1] != policy.num_params or not np.isfinite(init).all():
        raise StrategyError(f"initial policies must be a finite (n, {policy.num_params}) matrix, got {init.shape}")
    return init


def initial_mean(policy: PolicySpec, init: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """The start mean of a distribution-based strategy: the first initial policy, or a fresh one from ``rng``."""
    if init is None:
        return policy.initial(1, rng)[0].astype(np.float64)
    return check_init(policy, init)[0].copy()


def diversity(policies: np.ndarray) -> float:
    """Population diversity: the mean over parameters of the standard deviation across individuals."""
    if policies.shape[0] < 2:
        return 0.0
    return float(np.std(policies.astype(np.float64), axis=0).mean())
