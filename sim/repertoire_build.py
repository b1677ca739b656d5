"""Building a behaviour repertoire: MAP-Elites with pyribs, in the shadow simulator, from the robot's factory.

The archive is pyribs' ``GridArchive`` over the profile's descriptor (``bins`` per dimension), its solutions the
profile's flat policies, with three extra fields: ``uid`` (the lineage of the GHN that wrote the elite,
:mod:`srghn.sim.srghn_emitter`), ``ret`` (the standard return) and ``it`` (the iteration that scored it, whose
episode seeds replay its score). The emitters are the profile's (or the
caller's): ``srghn`` (:class:`~srghn.sim.srghn_emitter.SRGHNEmitter`, rooted at the factory GHN), pyribs'
``GaussianEmitter`` and ``IsoLineEmitter`` (both started from the factory policy), driven by pyribs' ``Scheduler``.
Every policy acts with the factory's observation normalizer, in ``nominal``.

Iteration ``i`` plays every proposed policy on the same episode seeds (drawn from ``(seed, i)``), so a policy's
score depends only on the policy and the iteration. The build directory holds ``build.json`` (settings and
provenance), ``metrics.jsonl`` (a line per iteration: env steps, elites, coverage, QD-score, best fitness and
return), ``checkpoint.pkl`` (the pyribs scheduler with its archive, emitters and generators, every
``checkpoint_s`` seconds and at the end) and, when the budget is spent, ``repertoire.npz`` and ``heatmap.png``.
Started again on the same directory with the same settings, a build continues bit for bit from its checkpoint
(iterations after it are played again and give the same lines). The checkpoint is a pickle: load only build
directories you made; the shipped ``repertoire.npz`` holds arrays and JSON only.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ribs.archives import GridArchive
from ribs.emitters import GaussianEmitter, IsoLineEmitter
from ribs.schedulers import Scheduler

from srghn import CheckpointError, ConfigError
from srghn.controller.files import atomic_write
from srghn.sim.backends import make_evaluator
from srghn.sim.envs import NOMINAL
from srghn.sim.factory import factory_path, load_factory
from srghn.sim.repertoire import Repertoire, save_repertoire
from srghn.sim.run import provenance
from srghn.sim.settings import BuildSettings
from srghn.sim.srghn_emitter import NO_GHN, SRGHNEmitter
from srghn.sim.workers import OFFLINE_LIMITS

FAILED_OBJECTIVE = -1e9
"""The objective of a policy whose evaluation failed (worker died, non-finite physics): it loses every cell to
any real policy, and the repertoire file leaves it out."""
QD_OFFSET = -1000.0
"""Subtracted from every elite's fitness in the QD-score (pyribs' ``qd_score_offset``), so it counts positively."""


def episode_seeds(seed: int, iteration: int, episodes: int) -> np.ndarray:
    """The episode seeds every policy of ``iteration`` plays."""
    return np.random.SeedSequence([seed, iteration]).generate_state(episodes, np.uint32).astype(np.int64)


def make_scheduler(settings: BuildSettings, factory) -> Scheduler:
    """The archive, the emitters and pyribs' scheduler for a new build."""
    config, seed = settings.config, settings.seed
    descriptor = config.descriptor
    archive = GridArchive(solution_dim=settings.profile.policy.num_params, dims=[config.bins] * descriptor.size,
                          ranges=list(zip(descriptor.low, descriptor.high, strict=True)), seed=seed,
                          qd_score_offset=QD_OFFSET, solution_dtype=np.float32,
                          extra_fields={"uid": ((), np.int64), "ret": ((), np.float64), "it": ((), np.int64)})
    x0 = np.asarray(factory.params, dtype=np.float32)
    emitters = []
    for k, name in enumerate(config.emitters):
        emitter_seed = seed * 1000 + k
        if name == "srghn":
            emitters.append(SRGHNEmitter(archive, factory.ghn, factory.ghn_params[None], batch_size=config.batch,
                                         seed=emitter_seed))
        elif name == "gaussian":
            emitters.append(GaussianEmitter(archive, sigma=config.sigma, x0=x0, batch_size=config.batch,
                                            seed=emitter_seed))
        else:
            emitters.append(IsoLineEmitter(archive, iso_sigma=config.sigma, line_sigma=config.line_sigma, x0=x0,
                                           batch_size=config.batch, seed=emitter_seed))
    return Scheduler(archive, emitters)


def _uids(scheduler: Scheduler) -> np.ndarray:
    """The ``uid`` field of the last ask's solutions, emitter by emitter."""
    parts = [e.last_uids if isinstance(e, SRGHNEmitter) else np.full(e.batch_size, NO_GHN, np.int64)
             for e in scheduler.emitters]
    return np.concatenate(parts)


@dataclass
class BuildState:
    scheduler: Scheduler
    iteration: int = 0
    env_steps: int = 0


def _stats(state: BuildState, improved: list[int], iteration_steps: int, wall_s: float) -> dict:
    """One line of ``metrics.jsonl``."""
    archive = state.scheduler.archive
    stats = archive.stats
    returns = archive.data("ret") if not archive.empty else np.zeros(0)
    returns = returns[np.isfinite(returns)]
    return {"iteration": state.iteration, "env_steps": state.env_steps, "iteration_steps": iteration_steps,
            "elites": int(stats.num_elites), "coverage": float(stats.coverage), "qd_score": float(stats.qd_score),
            "best_fitness": None if stats.obj_max is None else float(stats.obj_max),
            "best_return": float(returns.max()) if returns.size else None,
            "improved": improved, "wall_s": round(wall_s, 3)}


