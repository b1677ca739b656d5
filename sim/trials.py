"""Trial and error on the robot over the repertoire, where the twin cannot explain the damage (ITE's M-BOA).

Intelligent Trial and Error chooses which stored gait to try next with a Gaussian process over the descriptor
space whose prior mean is the repertoire's own returns: what the map promised before the damage. Each trial's
return, measured on the robot, corrects the promise around the tried gait (a Matern 5/2 kernel spreads it to the
gaits that behave alike), and the next trial is the gait with the highest upper confidence bound
``mean + kappa * std``. The search stops when a trial reached ``alpha`` (90 %) of the best return the process
still expects anywhere, or after ``max_trials``.

Returns are divided by ``scale`` (the repertoire's best return) so the kernel's unit variance and ``kappa`` mean
the same for every robot. scikit-learn's ``GaussianProcessRegressor`` does the regression with the kernel held
fixed (no hyper-parameter fit on a handful of trials). Deterministic: the same trials give the same choices, and
ties go to the lower row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import Matern

from srghn import ConfigError


@dataclass(frozen=True)
class TrialSettings:
    """M-BOA's settings (Cully et al. 2015 used kappa 0.05, alpha 0.9, length scale 0.4 on a [0, 1] map)."""

    kappa: float = 0.05
    alpha: float = 0.9
    length_scale: float = 0.4
    """Of the Matern kernel, in descriptor units scaled to [0, 1] per dimension."""
    noise: float = 1e-3
    """Variance of one trial's (scaled) return around the truth."""
    max_trials: int = 10

    def __post_init__(self) -> None:
        if not (self.kappa >= 0 and 0 < self.alpha <= 1 and self.length_scale > 0 and self.noise > 0
                and self.max_trials >= 1):
            raise ConfigError("trial settings need kappa >= 0, 0 < alpha <= 1, length_scale > 0, noise > 0 and "
                              "max_trials >= 1")


@dataclass
class TrialAndError:
    """The state of one trial-and-error search over ``n`` stored gaits."""

    descriptors: np.ndarray
    """``(n, d)`` each gait's descriptor, scaled to [0, 1] per dimension."""
    prior: np.ndarray
    """``(n,)`` each gait's return before the damage (the repertoire's)."""
    settings: TrialSettings = field(default_factory=TrialSettings)
    tried: list[int] = field(default_factory=list)
    observed: list[float] = field(default_factory=list)
    excluded: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.descriptors = np.asarray(self.descriptors, dtype=np.float64)
        self.prior = np.asarray(self.prior, dtype=np.float64)
        n = len(self.prior)
        if n < 1 or self.descriptors.shape[0] != n or not np.isfinite(self.prior).all():
            raise ConfigError("trial and error needs one finite prior return per gait, and at least one gait")
        self.scale = max(float(np.abs(self.prior).max()), 1e-9)
        self._mean, self._std = self.prior / self.scale, np.ones(n)

    @classmethod
    def over(cls, repertoire, settings: TrialSettings | None = None) -> TrialAndError:
        """A search over a :class:`~srghn.sim.repertoire.Repertoire` (its descriptors scaled by their range)."""
        d = repertoire.config.descriptor
        low, high = np.asarray(d.low), np.asarray(d.high)
        scaled = np.clip((repertoire.measures - low) / (high - low), 0.0, 1.0)
        return cls(scaled, repertoire.returns, settings or TrialSettings())

    def tell(self, row: int, observed_return: float) -> None:
        """The robot returned ``observed_return`` with gait ``row``; the process is updated."""
        if not 0 <= row < len(self.prior) or not np.isfinite(observed_return):
            raise ConfigError(f"a trial needs a gait row in 0..{len(self.prior) - 1} and a finite return, got "
                              f"{row}, {observed_return}")
        self.tried.append(int(row))
        self.observed.append(float(observed_return))
        x = self.descriptors[self.tried]
        residual = (np.asarray(self.observed) - self.prior[self.tried]) / self.scale
        gp = GaussianProcessRegressor(Matern(length_scale=self.settings.length_scale, nu=2.5),
                                      alpha=self.settings.noise, optimizer=None, normalize_y=False)
        gp.fit(x, residual)
        correction, std = gp.predict(self.descriptors, return_std=True)
        self._mean, self._std = self.prior / self.scale + correction, std

    def expected(self) -> np.ndarray:
        """The return the process expects of every gait now (the prior until the first trial)."""
        return self._mean * self.scale

    def exclude(self, row: int) -> None:
        """Gait ``row`` cannot be tried (it failed its gates): never chosen again."""
        self.excluded.add(int(row))

    def next(self) -> int | None:
        """The gait to try next: the highest upper confidence bound (the lowest row among equals); None when every
        gait is excluded."""
        bound = self._mean + self.settings.kappa * self._std
        bound[list(self.excluded)] = -np.inf
        return None if len(self.excluded) >= len(bound) else int(np.argmax(bound))

    @property
    def best(self) -> int | None:
        """The tried gait with the highest observed return."""
        return self.tried[int(np.argmax(self.observed))] if self.tried else None

    @property
    def done(self) -> bool:
        """A trial reached ``alpha`` of the best the process expects of a gait that can still be tried, the trials
        are spent, or no gait is left."""
        open_rows = np.setdiff1d(np.arange(len(self.prior)), list(self.excluded))
        if len(self.tried) >= self.settings.max_trials or not open_rows.size:
            return True
        return bool(self.tried) and max(self.observed) >= self.settings.alpha * float(self.expected()[open_rows].max())

    def to_dict(self) -> dict:
        return {"trials": [{"row": r, "return": round(v, 3)} for r, v in zip(self.tried, self.observed, strict=True)],
                "best": self.best, "expected_best": round(float(self.expected().max()), 3), "done": self.done}


__all__ = ["TrialAndError", "TrialSettings"]
