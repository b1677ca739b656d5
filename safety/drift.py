"""Return drift: has the robot's episode return dropped for good? For robots whose regime cannot be identified from
transitions (LunarLander: its state cannot be set from an observation, :mod:`srghn.sim.twin`).

The first ``warmup`` episode returns under a champion set the reference (their mean and standard deviation; the
deviation is floored at 5% of the mean so that a very steady robot does not alarm on noise). Every later return is
standardised by it, clipped to ``±clip`` (a single crash among good landings counts as at most ``clip`` deviations)
and fed to a one-sided Page-Hinkley test (``river.drift.PageHinkley``, ``mode="down"``): drift is declared when the
cumulative drop below the running mean, less ``delta`` per episode, exceeds ``threshold``. River's test compares
with the running mean of everything it saw since its last alarm, so the warm-up returns are fed to it as well: they
anchor that mean, and a drop soon after the warm-up is seen as quickly as a later one. After an alarm the test
starts over; a new champion should call :meth:`ReturnDriftDetector.reset` for a new reference.

The false-alarm rate on nominal LunarLander runs and the detection delay after a swap are measured by
``benchmarks/drift_false_alarms.py`` (and checked on a few runs by ``tests/test_drift.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from river.drift import PageHinkley

from srghn.errors import ConfigError, InvalidReturns


@dataclass(frozen=True)
class DriftConfig:
    """Settings of the return drift detector (defaults measured on LunarLander, see the module docstring)."""

    warmup: int = 20
    """Episodes whose returns make the reference."""
    delta: float = 1.0
    """Drop per episode tolerated without accumulating evidence, in reference standard deviations."""
    threshold: float = 8.0
    """Accumulated drop that declares drift, in reference standard deviations (Page-Hinkley's lambda)."""
    clip: float = 3.0
    """Standardised returns are clipped to [-clip, clip]."""
    min_instances: int = 5
    """Standardised returns the test sees before it may alarm."""

    def __post_init__(self) -> None:
        if type(self.warmup) is not int or self.warmup < 2:
            raise ConfigError(f"drift warmup must be an integer >= 2 episodes, got {self.warmup!r}")
        if type(self.min_instances) is not int or self.min_instances < 1:
            raise ConfigError(f"drift min_instances must be an integer >= 1, got {self.min_instances!r}")
        for name in ("delta", "threshold", "clip"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"drift {name} must be a positive number, got {value!r}")


class ReturnDriftDetector:
    """Page-Hinkley test on standardised episode returns."""

    def __init__(self, config: DriftConfig | None = None) -> None:
        self.config = config or DriftConfig()
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next ``warmup`` returns make a new reference."""
        c = self.config
        self._warmup: list[float] = []
        self.reference: tuple[float, float] | None = None
        """``(mean, standard deviation)`` of the warm-up returns, once there are enough."""
        self._test = PageHinkley(min_instances=c.min_instances, delta=c.delta, threshold=c.threshold, mode="down")

    def update(self, episode_return: float) -> bool:
        """Feed one episode's return; True when it completes evidence of a drop (drift)."""
        value = float(episode_return)
        if not math.isfinite(value):
            raise InvalidReturns(f"episode return must be finite, got {episode_return!r}")
        if self.reference is None:
            self._warmup.append(value)
            if len(self._warmup) == self.config.warmup:
                mean = float(np.mean(self._warmup))
                self.reference = (mean, max(float(np.std(self._warmup)), 0.05 * abs(mean), 1e-9))
                for past in self._warmup:  # anchor the test's running mean on the reference episodes too
                    self._feed(past)
            return False
        return self._feed(value)

    def _feed(self, value: float) -> bool:
        mean, std = self.reference
        self._test.update(float(np.clip((value - mean) / std, -self.config.clip, self.config.clip)))
        return bool(self._test.drift_detected)


def alarms(returns: np.ndarray, config: DriftConfig | None = None) -> list[int]:
    """Indices of the returns at which a fresh detector fed ``returns`` in order raises an alarm."""
    detector = ReturnDriftDetector(config)
    return [i for i, value in enumerate(returns) if detector.update(value)]


__all__ = ["DriftConfig", "ReturnDriftDetector", "alarms"]
