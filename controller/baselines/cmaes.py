"""CMA-ES (Hansen 2016, arXiv 1604.00772) through pycma: covariance-matrix adaptation over the policy vector.

pycma minimises, so it is told the negated fitness; failed evaluations (-inf fitness) become a loss just worse
than the worst finite one. Its random numbers come from this strategy's own generator, never numpy's global one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from srghn import ConfigError
from srghn.controller.policy import PolicySpec
from srghn.controller.strategy import BatchStrategy, initial_mean


@dataclass(frozen=True)
class CMAESConfig:
    """CMA-ES settings."""

    popsize: int = 30
    """Evaluations per generation (lambda)."""
    sigma0: float = 0.1
    """Initial step size."""
    diagonal: bool | None = None
    """Diagonal covariance (separable CMA-ES). ``None``: diagonal above 1000 parameters, where the full matrix's
    eigendecomposition would dominate a generation."""

    def __post_init__(self) -> None:
        if self.popsize < 2 or not self.sigma0 > 0:
            raise ConfigError(f"cmaes needs popsize >= 2 and sigma0 > 0, got {self.popsize}, {self.sigma0}")


class CMAES(BatchStrategy):
    """CMA-ES over the flat policy vector (pycma's ``CMAEvolutionStrategy``)."""

    def __init__(self, policy: PolicySpec, config: CMAESConfig, seed: int, init: np.ndarray | None = None) -> None:
        """``init``: initial policies ``(n, P)``, the first is the start mean (default: a fresh policy)."""
        super().__init__(policy)
        self.config = config
        self.rng = np.random.default_rng(seed)
        x0 = initial_mean(policy, init, self.rng)
        diagonal = policy.num_params > 1000 if config.diagonal is None else config.diagonal
        import cma  # imports scipy.stats and matplotlib: ~3 s, only for a run that uses it

        self.es = cma.CMAEvolutionStrategy(x0, config.sigma0, {
            "popsize": config.popsize, "seed": np.nan, "randn": lambda lam, n: self.rng.standard_normal((lam, n)),
            "CMA_diagonal": diagonal, "verbose": -9, "verb_log": 0, "verb_disp": 0,
        })
        self.batch = np.repeat(x0[None], config.popsize, axis=0)
        self.fitness = np.full(config.popsize, np.nan)

    def _ask(self) -> np.ndarray:
        self.batch = np.asarray(self.es.ask())
        return self.batch

    def _tell(self, fitness: np.ndarray) -> None:
        self.fitness = fitness
        loss = -fitness
        finite = np.isfinite(loss)
        worst = loss[finite].max() if finite.any() else 0.0
        loss = np.where(finite, loss, worst + 1.0 + abs(worst))
        self.es.tell(list(self.batch), loss.tolist())


    def mutation_rates(self) -> np.ndarray:
        return np.array([self.es.sigma])
