"""A robot's behaviour repertoire: the elites of a MAP-Elites grid, one gait per cell, as a file it ships with.

``<profile>.repertoire.npz`` lives beside the profile (built-in robots: package data). It holds every elite's
policy (the profile's shape), the observation normalizer they all act with (the factory's), each elite's cell,
descriptor, shadow fitness and standard return, and the lineage that replays the GHN of every elite SR-GHN wrote
(:mod:`srghn.sim.srghn_emitter`: three integers per ancestor, the factory GHN as the root). :func:`load_repertoire`
checks it against the profile; anything malformed is a :class:`~srghn.CheckpointError` naming the file.

Built by :mod:`srghn.sim.repertoire_build` (``srghn-ctl factory build --repertoire``); shown and exported by
``srghn-ctl repertoire``; searched under an identified damage by the daemon (docs/repertoire.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srghn import CheckpointError, ConfigError
from srghn.controller.normalizer import ObsNorm
from srghn.controller.npz import read_npz, write_npz
from srghn.sim.profiles import RobotProfile
from srghn.sim.repertoire_config import RepertoireConfig

REPERTOIRE_FORMAT = "srghn.repertoire/1"
REPERTOIRE_SUFFIX = ".repertoire.npz"
_ARRAYS = ("policies", "cells", "measures", "objective", "returns", "uids", "iterations", "lineage", "roots",
           "norm_mean", "norm_std")


@dataclass(frozen=True)
class Repertoire:
    """Every elite of a robot's repertoire, rows in cell order."""

    config: RepertoireConfig
    policies: np.ndarray
    """``(n, P)`` float32."""
    cells: np.ndarray
    """``(n,)`` int64 cell index in the grid (row-major over the descriptor dimensions)."""
    measures: np.ndarray
    """``(n, d)`` the descriptor the elite was measured with."""
    objective: np.ndarray
    """``(n,)`` shadow fitness (return minus the profile's offset per step) in nominal."""
    returns: np.ndarray
    """``(n,)`` standard environment return in nominal."""
    uids: np.ndarray
    """``(n,)`` int64: the lineage uid of the GHN that wrote the elite, -1 for an elite no GHN wrote."""
    iterations: np.ndarray
    """``(n,)`` int64: the build iteration that scored the elite (its episode seeds replay the score)."""
    lineage: np.ndarray
    """``(m, 3)`` int64 rows (uid, parent uid, reproduction seed) of every ancestor of an elite."""
    roots: np.ndarray
    """``(r, D)`` float32 GHN parameters of the lineage's roots (the factory GHN)."""
    norm: ObsNorm | None
    meta: dict = field(default_factory=dict)
    """Provenance: the build's budget, seed, emitters, statistics, command and code revision."""

    def __len__(self) -> int:
        return len(self.cells)

    def grid_index(self, cell: int) -> tuple[int, ...]:
        """The cell's bin in every descriptor dimension."""
        return tuple(int(i) for i in np.unravel_index(cell, (self.config.bins,) * self.config.descriptor.size))

    def row(self, cell: int) -> int:
        """The row of the elite in ``cell``; ConfigError naming the cell when it is empty or out of the grid."""
        if not 0 <= cell < self.config.cells:
            raise ConfigError(f"cell must be in 0..{self.config.cells - 1}, got {cell}")
        hit = np.flatnonzero(self.cells == cell)
        if not hit.size:
            raise ConfigError(f"cell {cell} {self.grid_index(cell)} holds no elite; {len(self)} of "
                              f"{self.config.cells} cells do (see `srghn-ctl repertoire show`)")
        return int(hit[0])

    def best(self, k: int = 1) -> np.ndarray:
        """Rows of the ``k`` elites with the highest shadow fitness, best first."""
        return np.argsort(-self.objective, kind="stable")[:k]

    def elite_id(self, row: int) -> str:
        """A stable name for an elite: the robot, the cell, and a digest of its policy."""
        digest = hashlib.sha256(self.policies[row].tobytes()).hexdigest()[:7]
        return f"{self.meta.get('robot', 'robot')}-rep-c{int(self.cells[row])}-{digest}"


def summary(repertoire: Repertoire, top: int = 10) -> dict:
    """What ``repertoire show`` prints: counts, statistics, provenance and the ``top`` best elites."""
    r, meta = repertoire, repertoire.meta
    best = [{"cell": int(r.cells[i]), "bins": list(r.grid_index(int(r.cells[i]))), "return": float(r.returns[i]),
             "fitness": float(r.objective[i]), "descriptor": [float(v) for v in r.measures[i]],
             "ghn": bool(r.uids[i] >= 0), "id": r.elite_id(int(i))} for i in r.best(top)]
    return {"robot": meta.get("robot"), "elites": len(r), "cells": r.config.cells,
            "coverage": round(len(r) / r.config.cells, 4), "qd_score": meta.get("stats", {}).get("qd_score"),
            "env_steps": meta.get("env_steps"), "emitters": meta.get("emitters"), "command": meta.get("command"),
            "descriptor": r.config.descriptor.to_dict(), "bins": r.config.bins, "best": best}


