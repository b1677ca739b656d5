"""GESMR: group elite selection of mutation rates (Kumar et al., GECCO 2022, arXiv 2204.04817).

Children are split into ``groups``; all children of group g are mutated with strength sigma_g. After
evaluation, the group whose best child improved most on its parent wins; the next generation's strengths are
the winner's sigma (kept by group 0) and the winner's sigma times a log-uniform factor in [1/beta, beta] (the
other groups). Selecting rates by the group's *elite* improvement, not its mean, is the method's point: it
keeps rates high enough to find rare big improvements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from srghn import ConfigError
from srghn.controller.baselines.ga import GA, GAConfig
from srghn.controller.policy import PolicySpec


@dataclass(frozen=True)
class GESMRConfig(GAConfig):
    """GA settings plus the mutation-rate groups."""

    groups: int = 5
    """Number of mutation-rate groups."""
    beta: float = 2.0
    """Range of the log-uniform perturbation of the winning rate."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.groups <= self.popsize - self.elites or not self.beta > 1:
            raise ConfigError(f"gesmr needs 1 <= groups <= popsize - elites and beta > 1, got {self}")


class GESMR(GA):
    """Elitist GA with mutation rates chosen by group elite selection."""

    config: GESMRConfig

    def __init__(self, policy: PolicySpec, config: GESMRConfig, seed: int, init: np.ndarray | None = None) -> None:
        super().__init__(policy, config, seed, init)
        self.group_sigmas = self._spread(config.sigma)
        self.groups = np.full(config.popsize, -1)  # group of each member (-1: elite or initial)

    def _spread(self, sigma: float) -> np.ndarray:
        log_beta = math.log(self.config.beta)
        factors = np.exp(self.rng.uniform(-log_beta, log_beta, size=self.config.groups - 1))
        return np.concatenate([[sigma], sigma * factors])

    def _observe(self, fitness: np.ndarray) -> None:
        improvement = fitness - self.parent_fitness
        best_group, best = None, -np.inf
        for g in range(self.config.groups):
            members = np.flatnonzero((self.groups == g) & np.isfinite(improvement))
            if members.size and improvement[members].max() > best:
                best_group, best = g, improvement[members].max()
        if best_group is not None:
            self.group_sigmas = self._spread(float(self.group_sigmas[best_group]))

    def _child_sigmas(self, picks: np.ndarray) -> np.ndarray:
        groups = np.arange(picks.size) % self.config.groups
        self.groups = np.concatenate([np.full(self.config.elites, -1), groups])
        return self.group_sigmas[groups]

    def mutation_rates(self) -> np.ndarray:
        return self.group_sigmas
