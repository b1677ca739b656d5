"""Population and champion files: numpy ``.npz`` archives holding arrays plus one JSON ``meta`` entry.

No pickles: both load with ``allow_pickle=False``. Files are written to a temporary name, fsynced and renamed, so
a crash never leaves half a file under the real name. ``population.npz`` restores an SR-GHN strategy exactly
(random generator states included) so evolution can resume; ``champion.npz`` holds one policy and its spec.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from srghn import CheckpointError
from srghn.controller.evolution import EvolutionConfig, SRGHNStrategy
from srghn.controller.files import atomic_write
from srghn.controller.ghn import SRGHN, GHNConfig
from srghn.controller.policy import PolicySpec

POPULATION_FORMAT = "srghn.population/1"
POLICY_FORMAT = "srghn.policy/1"


def _write_npz(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())


def _read_npz(path: Path, fmt: str, keys: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict]:
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: no such file") from exc
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable .npz archive ({exc})") from exc
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: missing or malformed meta entry") from exc
    if meta.get("format") != fmt:
        raise CheckpointError(f"{path}: format {meta.get('format')!r}, expected {fmt!r}")
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise CheckpointError(f"{path}: missing arrays {missing}")
    return arrays, meta


def save_population(path: Path, strategy: SRGHNStrategy, extra: dict | None = None) -> None:
    """Everything needed to resume ``strategy`` bit-for-bit."""
    meta = {
        "format": POPULATION_FORMAT, "architecture": strategy.ghn.describe(),
        "evolution": strategy.config.to_dict(), "seed": strategy.seed, "generation": strategy.generation,
        "next_id": strategy.next_id, "best_fitness": strategy.best_fitness,
        "rng_state": strategy.rng.bit_generator.state, **(extra or {}),
    }
    _write_npz(path, {
        "params": strategy.params.numpy(), "policies": strategy.policies, "fitness": strategy.fitness,
        "ids": strategy.ids, "parent_ids": strategy.parent_ids, "rates": strategy.rates,
        "generator_state": strategy.generator.get_state().numpy(),
    }, meta)


def load_population(path: Path) -> tuple[SRGHNStrategy, dict]:
    """Rebuild a strategy saved by :func:`save_population`; returns it and the file's meta."""
    arrays, meta = _read_npz(path, POPULATION_FORMAT, ("params", "policies", "fitness", "ids", "parent_ids",
                                                       "rates", "generator_state"))
    try:
        arch = meta["architecture"]
        ghn = SRGHN(PolicySpec.from_dict(arch["policy"]), GHNConfig(**arch["ghn"]), int(arch["basis_seed"]))
        strategy = SRGHNStrategy(ghn, EvolutionConfig(**meta["evolution"]), int(meta["seed"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: architecture in meta is incomplete or invalid ({exc})") from exc
    n = strategy.config.population
    if arrays["params"].shape != (n, ghn.num_params) or arrays["policies"].shape != (n, ghn.policy.num_params):
        raise CheckpointError(f"{path}: parameter arrays do not match the stored architecture "
                              f"({arrays['params'].shape}, {arrays['policies'].shape})")
    strategy.params = torch.from_numpy(arrays["params"].astype(np.float32))
    strategy.policies = arrays["policies"].astype(np.float32)
    strategy.fitness, strategy.rates = arrays["fitness"], arrays["rates"]
    strategy.ids, strategy.parent_ids = arrays["ids"], arrays["parent_ids"]
    strategy.generator.set_state(torch.from_numpy(arrays["generator_state"]))
    strategy.rng.bit_generator.state = meta["rng_state"]
    strategy.generation, strategy.next_id = int(meta["generation"]), int(meta["next_id"])
    strategy.best_fitness = float(meta["best_fitness"])
    return strategy, meta


def save_policy(path: Path, spec: PolicySpec, params: np.ndarray, meta: dict | None = None) -> None:
    """One policy (e.g. the champion): flat parameters ``(P,)`` and its spec, plus free-form provenance."""
    params = np.asarray(params, dtype=np.float32).reshape(-1)
    if params.shape[0] != spec.num_params:
        raise CheckpointError(f"policy has {params.shape[0]} parameters, its spec needs {spec.num_params}")
    _write_npz(path, {"params": params}, {"format": POLICY_FORMAT, "policy": spec.to_dict(), **(meta or {})})


def load_policy(path: Path) -> tuple[PolicySpec, np.ndarray, dict]:
    """Inverse of :func:`save_policy`: ``(spec, params (P,), meta)``."""
    arrays, meta = _read_npz(path, POLICY_FORMAT, ("params",))
    try:
        spec = PolicySpec.from_dict(meta["policy"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: policy spec in meta is incomplete or invalid ({exc})") from exc
    params = arrays["params"]
    if params.shape != (spec.num_params,) or not np.isfinite(params).all():
        raise CheckpointError(f"{path}: parameters of shape {params.shape} (expected ({spec.num_params},)) "
                              "or not all finite")
    return spec, params.astype(np.float32), meta
