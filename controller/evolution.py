"""(mu + lambda) evolution of an SR-GHN population as an ask/tell strategy (docs/evolution.md).

Every generation each of the N members reproduces itself K times with its own stochastic head; parents (when
their fitness must be measured again) and children are evaluated; the best N of parents + children survive.
Optionally a parent's selection score blends in its children's mean fitness (the reference's child factor).
"""

from __future__ import annotations

import numpy as np
import torch

from srghn import ConfigError
from srghn.controller.configs import EvolutionConfig
from srghn.controller.ghn import SRGHN
from srghn.controller.strategy import Champion, Strategy


class SRGHNStrategy(Strategy):
    """A population of SR-GHNs behind the ask/tell interface."""

    def __init__(self, ghn: SRGHN, config: EvolutionConfig, seed: int, params: torch.Tensor | None = None) -> None:
        """``seed`` drives reproduction and selection. ``params``: the initial population ``(N, D)`` (e.g. grown
        from a factory GHN); default: fresh individuals drawn from ``seed``'s generator."""
        super().__init__(ghn.policy)
        self.ghn, self.config, self.seed = ghn, config, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)  # random selection (control) and comma selection's tie order
        n = config.population
        if params is None:
            params = ghn.init_params(n, self.generator)
        elif tuple(params.shape) != (n, ghn.num_params) or not bool(torch.isfinite(params).all()):
            raise ConfigError(f"initial GHN population must be a finite ({n}, {ghn.num_params}) matrix, "
                              f"got {tuple(params.shape)}")
        self.params = params.to(torch.float32).contiguous()
        self.policies = ghn.generate(self.params).numpy()
        self.fitness = np.full(n, np.nan)  # NaN: not measured in the current world yet
        self.ids = np.arange(n, dtype=np.int64)
        self.parent_ids = np.full(n, -1, dtype=np.int64)
        self.next_id = n
        self.rates = np.full(n, np.nan)
        self._batch: dict | None = None

    def _ask(self) -> np.ndarray:
        k = self.config.children
        children, rates = self.ghn.reproduce(self.params, k, self.generator, self.generation)
        self.rates = rates.numpy().astype(np.float64)
        comma = self.config.selection == "comma"
        with_parents = not comma and (self.config.reevaluate or bool(np.isnan(self.fitness).any()))
        child_policies = self.ghn.generate(children).numpy()
        self._batch = {"children": children, "child_policies": child_policies, "with_parents": with_parents}
        return np.concatenate([self.policies, child_policies]) if with_parents else child_policies

    def _tell(self, fitness: np.ndarray) -> None:
        n, k = self.config.population, self.config.children
        batch = self._batch
        if batch["with_parents"]:
            parent_fitness, child_fitness = fitness[:n], fitness[n:]
        else:
            parent_fitness, child_fitness = self.fitness, fitness
        parent_score = parent_fitness
        if self.config.child_factor > 0:
            family = child_fitness.reshape(n, k).mean(axis=1)
            parent_score = (1 - self.config.child_factor) * parent_fitness + self.config.child_factor * family

        all_params = torch.cat([self.params, batch["children"]])
        all_policies = np.concatenate([self.policies, batch["child_policies"]])
        all_fitness = np.concatenate([parent_fitness, child_fitness])
        child_ids = np.arange(self.next_id, self.next_id + n * k, dtype=np.int64)
        all_ids = np.concatenate([self.ids, child_ids])
        all_parents = np.concatenate([self.parent_ids, np.repeat(self.ids, k)])
        if self.config.random_selection:
            keep = self.rng.permutation(n * (k + 1))[:n]
        elif self.config.selection == "comma":
            shuffled = self.rng.permutation(n * k)  # ties in random order, not by parent index
            keep = n + shuffled[np.argsort(-child_fitness[shuffled], kind="stable")][:n]  # children only
        else:
            score = np.concatenate([parent_score, child_fitness])
            order = np.arange(score.size)
            if self.config.ties_to_children:
                order = order[::-1]  # later entries (children) first among equals
            keep = order[np.argsort(-score[order], kind="stable")][:n]  # stable: ties in `order`
        self.params = all_params[torch.from_numpy(keep)].contiguous()
        self.policies, self.fitness = all_policies[keep], all_fitness[keep]
        self.ids, self.parent_ids = all_ids[keep], all_parents[keep]
        self.next_id += n * k
        self._batch = None

    def _invalidate(self) -> None:
        self.fitness = np.full_like(self.fitness, np.nan)

    def immigrate(self, params: torch.Tensor) -> np.ndarray:
        """GHNs from elsewhere (a repertoire's elites) take the places of the least fit individuals, unmeasured
        ones first: from the next generation on they compete like the rest, measured then. Their new ids."""
        if self._batch is not None:
            raise ConfigError("immigrants join between generations, not while one is asked and not yet told")
        params = params.to(torch.float32).reshape(-1, self.ghn.num_params)
        k = min(len(params), len(self.ids))
        if not bool(torch.isfinite(params).all()):
            raise ConfigError("immigrant GHN parameters must be finite")
        scores = np.where(np.isnan(self.fitness), -np.inf, self.fitness)
        slots = np.argsort(scores, kind="stable")[:k]
        ids = np.arange(self.next_id, self.next_id + k, dtype=np.int64)
        self.params[torch.from_numpy(slots)] = params[:k]
        self.policies[slots] = self.ghn.generate(params[:k]).numpy()
        self.fitness[slots], self.ids[slots], self.parent_ids[slots], self.next_id = np.nan, ids, -1, self.next_id + k
        return ids

    def population(self) -> np.ndarray:
        return self.policies

    def champion(self) -> Champion:
        scores = np.where(np.isnan(self.fitness), -np.inf, self.fitness)
        best = int(np.argmax(scores))
        return Champion(self.policies[best].copy(), float(self.fitness[best]), int(self.ids[best]),
                        int(self.parent_ids[best]))

    def mutation_rates(self) -> np.ndarray | None:
        return None if np.isnan(self.rates).all() else self.rates
