"""Population and champion files: exact resume, and clear refusals of damaged files."""

from __future__ import annotations

import numpy as np
import pytest

from srghn import CheckpointError
from srghn.controller.checkpoint import load_policy, load_population, save_policy, save_population
from srghn.controller.evolution import SRGHNStrategy
from srghn.controller.ghn import SRGHN


def objective(batch):
    return -np.abs(batch).sum(axis=1)


def test_loaded_population_continues_exactly(tmp_path, cartpole):
    original = SRGHNStrategy(SRGHN(cartpole.policy, cartpole.ghn, basis_seed=3), cartpole.evolution, seed=3)
    for _ in range(3):
        original.tell(objective(original.ask()))
    save_population(tmp_path / "population.npz", original, {"robot": "cartpole"})
    loaded = load_population(tmp_path / "population.npz")
    resumed, meta = loaded.strategy, loaded.meta
    assert meta["robot"] == "cartpole" and resumed.generation == 3
    np.testing.assert_array_equal(resumed.ids, original.ids)
    for _ in range(3):
        a, b = original.ask(), resumed.ask()
        np.testing.assert_array_equal(a, b)
        original.tell(objective(a))
        resumed.tell(objective(b))
    assert original.champion().id == resumed.champion().id


def test_champion_round_trip(tmp_path, cartpole):
    params = np.random.default_rng(0).normal(size=cartpole.policy.num_params).astype(np.float32)
    save_policy(tmp_path / "champion.npz", cartpole.policy, params, {"robot": "cartpole", "fitness": 500.0})
    loaded = load_policy(tmp_path / "champion.npz")
    assert loaded.spec == cartpole.policy and loaded.meta["fitness"] == 500.0 and loaded.norm is None
    np.testing.assert_array_equal(loaded.params, params)
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, then renamed


def test_damaged_files_are_refused(tmp_path, cartpole):
    with pytest.raises(CheckpointError, match="no such file"):
        load_policy(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an archive at all")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_policy(garbage)
    params = np.zeros(cartpole.policy.num_params, dtype=np.float32)
    save_policy(tmp_path / "champion.npz", cartpole.policy, params)
    with pytest.raises(CheckpointError, match="format"):
        load_population(tmp_path / "champion.npz")
    data = bytearray((tmp_path / "champion.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside the archive
    (tmp_path / "flipped.npz").write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_policy(tmp_path / "flipped.npz")
    with pytest.raises(CheckpointError, match="parameters"):
        save_policy(tmp_path / "short.npz", cartpole.policy, params[:10])
