"""One evolution run from a profile to files on disk: what ``srghn-ctl evolve`` does, minus the printing.

The output directory receives ``run.json`` (settings and provenance: versions, git revision, seed),
``metrics.jsonl`` (one record per generation, appended as they come so an interrupted run keeps its history),
``population.npz`` (resumable SR-GHN population), ``champion.npz`` (the best policy), ``fitness.png`` and
``summary.json`` (final figures and recovery after every switch).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from srghn import ConfigError, __version__
from srghn.controller.checkpoint import save_policy, save_population
from srghn.controller.evolution import SRGHNStrategy
from srghn.controller.ghn import SRGHN
from srghn.sim.backends import check_backend, make_evaluator
from srghn.sim.loop import Schedule, evolve
from srghn.sim.plots import plot_run
from srghn.sim.profiles import RobotProfile
from srghn.sim.records import GenerationRecord, stream_records, summarize


def check_run_flags(settings: object, counts: tuple[str, ...]) -> None:
    """The flags every evolution run shares: ``counts`` must be >= 1 where given, the seed >= 0, the backend
    valid. Errors name the flag."""
    check_backend(settings.backend, settings.workers, settings.ray_address)
    for name in counts:
        value = getattr(settings, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if settings.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {settings.seed}")


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
    backend: str = "local"
    """Evaluator backend: ``local`` (sandboxed worker processes), ``ray`` or ``inprocess``."""
    workers: int | None = None
    """Evaluation workers (``local``/``ray``); ``None``: one per core. Never changes the results."""
    ray_address: str | None = None
    """Ray cluster to join (``--backend ray`` only); ``None`` starts a local Ray instance."""

    def __post_init__(self) -> None:
        check_run_flags(self, ("generations", "population", "episodes", "switch_at", "switch_back_at"))
        for name in ("switch_at", "switch_back_at"):
            value = getattr(self, name)
            if value is not None and value >= self.n_generations:
                raise ConfigError(f"--{name.replace('_', '-')} {value} is not before the end of the run "
                                  f"({self.n_generations} generations)")
        self.schedule  # validates the switch order  # noqa: B018

    @property
    def n_generations(self) -> int:
        return self.generations or self.profile.generations

    @property
    def n_episodes(self) -> int:
        return self.episodes or self.profile.episodes

    @property
    def schedule(self) -> Schedule:
        return Schedule.switch(self.profile.switch_regime, self.switch_at, self.switch_back_at)


def provenance() -> dict:
    """Versions of srghn and the libraries that decide the numbers, and the git revision of the code."""
    versions = {"srghn": __version__, "python": platform.python_version()}
    for package in ("torch", "torch-geometric", "numpy", "gymnasium", "mujoco", "box2d"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                                    timeout=5).stdout.strip()) if sha else None
    except (OSError, subprocess.SubprocessError):
        sha, dirty = None, None
    return {"versions": versions, "git_sha": sha, "git_dirty": dirty, "machine": platform.machine()}


def run_evolve(settings: EvolveSettings, on_record: Callable[[GenerationRecord], None] | None = None) -> dict:
    """Run evolution as ``settings`` say, write every output file, return the summary."""
    profile = settings.profile
    evolution = profile.evolution
    if settings.population is not None:
        evolution = dataclasses.replace(evolution, population=settings.population)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    run_info = {
        "robot": profile.name, "seed": settings.seed, "generations": settings.n_generations,
        "episodes": settings.n_episodes, "schedule": [list(s) for s in settings.schedule.switches],
        "evaluator": {"backend": settings.backend,
                      "workers": None if settings.backend == "inprocess" else settings.workers or os.cpu_count()},
        "profile": {**profile.to_dict(), "evolution": evolution.to_dict()}, "provenance": provenance(),
    }
    (out / "run.json").write_text(json.dumps(run_info, indent=2))

    # The GHN's ops are small: one torch thread is faster than two fighting the simulator for the cores, and
    # its float results do not depend on how many cores the machine has.
    torch.set_num_threads(1)
    strategy = SRGHNStrategy(SRGHN(profile.policy, profile.ghn, basis_seed=settings.seed), evolution, settings.seed)
    evaluator = make_evaluator(profile, settings.backend, settings.workers, settings.ray_address)
    records: list[GenerationRecord] = []
    try:
        stream_records(evolve(strategy, evaluator, settings.n_generations, settings.n_episodes, settings.seed,
                              settings.schedule), out / "metrics.jsonl", records, on_record)
    finally:
        evaluator.close()
        if records:  # also after Ctrl-C: keep what was evolved so far
            _write_results(out, profile, strategy, records, settings)
    return json.loads((out / "summary.json").read_text())


def _write_results(out: Path, profile: RobotProfile, strategy: SRGHNStrategy, records: list[GenerationRecord],
                   settings: EvolveSettings) -> None:
    champion = strategy.champion()
    last = records[-1]
    save_population(out / "population.npz", strategy, {"robot": profile.name, "regime": last.regime})
    save_policy(out / "champion.npz", profile.policy, champion.policy, {
        "robot": profile.name, "id": champion.id, "parent_id": champion.parent_id, "fitness": champion.fitness,
        "generation": last.generation, "regime": last.regime, "seed": settings.seed,
    })
    plot_run(records, out / "fitness.png", title=f"{profile.name}: SR-GHN, seed {settings.seed}",
             target=profile.solved_fitness)
    summary = {
        "robot": profile.name, "seed": settings.seed, "out": str(out),
        **summarize(records, target=profile.solved_fitness),
        "champion": {"id": champion.id, "parent_id": champion.parent_id, "fitness": champion.fitness,
                     "regime": last.regime, "file": str(out / "champion.npz")},
        "mutation_rate_final": last.mutation_rate_mean,
        "completed": len(records) == settings.n_generations,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
