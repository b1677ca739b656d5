"""What one ``evolve``, one ``bench`` or one repertoire build is asked to do: :class:`EvolveSettings`,
:class:`BenchSettings`, :class:`BuildSettings`, each checked
once, when made (:mod:`srghn.sim.preflight` holds the checks). No torch here: ``srghn-ctl`` makes them before its
heavy imports, so a bad flag is one line and exit code 2 in a fraction of a second; what runs them imports the
rest (:mod:`srghn.sim.run`, :mod:`srghn.sim.bench`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from srghn import ConfigError
from srghn.sim.preflight import (
    INIT_SCRATCH,
    check_counts,
    check_init,
    check_out_dir,
    check_run_flags,
    check_spaces,
    check_switches,
    check_update_clip,
    check_writable,
)
from srghn.sim.repertoire_config import EMITTERS

if TYPE_CHECKING:
    from srghn.controller.evolution import EvolutionConfig
    from srghn.sim.driver import RunSpec
    from srghn.sim.profiles import RobotProfile
    from srghn.sim.schedule import Schedule
    from srghn.sim.workers import WorkerLimits

CHECKPOINT_S = 30.0
"""Seconds between checkpoints of a running ``evolve`` (and one after the last generation)."""
REPERTOIRE_CHECKPOINT_S = 60.0
"""Seconds between checkpoints of a repertoire build."""


@dataclass(frozen=True)
class EvolveSettings:
    """One ``evolve`` run. ``None`` means: the profile's default."""

    profile: RobotProfile
    out: Path
    generations: int | None = None
    seed: int = 0
    population: int | None = None
    episodes: int | None = None
    switch_at: int | None = None
    switch_back_at: int | None = None
    switch_regime: str | None = None
    """The regime ``switch_at`` switches to; ``None``: the profile's switch regime."""
    backend: str = "local"
    """Evaluator backend: ``local`` (sandboxed worker processes), ``ray`` or ``inprocess``."""
    workers: int | None = None
    """Evaluation workers (``local``/``ray``); ``None``: one per core. Never changes the results."""
    ray_address: str | None = None
    """Ray cluster to join (``--backend ray`` only); ``None`` starts a local Ray instance."""
    init: str = INIT_SCRATCH
    """Where the first population comes from (see :class:`~srghn.sim.driver.RunSpec`)."""
    update_clip: float | None = None
    """SR-GHN's update clip (see :class:`~srghn.sim.driver.RunSpec`); ``None``: the profile's or the file's."""
    update_clip_decay: float | None = None
    update_clip_min: float | None = None
    """The clip's schedule, max(u * decay^g, min) (see :class:`~srghn.sim.driver.RunSpec`); ``None``: as the base."""
    resume: bool = False
    """Continue the run checkpointed in ``out`` instead of starting one (which ``out`` must not hold)."""
    checkpoint_s: float = CHECKPOINT_S
    limits: WorkerLimits | None = None
    """The evaluation workers' limits (default: theirs; ``OFFLINE_LIMITS`` for long runs beside other work)."""
    command: str | None = None
    """The command line that started the run (recorded in ``run.json``)."""

    def __post_init__(self) -> None:
        check_run_flags(self, ("generations", "population", "episodes", "switch_back_at"))
        check_switches(self.profile, self.generations, self.switch_at, self.switch_back_at, self.switch_regime)
        check_init(self.init)
        check_update_clip(self.update_clip, self.update_clip_decay, self.update_clip_min)
        check_out_dir(self.out, self.resume)
        check_spaces(self.profile)

    @property
    def n_generations(self) -> int:
        return self.generations or self.profile.generations

    @property
    def schedule(self) -> Schedule:
        from srghn.sim.schedule import Schedule

        return Schedule.switch(self.switch_regime or self.profile.switch_regime, self.switch_at, self.switch_back_at)

    @property
    def spec(self) -> RunSpec:
        from srghn.sim.driver import RunSpec

        return RunSpec(self.profile, "srghn", self.seed, self.population, self.episodes, self.init, self.update_clip,
                       self.update_clip_decay, self.update_clip_min)