def build_repertoire(settings: BuildSettings, on_line: Callable[[dict], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> Path | None:
    """Run (or continue) the build; returns the repertoire file once the budget is spent (None if stopped)."""
    torch.set_num_threads(1)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    factory = load_factory(settings.profile)
    factory_sha = hashlib.sha256(factory_path(settings.profile).read_bytes()).hexdigest()
    identity = settings.identity(factory_sha)
    state = _start_or_resume(settings, out, identity, factory)
    config = settings.config
    evaluator = make_evaluator(settings.profile, settings.backend, settings.workers, behaviour=True,
                               limits=OFFLINE_LIMITS)
    last_save = time.monotonic()
    try:
        while state.env_steps < settings.budget:
            if should_stop is not None and should_stop():
                _checkpoint(out, state)
                return None
            start = time.perf_counter()
            scheduler = state.scheduler
            solutions = scheduler.ask()
            uids = _uids(scheduler)
            result = evaluator.evaluate(solutions, episode_seeds(settings.seed, state.iteration, config.episodes),
                                        NOMINAL, factory.norm)
            objective, measures, returns = _scores(result, config.descriptor.low)
            improved = _improvements(scheduler, objective, measures)
            scheduler.tell(objective, measures, uid=uids, ret=returns,
                           it=np.full(len(objective), state.iteration, dtype=np.int64))
            state.iteration += 1
            state.env_steps += int(result.env_steps)
            line = _stats(state, improved, int(result.env_steps), time.perf_counter() - start)
            with (out / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(line) + "\n")
            if on_line is not None:
                on_line(line)
            if time.monotonic() - last_save >= settings.checkpoint_s:
                _checkpoint(out, state)
                last_save = time.monotonic()
    finally:
        evaluator.close()
    _checkpoint(out, state)
    return finish(settings, out, state, factory, identity)


def _scores(result, low) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    failed = ~np.isfinite(result.fitness)
    objective = np.where(failed, FAILED_OBJECTIVE, result.fitness)
    measures = np.where(failed[:, None], np.asarray(low)[None, :], result.behaviour)
    return objective, measures, np.where(failed, np.nan, result.returns)


def _improvements(scheduler: Scheduler, objective: np.ndarray, measures: np.ndarray) -> list[int]:
    """Per emitter, how many of its solutions fill an empty cell or beat the cell's elite (before the tell)."""
    occupied, elites = scheduler.archive.retrieve(measures)
    better = ~occupied | (objective > np.where(occupied, elites["objective"], -np.inf))
    bounds = np.cumsum([0, *(e.batch_size for e in scheduler.emitters)])
    return [int(better[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _start_or_resume(settings: BuildSettings, out: Path, identity: dict, factory) -> BuildState:
    checkpoint = out / "checkpoint.pkl"
    build_file = out / "build.json"
    if not checkpoint.is_file():
        if (out / "metrics.jsonl").exists():
            raise ConfigError(f"{out} holds metrics but no checkpoint; give a new --out")
        build_file.write_text(json.dumps({"identity": identity, "command": settings.command,
                                          "provenance": provenance()}, indent=2))
        return BuildState(make_scheduler(settings, factory))
    stored = json.loads(build_file.read_text()) if build_file.is_file() else {}
    if stored.get("identity") != identity:
        raise ConfigError(f"{out} holds a build with other settings (see its build.json); give the settings it was "
                          "started with, or a new --out")
    try:
        with checkpoint.open("rb") as f:
            data = pickle.load(f)  # noqa: S301 - the build's own checkpoint (see the module docstring)
        state = BuildState(data["scheduler"], int(data["iteration"]), int(data["env_steps"]))
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{checkpoint}: not a readable build checkpoint ({exc})") from exc
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    lines = lines[:state.iteration]  # iterations after the checkpoint are played again
    (out / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return state


def _checkpoint(out: Path, state: BuildState) -> None:
    atomic_write(out / "checkpoint.pkl", pickle.dumps({"scheduler": state.scheduler, "iteration": state.iteration,
                                                       "env_steps": state.env_steps}))


def finish(settings: BuildSettings, out: Path, state: BuildState, factory, identity: dict) -> Path:
    """Write ``repertoire.npz`` (elites in cell order, failed ones left out) and ``heatmap.png``."""
    archive = state.scheduler.archive
    data = archive.data()
    keep = np.asarray(data["objective"]) > FAILED_OBJECTIVE
    order = np.argsort(np.asarray(data["index"])[keep], kind="stable")
    pick = {k: np.asarray(v)[keep][order] for k, v in data.items()}
    srghn = [e for e in state.scheduler.emitters if isinstance(e, SRGHNEmitter)]
    lineage = (srghn[0].lineage.to_arrays(pick["uid"]) if srghn
               else {"lineage": np.zeros((0, 3), np.int64), "roots": factory.ghn_params[None]})
    stats = archive.stats
    meta = {"robot": settings.profile.name, "identity": identity, "iterations": state.iteration,
            "env_steps": state.env_steps, "emitters": list(settings.config.emitters), "seed": settings.seed,
            "stats": {"elites": int(stats.num_elites), "coverage": float(stats.coverage),
                      "qd_score": float(stats.qd_score), "qd_offset": QD_OFFSET},
            "command": settings.command, "provenance": provenance()}
    repertoire = Repertoire(settings.config, pick["solution"], pick["index"], pick["measures"], pick["objective"],
                            pick["ret"], pick["uid"], pick["it"], lineage["lineage"], lineage["roots"], factory.norm,
                            meta)
    path = out / "repertoire.npz"
    save_repertoire(path, repertoire)
    from srghn.sim.repertoire_plot import plot_heatmap

    plot_heatmap(repertoire, out / "heatmap.png")
    return path


__all__ = ["BuildSettings", "build_repertoire", "episode_seeds", "make_scheduler"]
