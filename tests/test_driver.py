"""The evolution driver: named seed streams, the normalizer in checkpoints, bit-for-bit resume, starting points."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from srghn import CheckpointError, ConfigError
from srghn.controller.checkpoint import load_policy, load_population
from srghn.controller.normalizer import NormConfig
from srghn.controller.seeding import RunSeeds
from srghn.sim.driver import Driver, RunSpec
from srghn.sim.evaluator import InProcessEvaluator
from srghn.sim.run import EvolveSettings, run_evolve


@pytest.fixture
def normalized(cartpole):
    return dataclasses.replace(cartpole, observation=NormConfig(normalize=True))


def metrics(path):
    return [{k: v for k, v in json.loads(line).items() if k != "timing"} for line in path.read_text().splitlines()]


def test_seed_streams_are_independent_and_recorded(tmp_path, cartpole):
    seeds = RunSeeds.from_seed(5)
    values = [seeds.basis, seeds.init, seeds.strategy, seeds.episodes]
    assert len(set(values)) == 4 and all(0 <= v < 2**63 for v in values)
    assert RunSeeds.from_seed(5) == seeds and RunSeeds.from_seed(6) != seeds
    # the GHN's random basis depends on the seed only, not on the population drawn beside it
    small = Driver.start(RunSpec(cartpole, seed=5, population=2), InProcessEvaluator(cartpole))
    large = Driver.start(RunSpec(cartpole, seed=5, population=6), InProcessEvaluator(cartpole))
    assert torch.equal(small.strategy.ghn.update_basis, large.strategy.ghn.update_basis)
    summary = run_evolve(EvolveSettings(cartpole, tmp_path / "run", generations=2, seed=5, population=2,
                                        backend="inprocess"))
    assert summary["seeds"] == seeds.to_dict()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["seeds"] == seeds.to_dict()


def test_every_individual_of_a_generation_sees_the_normalizer_of_the_earlier_ones(normalized):
    driver = Driver.start(RunSpec(normalized, seed=1, population=3), InProcessEvaluator(normalized))
    assert np.array_equal(driver.next_norm().std, np.ones(4))  # identity before any observation
    record = driver.step("nominal")
    assert driver.scored_norm is not None and np.array_equal(driver.scored_norm.mean, np.zeros(4))
    assert driver.obs_stats.count == record.env_steps
    following = driver.next_norm()
    np.testing.assert_array_equal(following.mean, driver.obs_stats.mean)
    driver.step("nominal")
    assert driver.scored_norm == following
    plain = Driver.start(RunSpec(dataclasses.replace(normalized, observation=NormConfig()), seed=1, population=3),
                         InProcessEvaluator(normalized))
    assert plain.next_norm() is None


def test_resume_continues_bit_for_bit_with_the_normalizer(tmp_path, normalized):
    run = dict(population=3, seed=2, backend="inprocess", switch_at=3)
    run_evolve(EvolveSettings(normalized, tmp_path / "whole", generations=6, **run))
    first = run_evolve(EvolveSettings(normalized, tmp_path / "split", generations=4, **run))
    assert first["completed"] and first["normalized"]
    population = load_population(tmp_path / "split" / "population.npz")
    assert population.obs_stats.count > 0 and population.norm is not None  # the checkpoint keeps the normalizer
    champion = load_policy(tmp_path / "split" / "champion.npz")
    np.testing.assert_array_equal(champion.norm.mean, population.norm.mean)
    assert champion.ghn is not None
    np.testing.assert_array_equal(champion.ghn.generate(torch.from_numpy(champion.ghn_params)[None])[0].numpy(),
                                  champion.params)  # the GHN in the file writes the policy in the file
    run_evolve(EvolveSettings(normalized, tmp_path / "split", generations=6, resume=True, **run))
    assert metrics(tmp_path / "split" / "metrics.jsonl") == metrics(tmp_path / "whole" / "metrics.jsonl")


def test_an_existing_run_is_never_overwritten_and_resume_checks_its_settings(tmp_path, cartpole):
    run_evolve(EvolveSettings(cartpole, tmp_path / "run", generations=2, population=2, backend="inprocess"))
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        EvolveSettings(cartpole, tmp_path / "run", generations=3, population=2)
    with pytest.raises(ConfigError, match="other settings"):
        run_evolve(EvolveSettings(cartpole, tmp_path / "run", generations=3, population=2, seed=9, resume=True,
                                  backend="inprocess"))
    with pytest.raises(ConfigError, match="no checkpointed run"):
        EvolveSettings(cartpole, tmp_path / "fresh", generations=3, resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        EvolveSettings(cartpole, tmp_path / "file", generations=3)


def test_a_run_starts_from_another_runs_champion_or_population(tmp_path, normalized):
    run_evolve(EvolveSettings(normalized, tmp_path / "parent", generations=3, population=4, backend="inprocess"))
    parent = load_policy(tmp_path / "parent" / "champion.npz")
    for source in (tmp_path / "parent", tmp_path / "parent" / "champion.npz"):
        driver = Driver.start(RunSpec(normalized, seed=3, population=5, init=str(source)),
                              InProcessEvaluator(normalized))
        assert driver.obs_stats.count == load_population(tmp_path / "parent" / "population.npz").obs_stats.count
        assert driver.strategy.params.shape[0] == 5
    grown = Driver.start(RunSpec(normalized, seed=3, population=5, init=str(tmp_path / "parent" / "champion.npz")),
                         InProcessEvaluator(normalized))
    np.testing.assert_array_equal(grown.strategy.params[0].numpy(), parent.ghn_params)  # the original first
    np.testing.assert_array_equal(grown.strategy.policies[0], parent.params)
    assert not np.array_equal(grown.strategy.policies[1], parent.params)  # then its self-mutated children
    warm = Driver.start(RunSpec(normalized, "openes", seed=3, population=2,
                                init=str(tmp_path / "parent" / "champion.npz")), InProcessEvaluator(normalized))
    np.testing.assert_array_equal(warm.strategy.mean, parent.params.astype(np.float64))  # a warm-started baseline
    with pytest.raises(ConfigError, match="no such path"):
        RunSpec(normalized, init=str(tmp_path / "nowhere"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="neither a population nor a policy"):
        Driver.start(RunSpec(normalized, init=str(tmp_path / "junk.npz")), InProcessEvaluator(normalized))



def test_a_run_resumes_after_its_init_file_moved_but_not_after_it_changed(tmp_path, cartpole):
    """The --init file's bytes decide the numbers, not where it lies (a run moved to another machine or venv)."""
    run_evolve(EvolveSettings(cartpole, tmp_path / "parent", generations=2, population=3, backend="inprocess"))
    source = tmp_path / "a" / "champion.npz"
    source.parent.mkdir()
    source.write_bytes((tmp_path / "parent" / "champion.npz").read_bytes())
    run = dict(population=3, seed=4, backend="inprocess")
    run_evolve(EvolveSettings(cartpole, tmp_path / "whole", generations=3, init=str(source), **run))
    run_evolve(EvolveSettings(cartpole, tmp_path / "split", generations=2, init=str(source), **run))
    moved = source.rename(tmp_path / "moved.npz")
    run_evolve(EvolveSettings(cartpole, tmp_path / "split", generations=3, init=str(moved), resume=True, **run))
    assert metrics(tmp_path / "split" / "metrics.jsonl") == metrics(tmp_path / "whole" / "metrics.jsonl")
    other = tmp_path / "other.npz"
    other.write_bytes((tmp_path / "split" / "champion.npz").read_bytes())
    with pytest.raises(ConfigError, match="other settings"):
        run_evolve(EvolveSettings(cartpole, tmp_path / "split", generations=4, init=str(other), resume=True, **run))


