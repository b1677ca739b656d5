"""One evolution run, built and driven by one object: what ``evolve``, ``bench`` and the daemon share.

A :class:`RunSpec` says what decides a run's numbers (profile, method, seed, population, episodes, where the
initial population comes from). :meth:`Driver.start` builds the strategy from it, :meth:`Driver.resume` rebuilds
it from a checkpoint (SR-GHN's population file), :meth:`Driver.replay` from the fitness a run of any strategy was
told; :meth:`Driver.step` runs one generation in a given regime and returns its record.

Per generation: if the regime changed, the strategy is told its stored fitness is stale (fitness from two worlds
is never compared in one selection); the generation's episode seeds are drawn; every individual is scored with
the same observation normalizer, frozen from the statistics of every earlier shadow episode; then this
generation's observations join those statistics (merged in episode order: the same for any number of workers).

Randomness comes from one seed through named streams (:class:`~srghn.controller.seeding.RunSeeds`): the GHN's
random bases, the initial population, the strategy and the episode seeds never share a generator. A checkpoint
holds every generator state, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from srghn import CheckpointError, ConfigError
from srghn.controller.checkpoint import (
    PolicyFile,
    PopulationFile,
    load_policy,
    load_population,
    load_progress,
    save_policy,
    save_population,
    save_progress,
)
from srghn.controller.evolution import SRGHNStrategy
from srghn.controller.ghn import SRGHN, GHNConfig
from srghn.controller.methods import METHODS, SRGHN_VARIANTS, build_strategy, srghn_variant
from srghn.controller.normalizer import ObsNorm, RunningStats
from srghn.controller.seeding import RunSeeds
from srghn.controller.strategy import Strategy, diversity
from srghn.sim.evaluator import Evaluator
from srghn.sim.factory import load_factory
from srghn.sim.preflight import INIT_FACTORY, INIT_SCRATCH, check_init, check_update_clip
from srghn.sim.profiles import RobotProfile
from srghn.sim.records import GenerationRecord
from srghn.sim.schedule import RegimeSource, Schedule

SEED_BOUND = 2**31 - 1


@dataclass(frozen=True)
class RunSpec:
    """What decides the numbers of one run. ``None`` means: the profile's default."""

    profile: RobotProfile
    method: str = "srghn"
    seed: int = 0
    population: int | None = None
    episodes: int | None = None
    init: str = INIT_SCRATCH
    """``scratch`` (fresh networks), ``factory`` (grown from the robot's shipped factory GHN), or the path of a
    run directory, a ``population.npz`` or a policy file (champion or factory) to start from."""
    update_clip: float | None = None
    """SR-GHN's update clip u; ``None``: the profile's for a fresh start, the file's for a grown one. A smaller
    one fine-tunes a grown population (docs/results.md, "lifting the factory's plateau")."""
    update_clip_decay: float | None = None
    """Factor on the clip after every generation (``GHNConfig.update_clip_decay``); ``None``: as the base."""
    update_clip_min: float | None = None
    """Floor of the decayed clip (``GHNConfig.update_clip_min``); ``None``: as the base."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; known: {', '.join(METHODS)}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {self.seed}")
        for name in ("population", "episodes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name} must be >= 1, got {value}")
        check_update_clip(self.update_clip, self.update_clip_decay, self.update_clip_min)
        overrides = self._clip_overrides()
        if overrides and not self.srghn:
            flag = next(iter(overrides)).replace("_", "-")
            raise ConfigError(f"--{flag} is an SR-GHN setting; method {self.method} has none")
        check_init(self.init)

    @property
    def evolution(self):
        if self.population is None:
            return self.profile.evolution
        return dataclasses.replace(self.profile.evolution, population=self.population)

    @property
    def n_episodes(self) -> int:
        return self.episodes or self.profile.episodes

    @property
    def seeds(self) -> RunSeeds:
        return RunSeeds.from_seed(self.seed)

    @property
    def srghn(self) -> bool:
        return self.method in SRGHN_VARIANTS

    def _clip_overrides(self) -> dict:
        names = ("update_clip", "update_clip_decay", "update_clip_min")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def ghn(self, base: GHNConfig) -> GHNConfig:
        """``base`` (the profile's or the init file's GHN settings) with this run's overrides."""
        overrides = self._clip_overrides()
        try:
            return dataclasses.replace(base, **overrides) if overrides else base
        except ConfigError as exc:
            flags = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in overrides.items())
            raise ConfigError(f"{flags}: {exc}") from None

    def identity(self) -> dict:
        """Everything that decides the numbers (a resumed run must agree on all of it); the evaluator is not part
        of it: it changes speed, never results."""
        decisive = ("env_id", "env_kwargs", "regimes", "policy", "ghn", "reward_offset", "observation")
        profile = {k: v for k, v in self.profile.to_dict().items() if k in decisive}
        if not self.srghn:
            profile["baseline"] = dict(self.profile.baselines.get(self.method, {}))
        identity = {"robot": self.profile.name, "method": self.method, "seed": self.seed, "profile": profile,
                    "evolution": self.evolution.to_dict(), "episodes": self.n_episodes,
                    "init": self._init_identity()}
        identity.update(self._clip_overrides())  # only when set: runs started before the flags keep resuming
        return identity

    def _init_identity(self) -> dict:
        if self.init == INIT_SCRATCH:
            return {"kind": INIT_SCRATCH}
        path = _init_file(self)
        return {"kind": self.init if self.init == INIT_FACTORY else "file", "path": str(path),
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


@dataclass(frozen=True)
class ChampionPolicy:
    """The best individual of the population, ready to export: its policy and the normalizer it was scored with."""

    params: np.ndarray
    """``(P,)`` float32."""
    norm: ObsNorm | None
    fitness: float
    id: int
    parent_id: int
    ghn_params: np.ndarray | None = None
    """``(D,)``: the GHN that wrote the policy (SR-GHN only)."""


class Driver:
    """Builds and drives one run: strategy, evaluator, observation normalizer, episode seeds, checkpoint."""

    def __init__(self, spec: RunSpec, evaluator: Evaluator, strategy: Strategy, *, obs_stats: RunningStats,
                 episode_rng: np.random.Generator, total_steps: int = 0, regime: str | None = None,
                 scored_norm: ObsNorm | None = None) -> None:
        self.spec, self.evaluator, self.strategy = spec, evaluator, strategy
        self.obs_stats = obs_stats
        self.episode_rng = episode_rng
        self.total_steps = total_steps
        self.regime = regime
        """Regime of the last generation (``None`` before the first)."""
        self.scored_norm = scored_norm
        """The normalizer the last generation was scored with."""
        self.told: list[np.ndarray] | None = None
        """The fitness told in each generation, when asked for (``start(history=True)``, :meth:`replay`): what
        :meth:`save_progress` writes."""
        self.regimes: list[str] = []
        """The regime of each generation in :attr:`told`."""

    # ------------------------------------------------------------------------------------------- building
    @classmethod
    def start(cls, spec: RunSpec, evaluator: Evaluator, history: bool = False) -> Driver:
        """A new run as ``spec`` says: fresh, or grown from a factory GHN, a run, a population or a policy file.
        ``history``: keep every fitness vector told, for :meth:`save_progress` (off for runs without end: the
        daemon's would grow for ever)."""
        # The GHN's ops are small: one torch thread is faster than two fighting the simulator for the cores, and
        # its float results do not depend on how many cores the machine has.
        torch.set_num_threads(1)
        seeds, profile = spec.seeds, spec.profile
        stats = RunningStats.empty(profile.policy.obs_dim)
        if spec.init == INIT_SCRATCH:
            strategy = build_strategy(spec.method, profile.policy, spec.ghn(profile.ghn), spec.evolution, seeds,
                                      profile.baselines)
        else:
            strategy, loaded_stats = _from_file(spec, _init_file(spec), seeds)
            stats = loaded_stats or stats
        driver = cls(spec, evaluator, strategy, obs_stats=stats, episode_rng=np.random.default_rng(seeds.episodes))
        driver.told = [] if history else None
        return driver

    @classmethod
    def resume(cls, path: Path, spec: RunSpec, evaluator: Evaluator, check_identity: bool = True,
               loaded: PopulationFile | None = None) -> Driver:
        """The run checkpointed at ``path`` by :meth:`save` (``loaded``: that file, if the caller read it already).
        With ``check_identity``, ``spec`` must be the one it was started with; without (the daemon: a population
        outlives the flags of the run that started it), the checkpoint's own settings win and a population saved
        before checkpoints held a driver state resumes with fresh episode seeds."""
        torch.set_num_threads(1)
        loaded = loaded or load_population(path)
        state = loaded.meta.get("driver")
        if check_identity:
            _check_identity(path, state, spec)
        state = state if isinstance(state, dict) else {}
        rng = np.random.default_rng(np.random.SeedSequence([spec.seeds.episodes, loaded.strategy.generation]))
        if "episode_rng" in state:
            _restore_rng(path, rng, state["episode_rng"])
        stats = loaded.obs_stats or RunningStats.empty(spec.profile.policy.obs_dim)
        return cls(spec, evaluator, loaded.strategy, obs_stats=stats, episode_rng=rng,
                   total_steps=int(state.get("total_steps", 0)), regime=state.get("regime"),
                   scored_norm=loaded.norm)

    @classmethod
    def replay(cls, path: Path, spec: RunSpec, evaluator: Evaluator) -> Driver:
        """The run saved at ``path`` by :meth:`save_progress`, bit for bit: started afresh from ``spec`` (which must
        be the one it was started with), told the stored fitness again generation by generation (no episode is
        run: asking costs only the strategy's own work), then given the stored generator and normalizer states."""
        progress = load_progress(path)
        state = progress.meta.get("driver")
        _check_identity(path, state, spec)
        regimes = state.get("regimes")
        if (not isinstance(regimes, list) or len(regimes) != len(progress.fitness)
                or not all(isinstance(r, str) for r in regimes)):
            raise CheckpointError(f"{path}: the regimes of its generations are missing or do not match its history")
        driver = cls.start(spec, evaluator, history=True)
        strategy = driver.strategy
        for generation, (regime, fitness) in enumerate(zip(regimes, progress.fitness, strict=True)):
            if generation and regime != regimes[generation - 1]:
                strategy.invalidate()
            asked = strategy.ask().shape[0]
            if asked != fitness.size:
                raise CheckpointError(f"{path}: generation {generation} holds {fitness.size} fitness values, the "
                                      f"strategy asked for {asked}")
            strategy.tell(fitness)
        _restore_rng(path, driver.episode_rng, state.get("episode_rng"))
        driver.told, driver.regimes = list(progress.fitness), list(regimes)
        driver.total_steps, driver.regime = int(state.get("total_steps", 0)), regimes[-1] if regimes else None
        driver.obs_stats = progress.obs_stats or driver.obs_stats
        driver.scored_norm = progress.norm
        return driver

    # ------------------------------------------------------------------------------------------- running
    @property
    def generation(self) -> int:
        return self.strategy.generation

    def next_norm(self) -> ObsNorm | None:
        """The normalizer the next generation is scored with (``None`` if the profile does not normalize)."""
        config = self.spec.profile.observation
        return self.obs_stats.normalizer(config) if config.normalize else None

    def step(self, regime: str) -> GenerationRecord:
        """Run one generation in ``regime`` and return its record."""
        strategy = self.strategy
        if self.regime is not None and regime != self.regime:
            strategy.invalidate()
        self.regime = regime
        generation = strategy.generation
        seeds = self.episode_rng.integers(0, SEED_BOUND, size=self.spec.n_episodes)
        norm = self.next_norm()

        first_new = getattr(strategy, "next_id", None)
        t0 = time.perf_counter()
        batch = strategy.ask()
        t1 = time.perf_counter()
        result = self.evaluator.evaluate(batch, seeds, regime, norm)
        t2 = time.perf_counter()
        strategy.tell(result.fitness)
        t3 = time.perf_counter()
        if self.told is not None:
            self.told.append(np.array(result.fitness, dtype=np.float64))
            self.regimes.append(regime)

        self.scored_norm = norm
        if result.obs_stats is not None:
            self.obs_stats = self.obs_stats.merge(result.obs_stats.count, result.obs_stats.mean, result.obs_stats.m2)
        self.total_steps += result.env_steps
        rates = strategy.mutation_rates()
        best = int(np.argmax(result.fitness))
        healthy = result.fitness[np.isfinite(result.fitness)]
        return GenerationRecord(
            generation=generation, regime=regime,
            best=float(result.fitness[best]), mean=float(healthy.mean()) if healthy.size else math.nan,
            median=float(np.median(healthy)) if healthy.size else math.nan, best_return=float(result.returns[best]),
            champion_fitness=strategy.champion().fitness, diversity=diversity(strategy.population()),
            mutation_rate_mean=None if rates is None else float(rates.mean()),
            mutation_rate_std=None if rates is None else float(rates.std()),
            evaluations=int(batch.shape[0]), env_steps=result.env_steps, total_env_steps=self.total_steps,
            faults=result.faults(),
            timing={"wall_s": t3 - t0, "ghn_s": (t1 - t0) + (t3 - t2), "eval_s": t2 - t1},
            born=None if first_new is None else [[int(i), int(p)] for i, p in zip(strategy.ids, strategy.parent_ids,
                                                                                   strict=True) if i >= first_new],
        )

    def run(self, generations: int | None, schedule: RegimeSource | None = None,
            should_stop: Callable[[], bool] | None = None) -> Iterator[GenerationRecord]:
        """Generations until the strategy has made ``generations`` in all (``None``: until the caller stops
        iterating) or ``should_stop()`` turns true between two generations, one record after each."""
        schedule = schedule or Schedule()
        for _ in itertools.count():
            if (generations is not None and self.generation >= generations) or (should_stop and should_stop()):
                return
            yield self.step(schedule.regime_at(self.generation))

    # ------------------------------------------------------------------------------------------- results
    def champion(self) -> ChampionPolicy:
        """The best individual of the current population, with the normalizer it was scored with."""
        champion = self.strategy.champion()
        ghn_params = None
        if isinstance(self.strategy, SRGHNStrategy):
            row = int(np.flatnonzero(self.strategy.ids == champion.id)[0])
            ghn_params = self.strategy.params[row].numpy().copy()
        return ChampionPolicy(champion.policy, self.scored_norm, champion.fitness, champion.id, champion.parent_id,
                              ghn_params)

    def initial(self) -> dict:
        """Where the run's first population came from, and its ids and parent ids (the roots of every ancestry
        the records' ``born`` lists trace; individual 0 of a population grown from a file is that file's GHN)."""
        return {"origin": self.spec.identity()["init"], "ids": getattr(self.strategy, "ids", np.array([])).tolist(),
                "parent_ids": getattr(self.strategy, "parent_ids", np.array([])).tolist()}

    def save(self, path: Path, extra: dict | None = None) -> None:
        """Checkpoint the run (SR-GHN only): strategy, observation statistics and every generator state."""
        if not isinstance(self.strategy, SRGHNStrategy):
            raise CheckpointError(f"only SR-GHN runs are checkpointed, not {self.spec.method}")
        save_population(path, self.strategy, {"robot": self.spec.profile.name, "regime": self.regime,
                                              "driver": {**self._state(), "regime": self.regime}, **(extra or {})},
                        obs_stats=self.obs_stats, norm=self.scored_norm)

    def save_progress(self, path: Path) -> None:
        """Checkpoint a run of any strategy as the fitness it was told (see :meth:`replay`)."""
        if self.told is None:
            raise CheckpointError("this run keeps no history of its fitness (Driver.start(..., history=True) does)")
        save_progress(path, self.told, {"robot": self.spec.profile.name,
                                        "driver": {**self._state(), "regimes": self.regimes}},
                      obs_stats=self.obs_stats, norm=self.scored_norm)

    def _state(self) -> dict:
        """What both checkpoints hold of the driver itself: the run's identity and where its episodes stand."""
        return {"identity": _jsonable(self.spec.identity()), "seeds": self.spec.seeds.to_dict(),
                "episode_rng": self.episode_rng.bit_generator.state, "total_steps": self.total_steps}

    def save_champion(self, path: Path, meta: dict | None = None) -> ChampionPolicy:
        """Write the champion's policy file (with its GHN and the run's observation statistics)."""
        champion = self.champion()
        ghn = self.strategy.ghn if isinstance(self.strategy, SRGHNStrategy) else None
        save_policy(path, self.spec.profile.policy, champion.params, {
            "robot": self.spec.profile.name, "id": champion.id, "parent_id": champion.parent_id,
            "fitness": champion.fitness, "generation": self.generation - 1, "regime": self.regime,
            "seed": self.spec.seed, "method": self.spec.method, "total_env_steps": self.total_steps,
            **(meta or {})}, norm=champion.norm, ghn=ghn, ghn_params=champion.ghn_params, obs_stats=self.obs_stats)
        return champion


# ----------------------------------------------------------------------------------------------- initial population
def _init_file(spec: RunSpec) -> Path:
    """The file a non-scratch start reads: the robot's factory file, or the given path (a run directory means its
    ``population.npz``)."""
    if spec.init == INIT_FACTORY:
        from srghn.sim.factory import factory_path

        return factory_path(spec.profile)
    path = Path(spec.init)
    return path / "population.npz" if path.is_dir() else path


def _read_init(path: Path) -> PopulationFile | PolicyFile:
    try:
        return load_population(path)
    except CheckpointError as population_error:
        try:
            return load_policy(path)
        except CheckpointError:
            raise CheckpointError(f"--init {path}: neither a population nor a policy file ({population_error})") \
                from population_error


def _from_file(spec: RunSpec, path: Path, seeds: RunSeeds) -> tuple[Strategy, RunningStats | None]:
    """The strategy of ``spec`` started from a population or policy file, and the file's observation statistics."""
    profile = spec.profile
    loaded = load_factory(profile) if spec.init == INIT_FACTORY else _read_init(path)
    if isinstance(loaded, PopulationFile):
        ghn, rows = loaded.strategy.ghn, loaded.strategy.params
        policies = loaded.strategy.policies
        scores = np.where(np.isnan(loaded.strategy.fitness), -np.inf, loaded.strategy.fitness)
        rows = rows[torch.from_numpy(np.argsort(-scores, kind="stable"))]  # best first
        policies = policies[np.argsort(-scores, kind="stable")]
    else:
        ghn = loaded.ghn
        rows = None if loaded.ghn_params is None else torch.from_numpy(loaded.ghn_params)[None]
        policies = loaded.params[None]
    if (ghn.policy if ghn is not None else loaded.spec) != profile.policy:
        raise ConfigError(f"--init {path}: its policy {(ghn.policy if ghn else loaded.spec).to_dict()} is not the "
                          f"profile's {profile.policy.to_dict()}")
    if not spec.srghn:  # a baseline starts from the file's policies (a warm start)
        strategy = build_strategy(spec.method, profile.policy, profile.ghn, spec.evolution, seeds, profile.baselines,
                                  init=policies)
        return strategy, loaded.obs_stats
    if ghn is None or rows is None:
        raise ConfigError(f"--init {path}: holds a policy but no GHN; SR-GHN can only start from a GHN")
    config, evolution = srghn_variant(spec.method, spec.ghn(ghn.config), spec.evolution)
    arch = SRGHN(profile.policy, config, basis_seed=ghn.basis_seed)
    if arch.num_params != ghn.num_params:
        raise ConfigError(f"method {spec.method} changes the GHN's architecture; it cannot start from {path}")
    n = evolution.population
    grown = rows.shape[0] < n
    params = arch.grow(rows[0], n, torch.Generator().manual_seed(seeds.init)) if grown else rows[:n]
    strategy = SRGHNStrategy(arch, evolution, seeds.strategy, params.contiguous())
    if grown:
        strategy.parent_ids[1:] = 0  # the original (individual 0) and its self-mutated children
    return strategy, loaded.obs_stats


def _check_identity(path: Path, state: object, spec: RunSpec) -> None:
    """A checkpoint's driver state must name the run ``spec`` describes."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint of a run (no driver state)")
    differing = identity_differences(state.get("identity"), _jsonable(spec.identity()))
    if differing:
        raise ConfigError(f"{path} was checkpointed with other settings ({', '.join(differing)}); resume "
                          "with the settings it was started with")


def identity_differences(stored: object, current: dict) -> list[str]:
    """The keys on which a stored identity (or a bench's shared settings) and the current one disagree.

    Where an ``--init`` file lies is recorded but not compared: its content (``sha256``) decides the numbers, and
    a run must resume after the file, its run directory or the installed package moved (another machine, another
    virtual environment)."""
    def decisive(identity: object) -> dict:
        if not isinstance(identity, dict):
            return {}
        init = identity.get("init")
        return {**identity, "init": {k: v for k, v in init.items() if k != "path"}} if isinstance(init, dict) \
            else identity

    stored, current = decisive(stored), decisive(current)
    return sorted(k for k in stored.keys() | current.keys() if stored.get(k) != current.get(k))


def _restore_rng(path: Path, rng: np.random.Generator, state: object) -> None:
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: malformed episode generator state ({exc})") from exc


def _jsonable(value: object) -> object:
    """``value`` as it reads back from JSON (tuples become lists), for comparing stored and current identities."""
    import json

    return json.loads(json.dumps(value))
