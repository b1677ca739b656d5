"""Observation normalization, part of the policy: running statistics and the frozen normalizer built from them.

Evolution strategies that walk on MuJoCo normalize observations (Ant's joint velocities reach +-15 while its
positions move by 0.05). Here the statistics come from the shadow simulator only:

* every episode accumulates the running mean and sum of squared deviations of the observations its policy saw
  (:class:`EpisodeStats`, Welford's update, one row per episode);
* after a generation, those per-episode statistics are merged, in episode order, into the run's
  :class:`RunningStats` (Chan et al.'s pairwise merge). Episode order is fixed by the batch, not by which worker
  played what, so 1, 2 or 100 workers give the same bits;
* the next generation is scored with the :class:`ObsNorm` frozen from them: ``clip((obs - mean) / std)``, ``std``
  floored. Every individual of a generation sees the same normalizer.

An exported champion carries its :class:`ObsNorm` inside the ONNX graph, so robots send raw observations and
nothing they send ever changes a deployed policy. numpy only: worker processes import this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from srghn import ConfigError


@dataclass(frozen=True)
class NormConfig:
    """How observations are normalized (the profile's ``[observation]`` table)."""

    normalize: bool = False
    """Normalize observations with running statistics from the shadow simulator."""
    clip: float = 10.0
    """Normalized observations are clipped to ``[-clip, clip]``."""
    std_floor: float = 1e-2
    """Standard deviations below this count as this (a dimension that never moved is not blown up)."""

    def __post_init__(self) -> None:
        for name in ("clip", "std_floor"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"observation.{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True, eq=False)
class ObsNorm:
    """A frozen normalizer: ``clip((obs - mean) / std, -clip, clip)`` with ``std >= std_floor`` already applied."""

    mean: np.ndarray
    """``(obs_dim,)`` float64."""
    std: np.ndarray
    """``(obs_dim,)`` float64, every value > 0."""
    clip: float

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        if mean.shape != std.shape or not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ConfigError("an observation normalizer needs finite mean and std of one length, std > 0")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"observation normalizer clip must be finite and > 0, got {self.clip}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ObsNorm) and self.clip == other.clip and np.array_equal(self.mean, other.mean)
                and np.array_equal(self.std, other.std))

    __hash__ = None  # mutable arrays inside

    def apply(self, obs: np.ndarray) -> np.ndarray:
        """Normalized observations ``(B, obs_dim)`` float32 (computed in float64, then rounded)."""
        x = (np.asarray(obs, dtype=np.float64) - self.mean) / self.std
        return np.clip(x, -self.clip, self.clip).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-ready copy (floats round-trip exactly through JSON)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "clip": float(self.clip)}

    @classmethod
    def from_dict(cls, data: dict) -> ObsNorm:
        """Inverse of :meth:`to_dict`; a malformed document is a :class:`ConfigError`."""
        try:
            return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["std"], dtype=np.float64),
                       float(data["clip"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed observation normalizer: {exc}") from exc


@dataclass(frozen=True, eq=False)
class EpisodeNorms:
    """One normalizer per episode of a batch (``None``: that episode's policy sees raw observations), for policies
    that each bring their own played side by side (a robot's stored champions in the twin). Row ``i`` is
    normalized to the bit as its own :class:`ObsNorm` would: the same float64 operations, elementwise."""

    mean: np.ndarray
    """``(episodes, obs_dim)`` float64 (0 where an episode has no normalizer)."""
    std: np.ndarray
    """``(episodes, obs_dim)`` float64 (1 where an episode has no normalizer)."""
    clip: np.ndarray
    """``(episodes, 1)`` float64 (infinite where an episode has no normalizer)."""

    @classmethod
    def of(cls, norms: Sequence[ObsNorm | None], dim: int) -> EpisodeNorms:
        mean, std, clip = np.zeros((len(norms), dim)), np.ones((len(norms), dim)), np.full((len(norms), 1), np.inf)
        for i, norm in enumerate(norms):
            if norm is None:
                continue
            if norm.dim != dim:
                raise ConfigError(f"observation normalizer {i} has {norm.dim} dimensions, the policy observes {dim}")
            mean[i], std[i], clip[i] = norm.mean, norm.std, norm.clip
        return cls(mean, std, clip)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[1])

    def apply(self, obs: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Normalized observations of the episodes ``rows``, ``(len(rows), obs_dim)`` float32."""
        x = (np.asarray(obs, dtype=np.float64) - self.mean[rows]) / self.std[rows]
        return np.clip(x, -self.clip[rows], self.clip[rows]).astype(np.float32)


@dataclass(frozen=True)
class RunningStats:
    """Count, mean and sum of squared deviations (M2) of every observation seen so far, per dimension."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> RunningStats:
        return cls(0, np.zeros(dim), np.zeros(dim))

    @property
    def var(self) -> np.ndarray:
        """Population variance (numpy's ``var`` with ``ddof=0``); zero before any observation."""
        return self.m2 / self.count if self.count else np.zeros_like(self.m2)

    def merge(self, count: int, mean: np.ndarray, m2: np.ndarray) -> RunningStats:
        """These statistics combined with those of another set of observations (Chan et al.'s pairwise update)."""
        if count == 0:
            return self
        if self.count == 0:
            return RunningStats(int(count), np.array(mean, dtype=np.float64), np.array(m2, dtype=np.float64))
        total = self.count + count
        delta = mean - self.mean
        return RunningStats(total, self.mean + delta * (count / total),
                            self.m2 + m2 + delta * delta * (self.count * count / total))

    def merge_episodes(self, episodes: EpisodeStats, skip: set[int] | frozenset[int] = frozenset()) -> RunningStats:
        """Merge every episode's statistics in episode order, leaving out the episodes in ``skip`` (failed ones)."""
        stats = self
        for i in range(len(episodes.count)):
            if i not in skip:
                stats = stats.merge(int(episodes.count[i]), episodes.mean[i], episodes.m2[i])
        return stats

    def normalizer(self, config: NormConfig) -> ObsNorm:
        """The normalizer these statistics give (identity mean/std before the first observation)."""
        std = np.maximum(np.sqrt(self.var), config.std_floor) if self.count else np.ones_like(self.mean)
        return ObsNorm(self.mean.copy(), std, config.clip)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for a checkpoint (see :meth:`from_arrays`)."""
        return {"obs_count": np.array(self.count, dtype=np.int64), "obs_mean": self.mean, "obs_m2": self.m2}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> RunningStats:
        count, mean, m2 = int(arrays["obs_count"]), arrays["obs_mean"], arrays["obs_m2"]
        if count < 0 or mean.shape != m2.shape or mean.ndim != 1 or not (np.isfinite(mean).all()
                                                                        and np.isfinite(m2).all()):
            raise ConfigError("malformed observation statistics")
        return cls(count, mean.astype(np.float64), m2.astype(np.float64))


class EpisodeStats:
    """Per-episode running statistics of the observations ``n`` episodes' policies saw (Welford, vectorised)."""

    def __init__(self, n: int, dim: int) -> None:
        self.count = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros((n, dim))
        self.m2 = np.zeros((n, dim))

    def add(self, rows: np.ndarray, obs: np.ndarray) -> None:
        """One observation for each episode in ``rows``."""
        x = np.asarray(obs, dtype=np.float64)
        self.count[rows] += 1
        delta = x - self.mean[rows]
        mean = self.mean[rows] + delta / self.count[rows, None]
        self.mean[rows] = mean
        self.m2[rows] += delta * (x - mean)