def test_an_update_clip_overrides_the_profiles_or_the_files_and_is_part_of_the_identity(tmp_path, cartpole):
    run_evolve(EvolveSettings(cartpole, tmp_path / "parent", generations=2, population=3, backend="inprocess"))
    source = str(tmp_path / "parent" / "champion.npz")
    parent = load_policy(source)
    kept = Driver.start(RunSpec(cartpole, seed=3, population=6, init=source), InProcessEvaluator(cartpole))
    fine = Driver.start(RunSpec(cartpole, seed=3, population=6, init=source, update_clip=0.01),
                        InProcessEvaluator(cartpole))
    assert kept.strategy.ghn.config.update_clip == parent.ghn.config.update_clip != 0.01
    assert fine.strategy.ghn.config.update_clip == 0.01
    # the grown children stay within the clip (plus the 1e-3 noise floor) of the original; unclipped they do not
    for driver, bounded in ((fine, True), (kept, False)):
        step = (driver.strategy.params[1:] - driver.strategy.params[0]).abs().max().item()
        assert (step < 0.02) is bounded, step
    scratch = Driver.start(RunSpec(cartpole, population=2, update_clip=0.05), InProcessEvaluator(cartpole))
    assert scratch.strategy.ghn.config.update_clip == 0.05
    assert RunSpec(cartpole, update_clip=0.05).identity()["update_clip"] == 0.05
    assert "update_clip" not in RunSpec(cartpole).identity()  # runs from before the flag keep resuming
    run_evolve(EvolveSettings(cartpole, tmp_path / "fine", generations=1, population=2, update_clip=0.05,
                              backend="inprocess"))
    with pytest.raises(ConfigError, match="other settings"):
        run_evolve(EvolveSettings(cartpole, tmp_path / "fine", generations=2, population=2, resume=True,
                                  backend="inprocess"))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="--update-clip must be finite and > 0"):
            RunSpec(cartpole, update_clip=bad)
    with pytest.raises(ConfigError, match="SR-GHN setting"):
        RunSpec(cartpole, "openes", update_clip=0.1)


