"""A genetic algorithm with elitism, truncation selection and Gaussian mutation (as in Such et al. 2017,
arXiv 1712.06567), and the skeleton GESMR and SAMR share: they differ only in each child's mutation strength.

Every generation evaluates ``popsize`` individuals: the ``elites`` best of the previous generation (measured
again, so a lucky or stale fitness does not persist) and ``popsize - elites`` children of parents drawn
uniformly from the ``parents`` best, each child = parent + sigma * N(0, I).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from srghn import ConfigError
from srghn.controller.policy import PolicySpec
from srghn.controller.strategy import Champion, Strategy, check_init


@dataclass(frozen=True)
class GAConfig:
    """GA settings."""

    popsize: int = 30
    """Evaluations per generation."""
    elites: int = 3
    """Best individuals carried into the next generation unchanged (and evaluated again)."""
    parents: int = 10
    """Children descend from the ``parents`` best (truncation selection)."""
    sigma: float = 0.05
    """Standard deviation of the Gaussian mutation."""

    def __post_init__(self) -> None:
        if not 0 <= self.elites < self.popsize or not 1 <= self.parents <= self.popsize:
            raise ConfigError(f"ga needs 0 <= elites < popsize and 1 <= parents <= popsize, got {self}")
        if not self.sigma > 0:
            raise ConfigError(f"ga.sigma must be > 0, got {self.sigma}")


class GA(Strategy):
    """Elitist GA with a fixed mutation strength; subclasses choose per-child strengths."""

    def __init__(self, policy: PolicySpec, config: GAConfig, seed: int, init: np.ndarray | None = None) -> None:
        """``init``: initial policies ``(n, P)``, repeated in turn to fill the population (default: fresh ones)."""
        super().__init__(policy)
        self.config = config
        self.rng = np.random.default_rng(seed)
        n = config.popsize
        self.batch = (policy.initial(n, self.rng) if init is None
                      else np.resize(check_init(policy, init), (n, policy.num_params)).astype(np.float32))
        self.ids = np.arange(n, dtype=np.int64)
        self.parent_ids = np.full(n, -1, dtype=np.int64)
        self.parent_fitness = np.full(n, np.nan)  # fitness of each member's parent when it was selected
        self.sigmas = np.full(n, config.sigma)  # strength each member was mutated with (elites keep theirs)
        self.next_id = n
        self.fitness = np.full(n, np.nan)
        self.evaluated = self.batch

    def _ask(self) -> np.ndarray:
        return self.batch

    def _tell(self, fitness: np.ndarray) -> None:
        cfg = self.config
        self.fitness, self.evaluated = fitness, self.batch
        self.evaluated_ids, self.evaluated_parents = self.ids, self.parent_ids
        self._observe(fitness)
        order = np.argsort(-fitness, kind="stable")
        elites = order[:cfg.elites]
        picks = order[:cfg.parents][self.rng.integers(cfg.parents, size=cfg.popsize - cfg.elites)]
        sigmas = self._child_sigmas(picks)
        children = self.batch[picks] + sigmas[:, None] * self.rng.standard_normal((picks.size, self.batch.shape[1]))
        n_children = picks.size
        self.batch = np.concatenate([self.batch[elites], children]).astype(np.float32)
        self.parent_fitness = np.concatenate([self.parent_fitness[elites], fitness[picks]])
        self.sigmas = np.concatenate([self.sigmas[elites], sigmas])
        self.parent_ids = np.concatenate([self.parent_ids[elites], self.ids[picks]])
        self.ids = np.concatenate([self.ids[elites], np.arange(self.next_id, self.next_id + n_children)])
        self.next_id += n_children

    def _observe(self, fitness: np.ndarray) -> None:
        """Hook: see this generation's fitness before selection (GESMR adapts its rates here)."""

    def _child_sigmas(self, picks: np.ndarray) -> np.ndarray:
        """Mutation strength of each child of ``picks`` (indices into the evaluated batch)."""
        return np.full(picks.size, self.config.sigma)

    def _invalidate(self) -> None:
        self.fitness = np.full_like(self.fitness, np.nan)
        self.parent_fitness = np.full_like(self.parent_fitness, np.nan)

    def population(self) -> np.ndarray:
        return self.evaluated

    def champion(self) -> Champion:
        best = int(np.argmax(np.where(np.isnan(self.fitness), -np.inf, self.fitness)))
        return Champion(self.evaluated[best].copy(), float(self.fitness[best]), int(self.evaluated_ids[best]),
                        int(self.evaluated_parents[best]))
