"""One evolution run from a profile to files on disk: what ``srghn-ctl evolve`` does, minus the printing.

The output directory receives ``run.json`` (settings, seeds and provenance: versions, git revision, command),
``metrics.jsonl`` (one record per generation, appended as they come so an interrupted run keeps its history),
``population.npz`` (the resumable checkpoint: population, observation statistics, every generator state; written
every ``checkpoint_s`` seconds and at the end), ``champion.npz`` (the best policy with its normalizer and GHN),
``fitness.png`` and ``summary.json`` (final figures and recovery after every switch).

An existing output directory is never overwritten: ``resume`` continues the run checkpointed there, bit for bit
(the generations after the last checkpoint are played again and give the same records).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

from srghn import ConfigError, __version__
from srghn.sim.backends import make_evaluator
from srghn.sim.driver import Driver, _jsonable, identity_differences
from srghn.sim.plots import plot_run
from srghn.sim.records import GenerationRecord, append_records, read_records, summarize, write_records
from srghn.sim.settings import EvolveSettings


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


def run_evolve(settings: EvolveSettings, on_record: Callable[[GenerationRecord], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> dict:
    """Run (or resume) evolution as ``settings`` say, write every output file, return the summary.

    ``should_stop`` is asked between generations (a signal handler's flag): the run then checkpoints and ends,
    ``summary["completed"]`` false, and ``resume`` continues it."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = settings.spec
    run_info = {
        "robot": settings.profile.name, "method": spec.method, "seed": settings.seed,
        "seeds": spec.seeds.to_dict(), "generations": settings.n_generations, "episodes": spec.n_episodes,
        "schedule": [list(s) for s in settings.schedule.switches], "init": settings.init,
        "identity": _jsonable(spec.identity()),
        "evaluator": {"backend": settings.backend,
                      "workers": None if settings.backend == "inprocess" else settings.workers or os.cpu_count()},
        "profile": {**settings.profile.to_dict(), "evolution": spec.evolution.to_dict()},
        "command": settings.command, "cores": os.cpu_count(), "provenance": provenance(),
    }
    records: list[GenerationRecord] = []
    evaluator = make_evaluator(settings.profile, settings.backend, settings.workers, settings.ray_address,
                               limits=settings.limits)
    try:
        if settings.resume:
            stored = json.loads((out / "run.json").read_text())
            if identity_differences(stored.get("identity"), run_info["identity"]) \
                    or stored.get("schedule") != run_info["schedule"]:
                raise ConfigError(f"--resume: {out} holds a run with other settings; resume it with the flags it "
                                  "was started with (see its run.json)")
            driver = Driver.resume(out / "population.npz", spec, evaluator)
            records = read_records(out / "metrics.jsonl")[:driver.generation]
            write_records(out / "metrics.jsonl", records)  # generations after the checkpoint are played again
            run_info["resumed"] = [*stored.get("resumed", []), {"at_generation": driver.generation,
                                                                "command": settings.command}]
            run_info.update(started=stored.get("started") or {k: stored.get(k) for k in ("command", "provenance")},
                            initial=stored.get("initial"))
        else:
            driver = Driver.start(spec, evaluator)
            run_info["initial"] = driver.initial()
        (out / "run.json").write_text(json.dumps(run_info, indent=2))
        _evolve(driver, settings, out, records, on_record, should_stop)
    finally:
        evaluator.close()
    return json.loads((out / "summary.json").read_text())


def _evolve(driver: Driver, settings: EvolveSettings, out: Path, records: list[GenerationRecord],
            on_record: Callable[[GenerationRecord], None] | None, should_stop: Callable[[], bool] | None) -> None:
    try:
        append_records(driver.run(settings.n_generations, settings.schedule, should_stop), out / "metrics.jsonl",
                       records, on_record, lambda: driver.save(out / "population.npz"), settings.checkpoint_s)
        driver.save(out / "population.npz")  # between generations: always a consistent state
    finally:
        if records:
            _write_results(out, settings, driver, records)


def _write_results(out: Path, settings: EvolveSettings, driver: Driver, records: list[GenerationRecord]) -> None:
    profile = settings.profile
    champion = driver.save_champion(out / "champion.npz")
    last = records[-1]
    plot_run(records, out / "fitness.png", title=f"{profile.name}: SR-GHN, seed {settings.seed}",
             target=profile.solved_fitness)
    summary = {
        "robot": profile.name, "seed": settings.seed, "seeds": driver.spec.seeds.to_dict(), "out": str(out),
        **summarize(records, target=profile.solved_fitness),
        "champion": {"id": champion.id, "parent_id": champion.parent_id, "fitness": champion.fitness,
                     "regime": last.regime, "file": str(out / "champion.npz")},
        "normalized": champion.norm is not None,
        "mutation_rate_final": last.mutation_rate_mean,
        "completed": len(records) >= settings.n_generations,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