@dataclass(frozen=True)
class BenchSettings:
    """One comparison."""

    profile: RobotProfile
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    generations: int
    out: Path
    switch_at: int | None = None
    switch_back_at: int | None = None
    population: int | None = None
    episodes: int | None = None
    init: str = INIT_SCRATCH
    """Where every run's first population comes from (see :class:`~srghn.sim.driver.RunSpec`)."""
    backend: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    """The evaluator of each run (see :func:`~srghn.sim.backends.make_evaluator`); never changes the results."""
    jobs: int = 1
    """Runs at a time, each with its own evaluator."""

    def __post_init__(self) -> None:
        from srghn.sim.backends import check_backend

        check_backend(self.backend, self.workers, self.ray_address)
        check_counts(self, ("generations", "population", "episodes", "jobs"))
        if self.jobs > 1 and self.backend == "ray":
            raise ConfigError("--jobs applies to the local and inprocess backends; a Ray cluster schedules one run's "
                              "evaluations over all of its workers (use --workers)")
        if not self.seeds or min(self.seeds) < 0:
            raise ConfigError(f"--seeds must give at least one seed >= 0, got {list(self.seeds)}")
        check_counts(self, ("switch_at", "switch_back_at"), 1, self.generations - 1)
        check_init(self.init)
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise ConfigError(f"--out {self.out} exists and is not a directory")
        check_writable(self.out, "--out")
        from srghn.controller.methods import METHODS  # torch: only once the flags above are known good

        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"unknown method(s) {unknown or '(none given)'}; known: {', '.join(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"--methods lists a method twice: {list(self.methods)}")
        self.schedule  # validates the switch order  # noqa: B018
        check_spaces(self.profile)

    def spec(self, method: str, seed: int) -> RunSpec:
        """The run of ``method`` with ``seed``."""
        from srghn.sim.driver import RunSpec

        return RunSpec(self.profile, method, seed, self.population, self.episodes, self.init)

    @property
    def schedule(self) -> Schedule:
        from srghn.sim.schedule import Schedule

        return Schedule.switch(self.profile.switch_regime, self.switch_at, self.switch_back_at)

    @property
    def evolution(self) -> EvolutionConfig:
        if self.population is None:
            return self.profile.evolution
        return dataclasses.replace(self.profile.evolution, population=self.population)

    @property
    def episodes_per_evaluation(self) -> int:
        return self.episodes or self.profile.episodes

    def shared(self) -> dict:
        """What every run of the bench shares; a resumed bench must agree on all of it."""
        from srghn.controller.methods import evaluations_per_generation

        # only what decides the numbers: not the gates, the description or where the profile file lives
        decisive = ("env_id", "env_kwargs", "regimes", "switch_regime", "policy", "ghn", "reward_offset",
                    "observation", "baselines")
        profile = {k: v for k, v in self.profile.to_dict().items() if k in decisive}
        return {"robot": self.profile.name, "profile": profile, "generations": self.generations,
                "switches": [list(s) for s in self.schedule.switches], "evolution": self.evolution.to_dict(),
                "episodes": self.episodes_per_evaluation,
                "evaluations_per_generation": evaluations_per_generation(self.evolution),
                "init": self.spec(self.methods[0], self.seeds[0]).identity()["init"]}


@dataclass(frozen=True)
class BuildSettings:
    """One repertoire build (``factory build --repertoire``; :mod:`srghn.sim.repertoire_build` runs it)."""

    profile: RobotProfile
    out: Path
    env_steps: int | None = None
    """The budget; ``None``: the profile's ``repertoire.env_steps``. Stops after the iteration that reaches it."""
    seed: int = 0
    emitters: tuple[str, ...] | None = None
    """``None``: the profile's."""
    workers: int | None = None
    backend: str = "local"
    checkpoint_s: float = REPERTOIRE_CHECKPOINT_S
    command: str | None = None

    def __post_init__(self) -> None:
        if self.profile.repertoire is None:
            raise ConfigError(f"robot {self.profile.name!r} has no [repertoire] table (docs/profiles.md)")
        if self.env_steps is not None and self.env_steps < 1:
            raise ConfigError(f"--env-steps must be >= 1, got {self.env_steps}")
        unknown = [e for e in self.emitters or () if e not in EMITTERS]
        if unknown or (self.emitters is not None and not self.emitters):
            raise ConfigError(f"--emitter must be among {', '.join(EMITTERS)}, got {list(self.emitters)}")

    @property
    def config(self):
        base = self.profile.repertoire
        return base if self.emitters is None else replace(base, emitters=tuple(self.emitters))

    @property
    def budget(self) -> int:
        return self.env_steps or self.config.env_steps

    def identity(self, factory_sha: str) -> dict:
        """What decides the numbers: a build resumes only under the same identity (the budget may grow)."""
        return {"robot": self.profile.name, "config": {**self.config.to_dict(), "env_steps": None},
                "seed": self.seed, "factory_sha256": factory_sha,
                "policy": self.profile.policy.to_dict(), "reward_offset": self.profile.reward_offset}