def test_a_clip_schedule_overrides_the_profiles_and_is_part_of_the_identity(cartpole):
    spec = RunSpec(cartpole, population=2, update_clip=0.05, update_clip_decay=0.9, update_clip_min=0.01)
    config = Driver.start(spec, InProcessEvaluator(cartpole)).strategy.ghn.config
    assert [config.clip_at(g) for g in (0, 1, 30)] == [0.05, pytest.approx(0.045), 0.01]
    assert {k: spec.identity()[k] for k in ("update_clip", "update_clip_decay", "update_clip_min")} == {
        "update_clip": 0.05, "update_clip_decay": 0.9, "update_clip_min": 0.01}
    assert "update_clip_decay" not in RunSpec(cartpole, update_clip=0.05).identity()
    for kwargs, message in (({"update_clip_decay": 0.0}, "--update-clip-decay must be in \\(0, 1\\], got 0.0"),
                            ({"update_clip_decay": 1.5}, "--update-clip-decay must be in"),
                            ({"update_clip_min": -0.1}, "--update-clip-min must be finite and >= 0, got -0.1"),
                            ({"update_clip_min": float("inf")}, "--update-clip-min must be finite")):
        with pytest.raises(ConfigError, match=message):
            RunSpec(cartpole, **kwargs)
    with pytest.raises(ConfigError, match="--update-clip-decay is an SR-GHN setting"):
        RunSpec(cartpole, "openes", update_clip_decay=0.9)
    # a floor above the clip is told with the flags that made it
    with pytest.raises(ConfigError, match="--update-clip 0.01, --update-clip-min 0.02: ghn needs"):
        Driver.start(RunSpec(cartpole, population=2, update_clip=0.01, update_clip_min=0.02),
                     InProcessEvaluator(cartpole))


def test_only_a_driver_asked_for_its_history_keeps_the_fitness_it_was_told(tmp_path, cartpole):
    """The daemon's run never ends: its driver must not keep a growing list of every generation's fitness."""
    endless = Driver.start(RunSpec(cartpole, seed=0, population=2), InProcessEvaluator(cartpole))
    kept = Driver.start(RunSpec(cartpole, seed=0, population=2), InProcessEvaluator(cartpole), history=True)
    for driver in (endless, kept):
        list(driver.run(3))
    assert endless.told is None and [f.shape for f in kept.told] == [(6,)] * 3
    with pytest.raises(CheckpointError, match="keeps no history"):
        endless.save_progress(tmp_path / "progress.npz")
    kept.save_progress(tmp_path / "progress.npz")
    again = Driver.replay(tmp_path / "progress.npz", kept.spec, InProcessEvaluator(cartpole))
    assert [r.best for r in again.run(5)] == [r.best for r in kept.run(5)]  # the same two generations next
