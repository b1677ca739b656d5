"""SAMR: self-adaptive mutation rates (the evolution-strategies tradition of Schwefel and Beyer). Each individual
carries its own mutation strength; a child first perturbs it log-normally, sigma' = sigma * exp(tau * N(0, 1)),
then mutates its parameters with sigma'. Strengths that produce good children are inherited with them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from srghn import ConfigError
from srghn.controller.baselines.ga import GA, GAConfig


@dataclass(frozen=True)
class SAMRConfig(GAConfig):
    """GA settings plus the learning rate of the strengths."""

    tau: float | None = None
    """Learning rate of the log-normal update; ``None``: 1/sqrt(number of parameters)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tau is not None and not self.tau > 0:
            raise ConfigError(f"samr.tau must be > 0, got {self.tau}")


class SAMR(GA):
    """Elitist GA whose every individual carries a self-adapted mutation strength."""

    config: SAMRConfig

    def _child_sigmas(self, picks: np.ndarray) -> np.ndarray:
        tau = self.config.tau or 1.0 / math.sqrt(self.policy.num_params)
        return self.sigmas[picks] * np.exp(tau * self.rng.standard_normal(picks.size))

    def mutation_rates(self) -> np.ndarray:
        return self.sigmas
