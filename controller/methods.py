"""Every evolution method by name: SR-GHN, its ablations and the baselines, built budget-matched.

A comparison fixes the SR-GHN population settings; every method then evaluates the same number of individuals
per generation (SR-GHN's ``N * (1 + K)`` with re-evaluation), so each gets the same episodes per generation.
"""

from __future__ import annotations

import dataclasses

from srghn import ConfigError
from srghn.controller.baselines import BASELINES
from srghn.controller.evolution import EvolutionConfig, SRGHNStrategy
from srghn.controller.ghn import SRGHN, GHNConfig
from srghn.controller.policy import PolicySpec
from srghn.controller.strategy import Strategy

SRGHN_VARIANTS: dict[str, tuple[dict, dict]] = {
    # name: (GHNConfig overrides, EvolutionConfig overrides)
    "srghn": ({}, {}),
    "srghn-fixed-rate": ({"fixed_rate": 0.5}, {}),
    "srghn-m1": ({"rate_outputs": 1}, {}),
    "srghn-mean": ({"rate_reduce": "mean"}, {}),
    "srghn-min": ({"rate_reduce": "min"}, {}),
    "srghn-gaussian": ({"mutation": "gaussian"}, {}),
    "srghn-random-basis": ({"head": "random_basis"}, {}),
    "srghn-random-selection": ({}, {"random_selection": True}),
    # survivors keep the fitness they were selected with (re-measured only after a regime change): fewer
    # evaluations per generation (N * K) than the others get, a less robust fitness, a faster hill-climb
    "srghn-no-reeval": ({}, {"reevaluate": False}),
    # children win ties: a converged population keeps turning over, so the rate is selected for offspring that
    # keep the fitness cap (see EvolutionConfig.ties_to_children)
    "srghn-ties-children": ({}, {"ties_to_children": True}),
    "srghn-m1-ties-children": ({"rate_outputs": 1}, {"ties_to_children": True}),
    # attempts at a rate that falls once converged yet rises after a switch (docs/results.md, "The heritable
    # mutation rate"); only rate-first with the child factor (last) does both, in 4 of 5 seeds
    "srghn-child-factor": ({}, {"child_factor": 0.5}),  # the reference implementation's child factor
    "srghn-m1-child-factor": ({"rate_outputs": 1}, {"child_factor": 0.5}),
    # (mu, lambda): only children survive; K grows by one so the evaluations per generation stay the same
    "srghn-comma": ({}, {"selection": "comma"}),
    "srghn-m1-comma": ({"rate_outputs": 1}, {"selection": "comma"}),
    # the rate layer's own tensors mutate at the max of the M outputs, the rest at their mean
    "srghn-split-rate": ({"rate_reduce": "mean", "rate_head_reduce": "max"}, {"ties_to_children": True}),
    # of each parent's two children one is mutated at the min and one at the max of the M outputs
    "srghn-child-rates": ({"child_rates": ("min", "max")}, {}),
    # a child's rate layer mutates first, the rest of it at its own new rate
    "srghn-rate-first": ({"rate_first": True}, {"ties_to_children": True}),
    # rate-first with the child factor 0.5 (turnover at the cap without ties to children)
    "srghn-rate-first-child-factor": ({"rate_first": True}, {"child_factor": 0.5}),
}
METHODS = (*SRGHN_VARIANTS, *BASELINES)


def evaluations_per_generation(evolution: EvolutionConfig) -> int:
    """Individuals SR-GHN evaluates per generation once its parents have fitness."""
    parents = evolution.reevaluate and evolution.selection == "plus"
    return evolution.population * (evolution.children + (1 if parents else 0))


def build_strategy(method: str, policy: PolicySpec, ghn: GHNConfig, evolution: EvolutionConfig,
                   seed: int) -> Strategy:
    """The strategy called ``method``, its budget matched to SR-GHN with ``evolution``."""
    if method in SRGHN_VARIANTS:
        ghn_overrides, evolution_overrides = SRGHN_VARIANTS[method]
        config = dataclasses.replace(ghn, **ghn_overrides)
        variant = dataclasses.replace(evolution, **evolution_overrides)
        if variant.selection == "comma" and evolution.selection == "plus":
            # parents are not evaluated under (mu, lambda): one more child each keeps the budget
            variant = dataclasses.replace(variant, children=evaluations_per_generation(evolution) // variant.population)
        return SRGHNStrategy(SRGHN(policy, config, basis_seed=seed), variant, seed)
    if method not in BASELINES:
        raise ConfigError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    cls, config_cls = BASELINES[method]
    budget = evaluations_per_generation(evolution)
    if method == "openes":
        config = config_cls(popsize=max(2, budget - budget % 2))  # antithetic pairs: an odd budget loses one
    elif method == "cmaes":
        config = config_cls(popsize=budget)
    else:
        config = config_cls(popsize=budget, elites=max(1, budget // 10), parents=max(2, budget // 3))
    return cls(policy, config, seed)
