"""Baselines and SR-GHN ablations behind ask/tell: they improve, respect the budget and are seeded."""

from __future__ import annotations

import cma
import numpy as np
import pytest

from srghn import ConfigError
from srghn.controller.baselines import BASELINES, CMAES, GESMR, SAMR
from srghn.controller.evolution import EvolutionConfig
from srghn.controller.ghn import GHNConfig
from srghn.controller.methods import METHODS, build_strategy, evaluations_per_generation
from srghn.controller.policy import PolicySpec
from srghn.controller.seeding import RunSeeds

SPEC = PolicySpec(obs_dim=3, act_dim=2, hidden=(4,))  # 26 parameters: a small smooth problem
EVOLUTION = EvolutionConfig(population=10, children=2)
TARGET = np.random.default_rng(42).uniform(-0.5, 0.5, size=SPEC.num_params)


def quadratic(batch: np.ndarray) -> np.ndarray:
    return -((batch - TARGET) ** 2).sum(axis=1)


def make(method: str, seed: int = 0):
    return build_strategy(method, SPEC, GHNConfig(), EVOLUTION, RunSeeds.from_seed(seed))


@pytest.mark.parametrize("method", [m for m in METHODS if m != "srghn-random-selection"])  # ignores fitness
def test_every_method_improves_a_quadratic_within_its_budget(method):
    strategy = make(method)
    budget = evaluations_per_generation(EVOLUTION)
    # never more than the budget; openes may lose one to antithetic pairs, srghn-no-reeval evaluates children only
    least = EVOLUTION.population * EVOLUTION.children if method == "srghn-no-reeval" else budget - 1
    first = None
    for _ in range(40):
        batch = strategy.ask()
        assert least <= batch.shape[0] <= budget
        fitness = quadratic(batch)
        first = fitness.max() if first is None else first
        strategy.tell(fitness)
    assert strategy.best_fitness > first + 0.1 * abs(first), method


def test_baselines_reach_the_optimum_region():
    for method in BASELINES:
        strategy = make(method, seed=1)
        for _ in range(150):
            strategy.tell(quadratic(strategy.ask()))
        assert strategy.champion().fitness > -0.5, method  # from about -3 at initialisation


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_batches(method):
    a, b = make(method, seed=3), make(method, seed=3)
    for _ in range(3):
        batch_a, batch_b = a.ask(), b.ask()
        np.testing.assert_array_equal(batch_a, batch_b)
        a.tell(quadratic(batch_a))
        b.tell(quadratic(batch_b))


@pytest.mark.parametrize("method", list(BASELINES))
def test_failed_evaluations_never_win(method):
    strategy = make(method)
    batch = strategy.ask()
    fitness = quadratic(batch)
    best = int(np.argmax(fitness))
    fitness[best] = np.nan
    strategy.tell(fitness)
    assert np.isfinite(strategy.champion().fitness)
    strategy.tell(quadratic(strategy.ask()))  # and the strategy carries on


def test_cmaes_is_pycma():
    strategy = make("cmaes")
    assert isinstance(strategy, CMAES) and isinstance(strategy.es, cma.CMAEvolutionStrategy)
    assert strategy.es.popsize == evaluations_per_generation(EVOLUTION)


def test_self_adaptive_rates_adapt():
    samr, gesmr = make("samr"), make("gesmr")
    assert isinstance(samr, SAMR) and isinstance(gesmr, GESMR)
    start_gesmr = gesmr.mutation_rates().copy()
    for _ in range(10):
        samr.tell(quadratic(samr.ask()))
        gesmr.tell(quadratic(gesmr.ask()))
    assert np.unique(samr.mutation_rates()).size > 1  # individuals carry their own strengths
    assert not np.array_equal(gesmr.mutation_rates(), start_gesmr)


def test_ablations_change_what_they_say():
    fixed = make("srghn-fixed-rate")
    fixed.tell(quadratic(fixed.ask()))
    np.testing.assert_allclose(fixed.mutation_rates(), 0.5)
    gaussian = make("srghn-gaussian")
    gaussian.tell(quadratic(gaussian.ask()))
    assert gaussian.mutation_rates() is None  # no heritable rate without self-reference
    assert make("srghn-m1").ghn.config.rate_outputs == 1
    assert make("srghn-min").ghn.config.rate_reduce == "min"
    assert make("srghn-random-basis").ghn.head_basis is not None  # (smaller only for large policies: see test_ghn)
    assert make("srghn-random-selection").config.random_selection
    # the rate variants
    rate_first = make("srghn-rate-first-child-factor")
    assert rate_first.ghn.config.rate_first and rate_first.config.child_factor == 0.5
    assert make("srghn-child-rates").ghn.config.child_rates == ("min", "max")
    split = make("srghn-split-rate").ghn.config
    assert (split.rate_reduce, split.rate_head_reduce) == ("mean", "max")
    comma = make("srghn-comma")
    assert comma.config.selection == "comma" and comma.config.children == EVOLUTION.children + 1


def test_unknown_method_and_bad_configs():
    with pytest.raises(ConfigError, match="unknown method 'sgd'"):
        make("sgd")
    from srghn.controller.baselines import GAConfig, OpenESConfig

    with pytest.raises(ConfigError, match="even"):
        OpenESConfig(popsize=7)
    with pytest.raises(ConfigError, match="elites"):
        GAConfig(popsize=10, elites=10)


def test_openes_step_decays_to_its_floor_and_a_constant_step_is_unchanged():
    from srghn.controller.baselines import OpenES, OpenESConfig

    decaying = OpenESConfig(popsize=30, learning_rate=0.03, learning_rate_decay=0.5, learning_rate_min=0.005)
    assert [decaying.step_size(g) for g in range(4)] == [0.03, 0.015, 0.0075, 0.005]
    runs = {}
    for name, config in (("constant", OpenESConfig(popsize=30)), ("decaying", decaying)):
        strategy, means = OpenES(SPEC, config, seed=5), []
        for _ in range(4):
            strategy.tell(quadratic(strategy.ask()))
            means.append(strategy.mean.copy())
        runs[name] = np.diff(np.stack([OpenES(SPEC, config, seed=5).mean, *means]), axis=0)
    # the same first update (same seed, same step), then Adam's moves shrink with the step
    np.testing.assert_array_equal(runs["constant"][0], runs["decaying"][0])
    ratios = np.abs(runs["decaying"][1:]).sum(axis=1) / np.abs(runs["constant"][1:]).sum(axis=1)
    assert ratios[0] < 0.75 and ratios[-1] < ratios[0]
    for bad in ({"learning_rate_decay": 0.0}, {"learning_rate_decay": 1.5}, {"learning_rate_min": 0.1}):
        with pytest.raises(ConfigError, match="learning_rate_decay"):
            OpenESConfig(**bad)
