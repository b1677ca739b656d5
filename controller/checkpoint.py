"""Population and policy files: numpy ``.npz`` archives holding arrays plus one JSON ``meta`` entry.

No pickles: both load with ``allow_pickle=False``. Files are written to a temporary name, fsynced and renamed, so
a crash never leaves half a file under the real name.

* ``population.npz`` restores an SR-GHN strategy exactly (random generator states included) together with the
  run's observation statistics, so evolution resumes bit for bit;
* a policy file (``champion.npz``, a factory file) holds one policy, its spec and the observation normalizer it
  was scored with; when it came from SR-GHN, also the GHN that wrote it (one row and its architecture) and the
  observation statistics, so a new population can be grown from it;
* ``progress.npz`` holds a run of any strategy as the fitness vectors it was told, generation by generation: a
  strategy is a deterministic function of its seed and of the fitness it is told, so replaying them rebuilds it
  exactly (how a bench resumes its baselines, which have no population file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from srghn import CheckpointError
from srghn.controller.evolution import EvolutionConfig, SRGHNStrategy
from srghn.controller.ghn import SRGHN, GHNConfig
from srghn.controller.normalizer import ObsNorm, RunningStats
from srghn.controller.npz import read_npz as read_versioned
from srghn.controller.npz import write_npz
from srghn.controller.policy import PolicySpec

POPULATION_FORMAT = "srghn.population/2"
POLICY_FORMAT = "srghn.policy/2"
PROGRESS_FORMAT = "srghn.progress/1"
_READABLE = {POPULATION_FORMAT: ("srghn.population/1",), POLICY_FORMAT: ("srghn.policy/1",), PROGRESS_FORMAT: ()}
"""Older formats each format still reads (they lack the observation statistics and the GHN)."""


def read_npz(path: Path, fmt: str, keys: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict]:
    return read_versioned(path, fmt, keys, also=_READABLE.get(fmt, ()))


def _norm_arrays(norm: ObsNorm | None, stats: RunningStats | None) -> tuple[dict[str, np.ndarray], dict]:
    arrays, meta = {}, {}
    if stats is not None:
        arrays.update(stats.to_arrays())
    if norm is not None:
        arrays.update(norm_mean=norm.mean, norm_std=norm.std)
        meta["obs_norm_clip"] = norm.clip
    return arrays, meta


def _read_norm(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> tuple[ObsNorm | None, RunningStats | None]:
    try:
        stats = RunningStats.from_arrays(arrays) if "obs_count" in arrays else None
        norm = (ObsNorm(arrays["norm_mean"], arrays["norm_std"], float(meta["obs_norm_clip"]))
                if "norm_mean" in arrays else None)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed observation normalizer ({exc})") from exc
    return norm, stats


def _architecture(path: Path, arch: dict) -> SRGHN:
    try:
        return SRGHN(PolicySpec.from_dict(arch["policy"]), GHNConfig(**arch["ghn"]), int(arch["basis_seed"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: GHN architecture in meta is incomplete or invalid ({exc})") from exc


@dataclass
class PopulationFile:
    """What :func:`load_population` read."""

    strategy: SRGHNStrategy
    obs_stats: RunningStats | None
    """Observation statistics of every shadow episode so far (they give the next generation's normalizer)."""
    norm: ObsNorm | None
    """The normalizer the last generation was scored with (the one a champion of it is exported with)."""
    meta: dict = field(default_factory=dict)


def save_population(path: Path, strategy: SRGHNStrategy, extra: dict | None = None, *,
                    obs_stats: RunningStats | None = None, norm: ObsNorm | None = None) -> None:
    """Everything needed to resume ``strategy`` bit-for-bit, with the run's observation statistics."""
    norm_arrays, norm_meta = _norm_arrays(norm, obs_stats)
    meta = {
        "format": POPULATION_FORMAT, "architecture": strategy.ghn.describe(),
        "evolution": strategy.config.to_dict(), "seed": strategy.seed, "generation": strategy.generation,
        "next_id": strategy.next_id, "best_fitness": strategy.best_fitness,
        "rng_state": strategy.rng.bit_generator.state, **norm_meta, **(extra or {}),
    }
    write_npz(path, {
        "params": strategy.params.numpy(), "policies": strategy.policies, "fitness": strategy.fitness,
        "ids": strategy.ids, "parent_ids": strategy.parent_ids, "rates": strategy.rates,
        "generator_state": strategy.generator.get_state().numpy(), **norm_arrays,
    }, meta)


def load_population(path: Path) -> PopulationFile:
    """Rebuild a strategy saved by :func:`save_population`, with its observation statistics and meta."""
    arrays, meta = read_npz(path, POPULATION_FORMAT, ("params", "policies", "fitness", "ids", "parent_ids",
                                                       "rates", "generator_state"))
    ghn = _architecture(path, meta.get("architecture", {}))
    try:
        strategy = SRGHNStrategy(ghn, EvolutionConfig(**meta["evolution"]), int(meta["seed"]),
                                 torch.from_numpy(arrays["params"].astype(np.float32)))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: population settings in meta are incomplete or do not match its arrays "
                              f"({exc})") from exc
    n = strategy.config.population
    if arrays["policies"].shape != (n, ghn.policy.num_params):
        raise CheckpointError(f"{path}: parameter arrays do not match the stored architecture "
                              f"({arrays['params'].shape}, {arrays['policies'].shape})")
    strategy.policies = arrays["policies"].astype(np.float32)
    strategy.fitness, strategy.rates = arrays["fitness"], arrays["rates"]
    strategy.ids, strategy.parent_ids = arrays["ids"], arrays["parent_ids"]
    strategy.generator.set_state(torch.from_numpy(arrays["generator_state"]))
    strategy.rng.bit_generator.state = meta["rng_state"]
    strategy.generation, strategy.next_id = int(meta["generation"]), int(meta["next_id"])
    strategy.best_fitness = float(meta["best_fitness"])
    norm, stats = _read_norm(path, arrays, meta)
    return PopulationFile(strategy, stats, norm, meta)


