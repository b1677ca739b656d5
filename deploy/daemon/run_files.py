"""The daemon's files in ``daemon/<robot>/``: what survives a restart.

``daemon.json`` (regime, pause, run tag), ``population.npz`` (the population checkpoint, always one complete
generation), ``ancestry.json`` (who was born of whom, pruned to the living population's ancestors), ``run.json``
(how the run started), ``metrics.jsonl`` (one record per generation, appended across runs) and ``fitness.png``.
Only the evolution loop's thread uses them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from srghn import ConfigError
from srghn.controller.checkpoint import PopulationFile, load_population
from srghn.controller.evolution import SRGHNStrategy
from srghn.controller.files import atomic_write
from srghn.deploy.daemon.champions import run_tag
from srghn.deploy.daemon.settings import DaemonSettings
from srghn.deploy.daemon.shared import SharedState
from srghn.deploy.process.state import no_space
from srghn.deploy.registry.store import Registry
from srghn.sim.ancestry import Ancestry
from srghn.sim.driver import INIT_FACTORY, Driver
from srghn.sim.evaluator import Evaluator
from srghn.sim.factory import factory_id, factory_path
from srghn.sim.plots import plot_run
from srghn.sim.records import GenerationRecord, read_records
from srghn.sim.run import provenance

log = logging.getLogger("srghn.daemon")

ANCESTRY_PRUNE_EVERY = 50
"""Generations between two prunings of the run's ancestry to the living population's ancestors."""


class RunFiles:
    def __init__(self, settings: DaemonSettings) -> None:
        self.settings = settings
        self.home = settings.home
        self.robot = settings.profile.name
        self.tag: str | None = None
        """The run's tag (its champions are ``<tag>-i<individual>``); None until the population is started or
        resumed."""
        self.ancestry = Ancestry()
        """Who was born of whom in this run (pruned to the living population's ancestors)."""
        self.unsaved: list[str] = []
        """Generation records not yet appended to ``metrics.jsonl`` (the disk was full)."""

    @property
    def metrics(self) -> Path:
        return self.home / "metrics.jsonl"

    # -- start-up ------------------------------------------------------------------------------------------------

    def load_state(self, shared: SharedState) -> dict:
        """``daemon.json`` (regime, pause, run tag), checked against the profile."""
        profile = shared.profile
        state = read_json(self.home / "daemon.json")
        if state.get("regime", profile.regimes[0]) not in profile.regimes:
            raise ConfigError(f"{self.home / 'daemon.json'} names regime {state['regime']!r}, which robot "
                              f"{profile.name} does not have ({', '.join(profile.regimes)}); fix or delete the file")
        return state

    def saved_population(self, shared: SharedState) -> PopulationFile | None:
        """The saved population, read and checked before anything starts (``None``: there is none)."""
        path, profile = self.home / "population.npz", shared.profile
        if not path.is_file():
            return None
        loaded = load_population(path)
        strategy = loaded.strategy
        if strategy.ghn.policy != profile.policy:
            raise ConfigError(f"{path} holds a population for another policy architecture than profile "
                              f"{profile.name}'s; move it away to start afresh")
        if self.settings.population is not None and strategy.config.population != self.settings.population:
            raise ConfigError(f"the saved population in {path} has {strategy.config.population} individuals, "
                              f"--population says {self.settings.population}; omit --population to resume it, "
                              "or move the file away to start afresh")
        return loaded

    def driver(self, evaluator: Evaluator, state: dict, registry: Registry, shared: SharedState,
               population: PopulationFile | None = None) -> Driver:
        """The saved population resumed, else a new one as the settings say (from the factory by default)."""
        spec, profile = self.settings.spec, shared.profile
        if population is not None:
            driver = Driver.resume(self.home / "population.npz", spec, evaluator, check_identity=False,
                                   loaded=population)
            self.tag = state.get("tag") or run_tag(self.robot, driver.strategy.seed)
            state.update(resumed=True)
            self._load_ancestry(driver, registry)
            return driver
        driver = Driver.start(spec, evaluator)
        self.tag = run_tag(self.robot, self.settings.seed)
        state.update(init=spec.init)
        (self.home / "run.json").write_text(json.dumps({"robot": self.robot, "seed": self.settings.seed,
                                                        "seeds": spec.seeds.to_dict(),
                                                        "identity": spec.identity(),
                                                        "initial": driver.initial(),
                                                        "profile": profile.to_dict(),
                                                        "provenance": provenance()}, indent=2, default=str))
        self.ancestry = Ancestry.from_initial(driver.initial())
        self._record_run(driver.initial()["origin"], registry)
        return driver

    def _load_ancestry(self, driver: Driver, registry: Registry) -> None:
        """The run's ancestry as the last checkpoint left it (``ancestry.json``), else rebuilt from ``run.json``
        and ``metrics.jsonl`` (state written before ancestry was kept)."""
        try:
            self.ancestry = Ancestry.from_json((self.home / "ancestry.json").read_text())
        except (OSError, ValueError):
            self.ancestry = Ancestry.from_run(self.home / "run.json", self.metrics)
            self.ancestry.prune(_living(driver))
        self._record_run(read_json(self.home / "run.json").get("initial", {}).get("origin") or {}, registry)

    def _record_run(self, origin: dict, registry: Registry) -> None:
        """The registry learns where this run started (a factory run's root is the factory champion)."""
        profile = self.settings.profile
        kind = str(origin.get("kind", "unknown"))
        origin_id = factory_id(profile) if kind == INIT_FACTORY and factory_path(profile).is_file() else None
        registry.record_run(self.tag, self.robot, kind, origin_id)

    # -- while evolving ------------------------------------------------------------------------------------------

    def record(self, record: GenerationRecord, driver: Driver, generations: int) -> str:
        """A generation's record, kept for ``metrics.jsonl`` (:meth:`flush` writes it) and in the ancestry; its
        JSON line."""
        self.ancestry.add(record.born, record.generation)
        if generations % ANCESTRY_PRUNE_EVERY == 0:
            self.ancestry.prune(_living(driver))
        line = record.to_json()
        self.unsaved.append(line)
        return line

    def flush(self) -> None:
        """Append the records kept so far to ``metrics.jsonl``, whole or not at all."""
        append_lines(self.metrics, self.unsaved)
        self.unsaved.clear()

    def checkpoint(self, driver: Driver, shared: SharedState) -> None:
        # first: an ancestry newer than the population only knows more
        atomic_write(self.home / "ancestry.json", self.ancestry.to_json().encode())
        driver.save(self.home / "population.npz", {"tag": self.tag})
        self.save_state(shared)

    def save_state(self, shared: SharedState) -> None:
        atomic_write(self.home / "daemon.json", json.dumps(
            {"robot": self.robot, "tag": self.tag, "regime": shared.regime, "paused": shared.paused},
            indent=2).encode())

    # -- at the end ----------------------------------------------------------------------------------------------

    def last_checkpoint(self, driver: Driver, shared: SharedState) -> None:
        """The last checkpoint and the fitness plot (a full disk leaves the previous checkpoint standing)."""
        if self.tag is None:  # evolution never started
            return
        try:
            self.checkpoint(driver, shared)
        except Exception as exc:
            if not no_space(exc):
                raise
            log.error("the last checkpoint is not written, the disk is full (%s): the previous one stands", exc)
        records = read_records(self.metrics) if self.metrics.is_file() else []
        if records:
            plot_run(records, self.home / "fitness.png", title=f"{self.robot}: daemon evolution",
                     target=self.settings.profile.solved_fitness)

    def last_figures(self) -> dict:
        """The figures ``status`` shows, from the last record of ``metrics.jsonl`` ({} when there is none)."""
        try:
            with self.metrics.open("rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 65536))
                lines = fh.read().splitlines()
            record = json.loads(lines[-1]) if lines else {}
        except (OSError, ValueError):
            return {}
        return {"best": record.get("best"), "mean": record.get("mean"),
                "mutation_rate": record.get("mutation_rate_mean"), "diversity": record.get("diversity"),
                "total_env_steps": record.get("total_env_steps")}


def _living(driver: Driver) -> list[int]:
    """The ids of the living population (only SR-GHN populations have ids)."""
    strategy = driver.strategy
    return [int(i) for i in strategy.ids] if isinstance(strategy, SRGHNStrategy) else []


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def append_lines(path: Path, lines: list[str]) -> None:
    """Append ``lines`` to ``path`` whole or not at all (a full disk leaves no torn record behind)."""
    if not lines:
        return
    data = memoryview("".join(f"{line}\n" for line in lines).encode())
    with path.open("ab", buffering=0) as fh:
        size = fh.seek(0, os.SEEK_END)
        try:
            while data:
                data = data[fh.write(data):]
        except OSError:
            with contextlib.suppress(OSError):
                fh.truncate(size)
            raise
