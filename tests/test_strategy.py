"""The SR-GHN (mu + lambda) strategy behind ask/tell, driven without any simulator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from srghn import ConfigError
from srghn.controller.evolution import EvolutionConfig, SRGHNStrategy
from srghn.controller.ghn import SRGHN
from srghn.controller.seeding import RunSeeds
from srghn.controller.strategy import StrategyError


def strategy(profile, seed=0, **evolution):
    config = dataclasses.replace(profile.evolution, **evolution)
    return SRGHNStrategy(SRGHN(profile.policy, profile.ghn, basis_seed=seed), config, seed)


def test_ask_tell_order_and_shapes_are_enforced(cartpole):
    s = strategy(cartpole)
    with pytest.raises(StrategyError, match="without a pending ask"):
        s.tell(np.zeros(30))
    batch = s.ask()
    assert batch.shape == (30, 226) and batch.dtype == np.float32  # 10 parents + 10 x 2 children
    with pytest.raises(StrategyError, match="ask\\(\\) called twice"):
        s.ask()
    with pytest.raises(StrategyError, match="got 29 fitness values for a batch of 30"):
        s.tell(np.zeros(29))


def test_selection_keeps_the_best_n_and_nan_is_worst(cartpole):
    s = strategy(cartpole)
    batch = s.ask()
    fitness = np.arange(30, dtype=float)
    fitness[29] = np.nan  # a failed evaluation never survives
    s.tell(fitness)
    np.testing.assert_array_equal(s.fitness, np.arange(28, 18, -1))
    # survivors are exactly the policies that earned those fitness values, best first
    np.testing.assert_array_equal(s.population(), batch[np.arange(28, 18, -1)])
    assert s.champion().fitness == 28 and s.best_fitness == 28 and s.generation == 1
    # lineage: children ids follow the parents', and each child names its parent
    assert s.champion().parent_id == (28 - 10) // 2


def test_parents_are_reevaluated_or_not(cartpole):
    s = strategy(cartpole, reevaluate=False)
    assert s.ask().shape[0] == 30  # first generation: parents have no fitness yet
    s.tell(np.arange(30, dtype=float))
    assert s.ask().shape[0] == 20  # then only children
    s.tell(np.zeros(20))
    s.invalidate()  # a new regime: stale fitness must be measured again
    assert s.ask().shape[0] == 30


def test_child_factor_blends_children_into_parent_scores(cartpole):
    s = strategy(cartpole, population=2, children=2, child_factor=1.0)
    s.ask()
    # parent 0 is best alone but its children are terrible; parent 1's children are excellent
    s.tell(np.array([10.0, 1.0, -50.0, -50.0, 9.0, 9.0]))
    # blended scores: parent 0 -> -50, parent 1 -> 9; parent 1 and one of its children (id 4) survive
    assert set(s.ids.tolist()) == {1, 4}


def test_random_selection_ignores_fitness(cartpole):
    s = strategy(cartpole, random_selection=True)
    s.ask()
    s.tell(np.arange(30, dtype=float))
    assert sorted(s.fitness.tolist()) != list(range(20, 30))


def test_evolution_improves_a_smooth_objective(cartpole):
    """Without a simulator: fitness = -distance of the policy to a fixed target vector."""
    s = strategy(cartpole, seed=1)
    target = np.random.default_rng(0).normal(0, 0.3, size=226).astype(np.float32)
    champions = []
    for _ in range(40):
        batch = s.ask()
        s.tell(-np.linalg.norm(batch - target, axis=1))
        champions.append(s.champion().fitness)
    assert np.all(np.diff(champions) >= 0)  # elitist with a deterministic objective: never worse
    assert champions[-1] > champions[0] + 0.01 * abs(champions[0])


def test_bad_evolution_config():
    with pytest.raises(ConfigError, match="children"):
        EvolutionConfig(children=0)
    with pytest.raises(ConfigError, match="child_factor"):
        EvolutionConfig(child_factor=1.5)


def test_ties_go_to_parents_or_to_children(cartpole):
    for to_children, expected in ((False, {0, 1}), (True, {2, 5})):
        s = strategy(cartpole, population=2, children=2, ties_to_children=to_children)
        s.ask()
        s.tell(np.array([500.0, 500.0, 500.0, 10.0, 10.0, 500.0]))  # parents 0, 1; children 2-5
        assert set(s.ids.tolist()) == expected


def test_comma_selection_keeps_only_children(cartpole):
    s = strategy(cartpole, population=2, children=3, selection="comma")
    batch = s.ask()
    assert batch.shape[0] == 6  # children only, even in the first generation: parents never compete
    s.tell(np.array([1.0, 9.0, 3.0, 8.0, 2.0, 7.0]))  # children 2..7 (parents 0 and 1 never evaluated)
    assert set(s.ids.tolist()) == {3, 5}  # the best two children, whatever their parents were worth
    np.testing.assert_array_equal(s.fitness, [9.0, 8.0])
    np.testing.assert_array_equal(s.population(), batch[[1, 3]])
    # ties: all equal children are drawn in a seeded random order, not by parent index
    picks = set()
    for seed in range(6):
        t = strategy(cartpole, seed=seed, population=2, children=3, selection="comma")
        t.ask()
        t.tell(np.full(6, 500.0))
        picks.add(tuple(sorted(t.ids.tolist())))
    assert len(picks) > 1
    with pytest.raises(ConfigError, match="selection"):
        EvolutionConfig(selection="tournament")


def test_comma_variant_is_budget_matched(cartpole):
    from srghn.controller.methods import build_strategy, evaluations_per_generation

    for population in (10, 30):
        evolution = dataclasses.replace(cartpole.evolution, population=population)
        s = build_strategy("srghn-comma", cartpole.policy, cartpole.ghn, evolution, RunSeeds.from_seed(0))
        assert s.config.selection == "comma" and s.ask().shape[0] == evaluations_per_generation(evolution)


def test_immigrants_replace_the_least_fit_and_are_measured_next_generation(cartpole):
    import torch

    s = strategy(cartpole, reevaluate=False)
    s.ask()
    s.tell(np.arange(30, dtype=float))  # survivors' fitness 29..20, best first
    others = strategy(cartpole, seed=1).params[:3]
    ids = s.immigrate(others)
    np.testing.assert_array_equal(ids, [30, 31, 32])  # after the 10 + 20 ids handed out so far
    np.testing.assert_array_equal(s.fitness[:7], np.arange(29, 22, -1))  # the fittest seven stay
    assert np.isnan(s.fitness[7:]).all() and (s.parent_ids[7:] == -1).all()
    worst_first = [9, 8, 7]  # the first immigrant takes the least fit place
    assert torch.equal(s.params[worst_first], others)
    np.testing.assert_array_equal(s.ids[worst_first], ids)
    np.testing.assert_array_equal(s.population()[worst_first], s.ghn.generate(others).numpy())
    assert s.ask().shape[0] == 30  # unmeasured immigrants: the parents are measured again with the children
    with pytest.raises(ConfigError, match="between generations"):
        s.immigrate(others)
