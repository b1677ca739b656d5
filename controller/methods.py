"""Every evolution method by name: SR-GHN, its ablations and the baselines, built budget-matched.

A comparison fixes the SR-GHN population settings; every method then evaluates the same number of individuals
per generation (SR-GHN's ``N * (1 + K)`` with re-evaluation), so each gets the same episodes per generation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from srghn import ConfigError
from srghn.controller.baselines import BASELINES
from srghn.controller.evolution import EvolutionConfig, SRGHNStrategy
from srghn.controller.ghn import SRGHN, GHNConfig
from srghn.controller.policy import PolicySpec
from srghn.controller.seeding import RunSeeds
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


def srghn_variant(method: str, ghn: GHNConfig, evolution: EvolutionConfig) -> tuple[GHNConfig, EvolutionConfig]:
    """The GHN and population settings of the SR-GHN variant ``method``, budget-matched to ``evolution``."""
    ghn_overrides, evolution_overrides = SRGHN_VARIANTS[method]
    config = dataclasses.replace(ghn, **ghn_overrides)
    variant = dataclasses.replace(evolution, **evolution_overrides)
    if variant.selection == "comma" and evolution.selection == "plus":
        # parents are not evaluated under (mu, lambda): one more child each keeps the budget
        variant = dataclasses.replace(variant, children=evaluations_per_generation(evolution) // variant.population)
    return config, variant


def baseline_config(method: str, evolution: EvolutionConfig, settings: Mapping[str, Any] | None = None) -> Any:
    """The config of baseline ``method``: its population is SR-GHN's evaluations per generation, ``settings``
    (the profile's ``[baselines.<method>]`` table) override the rest."""
    if method not in BASELINES:
        raise ConfigError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    config_cls = BASELINES[method][1]
    budget = evaluations_per_generation(evolution)
    if method == "openes":
        sizes = {"popsize": max(2, budget - budget % 2)}  # antithetic pairs: an odd budget loses one
    elif method == "cmaes":
        sizes = {"popsize": budget}
    else:
        sizes = {"popsize": budget, "elites": max(1, budget // 10), "parents": max(2, budget // 3)}
    return config_cls(**{**sizes, **(settings or {})})


def build_strategy(method: str, policy: PolicySpec, ghn: GHNConfig, evolution: EvolutionConfig, seeds: RunSeeds,
                   baselines: Mapping[str, Mapping[str, Any]] | None = None,
                   init: np.ndarray | None = None) -> Strategy:
    """The strategy called ``method``, its budget matched to SR-GHN with ``evolution``, seeded from ``seeds``'
    streams. ``baselines``: per-method settings of the baselines. ``init``: initial policies ``(n, P)`` for a
    baseline (a warm start); default: fresh ones from the ``init`` stream (SR-GHN: fresh GHNs from it)."""
    if method in SRGHN_VARIANTS:
        if init is not None:
            raise ConfigError("SR-GHN starts from GHNs, not policies: grow it from a GHN population instead")
        config, variant = srghn_variant(method, ghn, evolution)
        arch = SRGHN(policy, config, basis_seed=seeds.basis)
        params = arch.init_params(variant.population, torch.Generator().manual_seed(seeds.init))
        return SRGHNStrategy(arch, variant, seeds.strategy, params)
    config = baseline_config(method, evolution, (baselines or {}).get(method))
    if init is None:
        init = policy.initial(config.popsize, np.random.default_rng(seeds.init))
    return BASELINES[method][0](policy, config, seeds.strategy, init)