@dataclass
class PolicyFile:
    """What :func:`load_policy` read: one policy, its normalizer, and (from SR-GHN) the GHN that wrote it."""

    spec: PolicySpec
    params: np.ndarray
    """``(P,)`` float32."""
    norm: ObsNorm | None
    meta: dict = field(default_factory=dict)
    ghn: SRGHN | None = None
    """Architecture of the GHN that wrote the policy (``None`` for a policy of a flat-vector strategy)."""
    ghn_params: np.ndarray | None = None
    """``(D,)`` float32: that GHN's own parameters (``ghn.generate`` of them gives ``params`` back)."""
    obs_stats: RunningStats | None = None


def save_policy(path: Path, spec: PolicySpec, params: np.ndarray, meta: dict | None = None, *,
                norm: ObsNorm | None = None, ghn: SRGHN | None = None, ghn_params: np.ndarray | None = None,
                obs_stats: RunningStats | None = None) -> None:
    """One policy (e.g. the champion): flat parameters ``(P,)``, its spec and normalizer, free-form provenance,
    and optionally the GHN that wrote it and the observation statistics."""
    params = np.asarray(params, dtype=np.float32).reshape(-1)
    if params.shape[0] != spec.num_params:
        raise CheckpointError(f"policy has {params.shape[0]} parameters, its spec needs {spec.num_params}")
    if norm is not None and norm.dim != spec.obs_dim:
        raise CheckpointError(f"normalizer has {norm.dim} dimensions, the policy observes {spec.obs_dim}")
    arrays, norm_meta = _norm_arrays(norm, obs_stats)
    arrays["params"] = params
    head = {"format": POLICY_FORMAT, "policy": spec.to_dict(), **norm_meta}
    if ghn is not None:
        ghn_params = np.asarray(ghn_params, dtype=np.float32).reshape(-1)
        if ghn_params.shape[0] != ghn.num_params:
            raise CheckpointError(f"GHN has {ghn_params.shape[0]} parameters, its architecture needs {ghn.num_params}")
        arrays["ghn_params"] = ghn_params
        head["architecture"] = ghn.describe()
    write_npz(path, arrays, {**head, **(meta or {})})


def load_policy(path: Path) -> PolicyFile:
    """Inverse of :func:`save_policy`."""
    arrays, meta = read_npz(path, POLICY_FORMAT, ("params",))
    try:
        spec = PolicySpec.from_dict(meta["policy"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: policy spec in meta is incomplete or invalid ({exc})") from exc
    params = arrays["params"]
    if params.shape != (spec.num_params,) or not np.isfinite(params).all():
        raise CheckpointError(f"{path}: parameters of shape {params.shape} (expected ({spec.num_params},)) "
                              "or not all finite")
    norm, stats = _read_norm(path, arrays, meta)
    if norm is not None and norm.dim != spec.obs_dim:
        raise CheckpointError(f"{path}: normalizer has {norm.dim} dimensions, the policy observes {spec.obs_dim}")
    ghn, ghn_params = None, None
    if "ghn_params" in arrays:
        ghn = _architecture(path, meta.get("architecture", {}))
        ghn_params = arrays["ghn_params"].astype(np.float32)
        if ghn_params.shape != (ghn.num_params,) or not np.isfinite(ghn_params).all() or ghn.policy != spec:
            raise CheckpointError(f"{path}: the GHN does not match its architecture or the policy spec")
    return PolicyFile(spec, params.astype(np.float32), norm, meta, ghn, ghn_params, stats)


@dataclass
class ProgressFile:
    """What :func:`load_progress` read."""

    fitness: list[np.ndarray]
    """The fitness vector told in each generation, in order (NaN where an evaluation failed)."""
    meta: dict
    obs_stats: RunningStats | None
    norm: ObsNorm | None


def save_progress(path: Path, fitness: list[np.ndarray], meta: dict, *, obs_stats: RunningStats | None = None,
                  norm: ObsNorm | None = None) -> None:
    """Every fitness vector told so far, with free-form ``meta`` (the caller's own state) and the normalizer."""
    sizes = np.array([len(f) for f in fitness], dtype=np.int64)
    flat = np.concatenate(fitness).astype(np.float64) if fitness else np.zeros(0)
    norm_arrays, norm_meta = _norm_arrays(norm, obs_stats)
    write_npz(path, {"fitness": flat, "sizes": sizes, **norm_arrays}, {"format": PROGRESS_FORMAT, **norm_meta,
                                                                         **meta})


def load_progress(path: Path) -> ProgressFile:
    """Read a file written by :func:`save_progress`."""
    arrays, meta = read_npz(path, PROGRESS_FORMAT, ("fitness", "sizes"))
    flat, sizes = arrays["fitness"], arrays["sizes"]
    if (flat.ndim != 1 or sizes.ndim != 1 or not np.issubdtype(sizes.dtype, np.integer) or (sizes < 1).any()
            or int(sizes.sum()) != flat.size):
        raise CheckpointError(f"{path}: fitness history and its generation sizes do not agree")
    norm, stats = _read_norm(path, arrays, meta)
    return ProgressFile(np.split(flat.astype(np.float64), np.cumsum(sizes)[:-1]) if sizes.size else [], meta, stats,
                        norm)