def repertoire_path(profile: RobotProfile) -> Path:
    """Where the robot's repertoire lives: beside its profile file."""
    if not profile.source:
        raise ConfigError(f"profile {profile.name!r} was not loaded from a file, so it has no repertoire file")
    source = Path(profile.source)
    return source.with_name(source.stem + REPERTOIRE_SUFFIX)


def save_repertoire(path: Path, repertoire: Repertoire) -> None:
    """Write the file (temp -> fsync -> rename)."""
    r = repertoire
    arrays = {"policies": np.asarray(r.policies, np.float32), "cells": np.asarray(r.cells, np.int64),
              "measures": np.asarray(r.measures, np.float64), "objective": np.asarray(r.objective, np.float64),
              "returns": np.asarray(r.returns, np.float64), "uids": np.asarray(r.uids, np.int64),
              "iterations": np.asarray(r.iterations, np.int64),
              "lineage": np.asarray(r.lineage, np.int64).reshape(-1, 3), "roots": np.asarray(r.roots, np.float32),
              "norm_mean": np.zeros(0) if r.norm is None else r.norm.mean,
              "norm_std": np.zeros(0) if r.norm is None else r.norm.std}
    meta = {**r.meta, "format": REPERTOIRE_FORMAT, "config": r.config.to_dict(),
            "norm_clip": None if r.norm is None else r.norm.clip}
    write_npz(path, arrays, meta)


def load_repertoire(profile: RobotProfile, path: Path | None = None) -> Repertoire:
    """The robot's repertoire (from ``path``, default beside the profile), checked against the profile."""
    if profile.repertoire is None:
        raise ConfigError(f"robot {profile.name!r} has no [repertoire] table, so it has no repertoire")
    path = Path(path) if path is not None else repertoire_path(profile)
    if not path.is_file():
        raise ConfigError(f"robot {profile.name!r} has no repertoire ({path} does not exist); build one with "
                          f"`srghn-ctl factory build --robot {profile.name} --repertoire`")
    arrays, meta = read_npz(path, REPERTOIRE_FORMAT, _ARRAYS)
    config, spec = profile.repertoire, profile.policy
    stored = meta.get("config", {})
    if stored.get("descriptor") != config.descriptor.to_dict() or stored.get("bins") != config.bins:
        raise CheckpointError(f"{path}: built for descriptor {stored.get('descriptor')} with {stored.get('bins')} "
                              "bins, which the profile's [repertoire] table no longer names; rebuild it")
    n, d = len(arrays["cells"]), config.descriptor.size
    shapes = {"policies": (n, spec.num_params), "measures": (n, d), "objective": (n,), "returns": (n,),
              "uids": (n,), "iterations": (n,)}
    bad = [k for k, shape in shapes.items() if arrays[k].shape != shape]
    if bad or arrays["cells"].ndim != 1 or arrays["lineage"].ndim != 2 or arrays["lineage"].shape[1] != 3:
        raise CheckpointError(f"{path}: arrays {bad or ['cells/lineage']} do not match {n} elites of the profile's "
                              f"policy ({spec.num_params} parameters) and {d}-dimensional descriptor")
    cells = arrays["cells"]
    if n and (cells.min() < 0 or cells.max() >= config.cells or len(np.unique(cells)) != n):
        raise CheckpointError(f"{path}: cell indices must be distinct and in 0..{config.cells - 1}")
    finite = all(np.isfinite(arrays[k]).all() for k in ("policies", "measures", "objective", "returns"))
    if not finite:
        raise CheckpointError(f"{path}: holds NaN or infinite values")
    norm = None
    if arrays["norm_mean"].size:
        try:
            norm = ObsNorm(arrays["norm_mean"], arrays["norm_std"], float(meta["norm_clip"]))
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: malformed normalizer: {exc}") from exc
        if norm.dim != spec.obs_dim:
            raise CheckpointError(f"{path}: its normalizer has {norm.dim} dimensions, the policy observes "
                                  f"{spec.obs_dim}")
    if profile.observation.normalize and norm is None:
        raise CheckpointError(f"{path}: the profile normalizes observations but the repertoire has no normalizer")
    return Repertoire(config, arrays["policies"].astype(np.float32), cells.astype(np.int64),
                      arrays["measures"], arrays["objective"], arrays["returns"], arrays["uids"].astype(np.int64),
                      arrays["iterations"].astype(np.int64), arrays["lineage"].astype(np.int64),
                      arrays["roots"].astype(np.float32), norm, meta)


__all__ = ["REPERTOIRE_FORMAT", "REPERTOIRE_SUFFIX", "Repertoire", "load_repertoire", "repertoire_path",
           "save_repertoire", "summary"]
