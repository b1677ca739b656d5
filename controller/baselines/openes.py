"""OpenAI-ES (Salimans et al. 2017, arXiv 1703.03864): a Gaussian search distribution around a mean, moved by
Adam along the estimated fitness gradient, with antithetic sampling and centred-rank fitness shaping."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from srghn import ConfigError
from srghn.controller.policy import PolicySpec
from srghn.controller.strategy import BatchStrategy, initial_mean


@dataclass(frozen=True)
class OpenESConfig:
    """OpenES settings."""

    popsize: int = 30
    """Evaluations per generation (even: antithetic pairs)."""
    sigma: float = 0.1
    """Standard deviation of the perturbations."""
    learning_rate: float = 0.03
    """Adam step size (of the first generation)."""
    learning_rate_decay: float = 1.0
    """Factor on the step after every generation (1: constant). Adam moves every weight by about the step per
    generation however small the gradient, so a constant step keeps the mean wandering once it is near an optimum;
    a decaying one lets it settle."""
    learning_rate_min: float = 0.0
    """Floor of the decayed step."""
    weight_decay: float = 0.005
    """L2 pull of the mean towards zero, added to the gradient."""

    def __post_init__(self) -> None:
        if self.popsize < 2 or self.popsize % 2:
            raise ConfigError(f"openes.popsize must be even and >= 2, got {self.popsize}")
        if not (self.sigma > 0 and self.learning_rate > 0 and self.weight_decay >= 0):
            raise ConfigError(f"openes needs sigma > 0, learning_rate > 0, weight_decay >= 0: {self}")
        if not (0 < self.learning_rate_decay <= 1 and 0 <= self.learning_rate_min <= self.learning_rate):
            raise ConfigError("openes needs 0 < learning_rate_decay <= 1 and 0 <= learning_rate_min <= "
                              f"learning_rate: {self}")

    def step_size(self, generation: int) -> float:
        """The Adam step of the update after generation ``generation`` (0-based)."""
        return max(self.learning_rate * self.learning_rate_decay ** generation, self.learning_rate_min)


def centered_ranks(fitness: np.ndarray) -> np.ndarray:
    """Fitness replaced by its rank, scaled to [-0.5, 0.5] (robust to outliers and to -inf)."""
    ranks = np.empty(len(fitness))
    ranks[np.argsort(fitness, kind="stable")] = np.arange(len(fitness))
    return ranks / (len(fitness) - 1) - 0.5


class OpenES(BatchStrategy):
    """OpenES over the flat policy vector."""

    def __init__(self, policy: PolicySpec, config: OpenESConfig, seed: int, init: np.ndarray | None = None) -> None:
        """``init``: initial policies ``(n, P)``, the first is the search mean (default: a fresh policy)."""
        super().__init__(policy)
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.mean = initial_mean(policy, init, self.rng)
        self.m = np.zeros_like(self.mean)
        self.v = np.zeros_like(self.mean)
        self.steps = 0
        self.batch = np.repeat(self.mean[None].astype(np.float32), config.popsize, axis=0)
        self.fitness = np.full(config.popsize, np.nan)
        self._eps: np.ndarray | None = None

    def _ask(self) -> np.ndarray:
        half = self.config.popsize // 2
        self._eps = self.rng.standard_normal((half, self.mean.size))
        sigma = self.config.sigma
        self.batch = np.concatenate([self.mean + sigma * self._eps, self.mean - sigma * self._eps])
        return self.batch

    def _tell(self, fitness: np.ndarray) -> None:
        cfg, half = self.config, self.config.popsize // 2
        self.fitness = fitness
        ranks = centered_ranks(fitness)
        gradient = (ranks[:half] - ranks[half:]) @ self._eps / (cfg.popsize * cfg.sigma)
        gradient -= cfg.weight_decay * self.mean
        # Adam, ascending the gradient
        self.steps += 1
        self.m = 0.9 * self.m + 0.1 * gradient
        self.v = 0.999 * self.v + 0.001 * gradient**2
        m_hat = self.m / (1 - 0.9**self.steps)
        v_hat = self.v / (1 - 0.999**self.steps)
        self.mean += cfg.step_size(self.steps - 1) * m_hat / (np.sqrt(v_hat) + 1e-8)
